"""Per-request metrics of real gunicorn services on loopback: prometheus_client's
multiprocess mode, wired by the rendered gunicorn.conf.py (procslice.gunicorn_metrics).

Each test renders templates/gunicorn/.../gunicorn.conf.py.j2 from a service normalised
by the filter plugin (as the procslice_gunicorn role does), starts ``python -m
gunicorn --config`` with it, sends real requests and reads the arbiter's /metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from conftest import REPO, child_env, children_of, free_port, wait_until
from filter_plugin import ps

from .test_http_metrics import METRICS_APP

# The WSGI twin of test_http_metrics.METRICS_APP (same routes, same answers).
WSGI_APP = """
import time


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    path = environ["PATH_INFO"]
    if path == "/fail":
        raise RuntimeError("fails on purpose")
    if path == "/slow":
        time.sleep(0.3)
    status, answer = {
        "/missing": ("404 Not Found", b"no such page"),
        "/moved": ("301 Moved Permanently", b""),
        "/echo": ("200 OK", body),
    }.get(path, ("200 OK", b"hello"))
    headers = [("Content-Length", str(len(answer)))]
    if status.startswith("301"):
        headers.append(("Location", "/"))
    start_response(status, headers)
    return [answer]
"""

WORKER_CLASSES = {
    "sync": "sync",
    "gthread": "gthread",
    "uvicorn": "procslice.gunicorn_worker.UvicornWorker",
}


def render_config(service: dict[str, Any]) -> str:
    """gunicorn.conf.py as the procslice_gunicorn role renders it."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(REPO / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    env.filters.update(to_json=json.dumps, comment=lambda t: f"#\n# {t}\n#", bool=bool)
    return env.get_template("gunicorn/etc/procslice/SERVICE/gunicorn.conf.py.j2").render(
        service=service,
        ansible_managed="Ansible managed",
        __procslice_gunicorn_estimate=64 * 1024**2,
        __procslice_gunicorn_worker_classes=WORKER_CLASSES,
    )


class Gunicorn:
    """A running gunicorn started from a rendered config."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        metrics_port: int | None,
        directory: Path,
        log: Path,
    ) -> None:
        self.proc = proc
        self.port = port
        self.metrics_port = metrics_port
        self.directory = directory
        self.log = log

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body or None)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def samples(self) -> dict[str, float]:
        """Every sample of the arbiter's /metrics: line name -> value."""
        assert self.metrics_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200
            text = response.read().decode()
        finally:
            conn.close()
        found = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
        return found

    def workers(self) -> list[int]:
        return children_of(self.proc.pid)

    def files(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*.db"))


@pytest.fixture
def start_gunicorn(tmp_path: Path) -> Iterator[Any]:
    started: list[Gunicorn] = []
    (tmp_path / "wsgiapp.py").write_text(WSGI_APP)
    (tmp_path / "metricsapp.py").write_text(METRICS_APP)

    def start(worker_class: str, workers: int = 2, **extra: Any) -> Gunicorn:
        port = free_port()
        metrics_port = free_port() if "metrics_listen" not in extra else None
        data = {
            "name": "api",
            "model": "gunicorn",
            "package": {"source": "examples/hello_wsgi"},
            "app": "metricsapp:app" if worker_class == "uvicorn" else "wsgiapp:app",
            "interface": "asgi" if worker_class == "uvicorn" else "wsgi",
            "worker_class": worker_class,
            "listen": [f"127.0.0.1:{port}"],
            "workers": workers,
            **({"metrics_listen": f"127.0.0.1:{metrics_port}"} if metrics_port else {}),
            **extra,
        }
        service = ps.procslice_normalize_services([data])[0]
        config = tmp_path / f"gunicorn-{len(started)}.conf.py"
        config.write_text(render_config(service))
        directory = tmp_path / f"prometheus-{len(started)}"  # systemd's RuntimeDirectory=
        log = tmp_path / f"gunicorn-{len(started)}.log"
        env = child_env(RUNTIME_DIRECTORY=str(directory))
        env["PYTHONPATH"] += os.pathsep + str(tmp_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Gunicorn(proc, port, metrics_port, directory, log)
        started.append(server)

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gunicorn exited {proc.returncode}:\n{log.read_text()}")
            if len(server.workers()) != workers:
                return False
            try:
                return server.request("GET", "/")[0] == 200
            except OSError:
                return False

        wait_until(serving, 30, f"gunicorn ({worker_class}) to serve")
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait(timeout=5)


def wait_for_count(server: Gunicorn, expected: int) -> dict[str, float]:
    """The samples once the duration histogram counts ``expected`` requests."""
    seen: dict[str, float] = {}

    def counted() -> bool:
        seen.clear()
        seen.update(server.samples())
        return seen.get("procslice_http_request_duration_seconds_count") == expected

    try:
        wait_until(counted, 10, f"{expected} requests in the histogram")
    except AssertionError:
        raise AssertionError(f"metrics never counted {expected} requests: {seen}") from None
    return seen


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "uvicorn"])
def test_gunicorn_counts_each_request_by_status_class_method_duration_and_bytes(
    start_gunicorn: Any, worker_class: str
) -> None:
    """The series the aio and swoole runtimes export, with the same names and labels."""
    server = start_gunicorn(worker_class)
    post_body = b"x" * 1000
    answers = [
        *(server.request("GET", "/") for _ in range(5)),  # serving() made one more
        *(server.request("GET", "/missing") for _ in range(3)),
        server.request("GET", "/moved"),
        *(server.request("GET", "/fail") for _ in range(2)),
        server.request("POST", "/echo", post_body),
        server.request("PUT", "/echo", b"abc"),
        server.request("PROPFIND", "/"),  # not in the method list: "other"
        server.request("HEAD", "/"),
        *(server.request("GET", "/slow") for _ in range(2)),
    ]
    statuses = [status for status, _ in answers]
    assert statuses == [200] * 5 + [404] * 3 + [301] + [500] * 2 + [200] * 6, statuses
    assert answers[11] == (200, post_body)
    total = 1 + len(answers)
    seen = wait_for_count(server, total)

    assert {k: v for k, v in seen.items() if k.startswith("procslice_http_requests_total")} == {
        'procslice_http_requests_total{code="2xx",method="GET"}': 1 + 5 + 2,
        'procslice_http_requests_total{code="3xx",method="GET"}': 1,
        'procslice_http_requests_total{code="4xx",method="GET"}': 3,
        'procslice_http_requests_total{code="5xx",method="GET"}': 2,
        'procslice_http_requests_total{code="2xx",method="POST"}': 1,
        'procslice_http_requests_total{code="2xx",method="PUT"}': 1,
        'procslice_http_requests_total{code="2xx",method="other"}': 1,
        'procslice_http_requests_total{code="2xx",method="HEAD"}': 1,
    }
    assert seen["procslice_http_request_bytes_total"] == 1000 + 3
    # "hello" x 9 (HEAD sends no body), "no such page" x 3, the two echoes; the 500
    # pages: uvicorn's "Internal Server Error", gunicorn's own error page uncounted
    error_page = len("Internal Server Error") if worker_class == "uvicorn" else 0
    sent = 5 * 9 + 12 * 3 + 1000 + 3 + error_page * 2
    assert seen["procslice_http_response_bytes_total"] == sent
    bucket = "procslice_http_request_duration_seconds_bucket"
    assert seen[f'{bucket}{{le="0.25"}}'] == total - 2  # all but the two slow ones
    assert seen[f'{bucket}{{le="0.5"}}'] == total
    assert seen[f'{bucket}{{le="+Inf"}}'] == total
    assert 0.6 <= seen["procslice_http_request_duration_seconds_sum"] < 0.6 + 0.25 * total
    assert seen["procslice_requests_in_flight"] == 0
    assert seen["procslice_workers"] == 2


