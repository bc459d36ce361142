"""StatsD and DogStatsD from real servers on loopback, read by a real UDP listener.

aio and swoole send the figures from the runtime (procslice.statsd: the workers the
request figures, the master the process figures, once a second); gunicorn sends them
with its own statsd logger (statsd_host in the rendered gunicorn.conf.py), and the
uvicorn worker class adds the request figures gunicorn's logger sees only for its own
HTTP workers. Every test checks names, types and values as a StatsD server reads them.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import StartSupervisor, Supervisor, free_port, wait_until

from procslice.statsd import MAX_DATAGRAM, Reservoir, StatsdClient

from .test_gunicorn_metrics import start_gunicorn  # noqa: F401 (a fixture these tests use)
from .test_http_metrics import METRICS_APP


@dataclass(frozen=True)
class Line:
    """One StatsD line: name:value|type[|@rate][|#tags]."""

    name: str
    value: float
    kind: str
    rate: float
    tags: tuple[str, ...]


def parse(line: str) -> Line:
    name, _, rest = line.partition(":")
    value, kind, *extra = rest.split("|")
    rate, tags = 1.0, ()
    for part in extra:
        if part.startswith("@"):
            rate = float(part[1:])
        elif part.startswith("#"):
            tags = tuple(part[1:].split(","))
        else:
            raise AssertionError(f"not a StatsD line: {line!r}")
    return Line(name, float(value), kind, rate, tags)


class Listener:
    """A StatsD server stand-in: every datagram sent to 127.0.0.1:<port>, kept."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.datagrams: list[bytes] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self.receive, daemon=True)
        self.thread.start()

    def receive(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.datagrams.append(data)

    def lines(self) -> list[Line]:
        with self.lock:
            datagrams = list(self.datagrams)
        return [parse(line) for data in datagrams for line in data.decode().split("\n")]

    def named(self, name: str, tags: tuple[str, ...] | None = None) -> list[Line]:
        return [
            line
            for line in self.lines()
            if line.name == name and (tags is None or set(tags) <= set(line.tags))
        ]

    def total(self, name: str, tags: tuple[str, ...] | None = None) -> float:
        """A counter's sum over every flush (each line scaled by its sample rate)."""
        lines = self.named(name, tags)
        assert all(line.kind == "c" for line in lines), lines
        return sum(line.value / line.rate for line in lines)

    def wait_total(self, name: str, expected: float, tags: tuple[str, ...] | None = None) -> None:
        try:
            wait_until(
                lambda: self.total(name, tags) >= expected, 15, f"{name} to reach {expected}"
            )
        except AssertionError:
            raise AssertionError(f"{name}: {self.named(name, tags)}") from None
        assert self.total(name, tags) == expected, self.named(name, tags)

    def close(self) -> None:
        self.running = False
        self.sock.close()
        self.thread.join(timeout=2)


@pytest.fixture
def statsd() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def metrics_app(tmp_path: Path) -> str:
    (tmp_path / "metricsapp.py").write_text(METRICS_APP)
    return "metricsapp:app"


def request(port: int, method: str, path: str, body: bytes = b"") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def send_mix(port: int) -> int:
    """200 x 4 (2 of them slow), 404 x 3, 500 x 2, one POST: the number sent."""
    statuses = [
        *(request(port, "GET", "/") for _ in range(2)),
        *(request(port, "GET", "/slow") for _ in range(2)),
        *(request(port, "GET", "/missing") for _ in range(3)),
        *(request(port, "GET", "/fail") for _ in range(2)),
        request(port, "POST", "/echo", b"x" * 1000),
    ]
    assert statuses == [200] * 4 + [404] * 3 + [500] * 2 + [200], statuses
    return len(statuses)


# ------------------------------------------------------------------------ aio, swoole


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_runtime_sends_request_and_process_figures(
    start_supervisor: StartSupervisor, statsd: Listener, metrics_app: str, model: str
) -> None:
    sup = start_supervisor(
        model,
        "--workers",
        "2",
        "--statsd",
        statsd.address,
        "--statsd-prefix",
        "api",
        app=metrics_app,
    )
    total = 1 + send_mix(sup.port)  # wait_serving sent one GET /

    statsd.wait_total("api.procslice.http_requests.2xx.GET", 1 + 4)
    statsd.wait_total("api.procslice.http_requests.4xx.GET", 3)
    statsd.wait_total("api.procslice.http_requests.5xx.GET", 2)
    statsd.wait_total("api.procslice.http_requests.2xx.POST", 1)
    statsd.wait_total("api.procslice.http_request_bytes", 1000)
    sent = 5 * 5 + 12 * 3 + len("Internal Server Error") * 2 + 1000
    statsd.wait_total("api.procslice.http_response_bytes", sent)
    statsd.wait_total("api.procslice.requests", total)  # the master's count

    timings = statsd.named("api.procslice.http_request_duration")
    assert {line.kind for line in timings} == {"ms"}
    assert len(timings) == total and all(line.rate == 1.0 for line in timings)
    slow = sorted(line.value for line in timings)[-2:]
    assert all(250 <= value < 1000 for value in slow), slow  # the two /slow, in ms

    wait_until(lambda: statsd.named("api.procslice.workers"), 10, "a workers gauge")
    assert statsd.named("api.procslice.workers")[-1] == Line(
        "api.procslice.workers", 2, "g", 1.0, ()
    )
    rss = statsd.named("api.procslice.worker_rss_bytes.1")
    assert rss and rss[-1].kind == "g" and rss[-1].value > 1024**2
    assert statsd.named("api.procslice.requests_in_flight")[-1].value == 0
    assert {line.kind for line in statsd.named("api.procslice.loop_lag_seconds.0")} == {"g"}


def test_dogstatsd_tags_carry_the_labels(
    start_supervisor: StartSupervisor, statsd: Listener, metrics_app: str
) -> None:
    sup = start_supervisor(
        "aio",
        "--workers",
        "1",
        "--statsd",
        statsd.address,
        "--dogstatsd-tags",
        "service:api",
        app=metrics_app,
    )
    assert request(sup.port, "GET", "/missing") == 404
    statsd.wait_total("procslice.http_requests", 1, ("code:4xx", "method:GET"))
    line = statsd.named("procslice.http_requests", ("code:4xx",))[0]
    assert line.tags == ("service:api", "code:4xx", "method:GET")
    statsd.wait_total("procslice.http_requests", 1, ("code:2xx", "method:GET"))
    workers = statsd.named("procslice.workers")
    assert workers and workers[-1].tags == ("service:api",) and workers[-1].value == 1
    rss = statsd.named("procslice.worker_rss_bytes", ("worker:0",))
    assert rss and rss[-1].kind == "g"


def test_a_statsd_server_that_is_not_there_costs_no_request(
    start_supervisor: StartSupervisor, metrics_app: str
) -> None:
    """Nothing listens on the port: the datagrams are dropped, requests are answered."""
    sup: Supervisor = start_supervisor(
        "aio", "--workers", "1", "--statsd", f"127.0.0.1:{free_port()}", app=metrics_app
    )
    for _ in range(3):
        for _ in range(20):
            assert request(sup.port, "GET", "/") == 200
        wait_until(lambda: "dropping figures" in sup.log(), 5, "a dropped flush")
    assert sup.proc.poll() is None


# ------------------------------------------------------------------------ gunicorn


@pytest.mark.parametrize("worker_class", ["sync", "uvicorn"])
def test_gunicorn_sends_its_own_statsd_figures(
    start_gunicorn: Any,  # noqa: F811 (the fixture imported above)
    statsd: Listener,
    worker_class: str,
) -> None:
    """gunicorn's statsd_host: gunicorn.requests, .request.status.<code>,
    .request.duration, .workers; the uvicorn worker sends the request figures itself."""
    server = start_gunicorn(worker_class, statsd=statsd.address)
    total = 1 + send_mix(server.port)

    statsd.wait_total("api.gunicorn.requests", total)
    statsd.wait_total("api.gunicorn.request.status.200", 1 + 4 + 1)
    statsd.wait_total("api.gunicorn.request.status.404", 3)
    statsd.wait_total("api.gunicorn.request.status.500", 2)
    timings = statsd.named("api.gunicorn.request.duration")
    assert {line.kind for line in timings} == {"ms"}
    assert len(timings) == total
    slow = sorted(line.value for line in timings)[-2:]
    assert all(250 <= value < 1000 for value in slow), slow
    workers = statsd.named("api.gunicorn.workers")
    assert workers and workers[-1].kind == "g" and workers[-1].value == 2


def test_gunicorn_statsd_tags(start_gunicorn: Any, statsd: Listener) -> None:  # noqa: F811
    server = start_gunicorn("uvicorn", statsd=statsd.address, statsd_tags=True)
    assert request(server.port, "GET", "/missing") == 404
    statsd.wait_total("gunicorn.request.status.404", 1)  # no prefix: the service is a tag
    assert statsd.named("gunicorn.request.status.404")[0].tags == ("service:api",)
    assert statsd.named("gunicorn.workers")[-1].tags == ("service:api",)


# ------------------------------------------------------------------------ the client


def test_client_batches_lines_into_datagrams_under_the_size_limit(statsd: Listener) -> None:
    client = StatsdClient(statsd.address, "api")
    for i in range(300):
        client.count("procslice.http_requests", i + 1, (("code", "2xx"), ("method", "GET")))
    client.gauge("procslice.workers", 4)
    assert client.flush() >= 2
    wait_until(lambda: len(statsd.lines()) == 301, 5, "301 lines")
    assert all(len(data) <= MAX_DATAGRAM for data in statsd.datagrams)
    assert statsd.total("api.procslice.http_requests.2xx.GET") == sum(range(1, 301))
    assert statsd.named("api.procslice.workers") == [Line("api.procslice.workers", 4, "g", 1, ())]
    client.close()


def test_timings_beyond_the_reservoir_are_sampled_with_their_rate(statsd: Listener) -> None:
    reservoir = Reservoir(size=50)
    for i in range(1000):
        reservoir.add(float(i))
    values, rate = reservoir.take()
    assert len(values) == 50 and rate == 0.05
    assert reservoir.take() == ([], 1.0)
    client = StatsdClient(statsd.address, "", "service:api")
    client.timings("procslice.http_request_duration", values, rate)
    client.flush()
    wait_until(lambda: len(statsd.lines()) == 50, 5, "50 lines")
    lines = statsd.lines()
    assert {(line.kind, line.rate, line.tags) for line in lines} == {("ms", 0.05, ("service:api",))}
    assert sum(1 / line.rate for line in lines) == pytest.approx(1000)
    client.close()