@pytest.mark.parametrize("worker_class", ["sync", "uvicorn"])
def test_a_killed_workers_files_are_folded_into_the_retired_ones(
    start_gunicorn: Any, worker_class: str
) -> None:
    """child_exit leaves no file of a dead worker, and the counters keep its counts."""
    server = start_gunicorn(worker_class)
    for _ in range(20):
        assert server.request("GET", "/missing")[0] == 404
    before = wait_for_count(server, 21)
    counted = [pid for pid in server.workers() if f"counter_{pid}.db" in server.files()]
    assert counted, server.files()
    victim = counted[0]
    assert f"gauge_livesum_{victim}.db" in server.files(), server.files()

    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in server.workers() and len(server.workers()) == 2,
        20,
        "gunicorn to replace the killed worker",
    )
    wait_until(
        lambda: not [name for name in server.files() if f"_{victim}.db" in name],
        10,
        f"the files of pid {victim} to go",
    )
    assert {"counter_retired.db", "histogram_retired.db"} <= set(server.files())
    after = server.samples()
    for key in (
        'procslice_http_requests_total{code="4xx",method="GET"}',
        "procslice_http_request_duration_seconds_count",
        "procslice_http_response_bytes_total",
    ):
        assert after[key] == before[key], key  # nothing lost, nothing counted twice
    assert after["procslice_requests_in_flight"] == 0

    assert server.request("GET", "/missing")[0] == 404
    seen = wait_for_count(server, 22)
    assert seen['procslice_http_requests_total{code="4xx",method="GET"}'] == 21
    # one file per type for the retired workers, the rest belongs to live workers
    live = set(server.workers())
    for name in server.files():
        owner = name.rsplit("_", 1)[1][: -len(".db")]
        assert owner == "retired" or int(owner) in live, (name, live)


@pytest.mark.parametrize("worker_class", ["sync", "uvicorn"])
def test_request_metrics_false_serves_no_http_series(
    start_gunicorn: Any, worker_class: str
) -> None:
    """request_metrics: false counts nothing per request; the endpoint still answers."""
    server = start_gunicorn(worker_class, request_metrics=False)
    assert server.request("GET", "/missing")[0] == 404
    time.sleep(1.5)  # the uvicorn worker would have written its counts by now
    seen = server.samples()
    assert seen["procslice_workers"] == 2
    assert not [k for k in seen if k.startswith(("procslice_http_", "procslice_requests"))]
    assert server.files() == []


def test_the_arbiter_halts_when_metrics_listen_is_taken(tmp_path: Path) -> None:
    """A metrics port in use stops gunicorn with exit code 3, as it stops aio/swoole."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        service = ps.procslice_normalize_services(
            [
                {
                    "name": "api",
                    "model": "gunicorn",
                    "package": {"source": "examples/hello_wsgi"},
                    "app": "hello_wsgi:app",
                    "listen": [f"127.0.0.1:{free_port()}"],
                    "workers": 1,
                    "metrics_listen": f"127.0.0.1:{busy}",
                }
            ]
        )[0]
        config = tmp_path / "gunicorn.conf.py"
        config.write_text(render_config(service))
        env = child_env(RUNTIME_DIRECTORY=str(tmp_path / "prometheus"))
        env["PYTHONPATH"] += os.pathsep + str(REPO / "examples" / "hello_wsgi")
        proc = subprocess.run(
            [sys.executable, "-m", "gunicorn", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 3, proc.stderr
    assert f"metrics_listen 127.0.0.1:{busy}: Address already in use" in proc.stderr
