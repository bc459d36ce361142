"""Prometheus metrics of a supervisor, served by the master on ``metrics_listen``.

The master is single-threaded (it forks workers, so it runs no threads), so the
endpoint is a tiny non-blocking HTTP/1.0 server driven by the master's own poll
loop: :meth:`MetricsServer.read_fds` / :meth:`MetricsServer.write_fds` go into its
``poll`` and :meth:`MetricsServer.handle` serves what is ready.  The exposition
comes from prometheus-client (``generate_latest``) over a collector that reads the
master's view of its workers at scrape time:

* ``procslice_workers`` serving workers;
* ``procslice_worker_restarts_total{reason}``, reason max_request, memory, crash,
  reload (and scale for SIGTTOU);
* ``procslice_worker_rss_bytes{worker}``, ``procslice_loop_lag_seconds{worker}``
  (the worst lag in the last heartbeat interval);
* ``procslice_requests_in_flight`` and ``procslice_requests_total`` (all workers,
  including the retired ones);
* per HTTP request (interface asgi, httptools protocol), named and labelled so that
  any serving model can export the same series:
  ``procslice_http_requests_total{code="2xx",method="GET"}`` (code: the status
  class 1xx..5xx; method: GET HEAD POST PUT PATCH DELETE OPTIONS, anything else
  "other"), ``procslice_http_request_duration_seconds`` (a histogram over
  :data:`DURATION_BUCKETS`, fixed: from the app being called for the request, once
  its head is parsed, to its response's last write), ``procslice_http_request_bytes_total``
  and ``procslice_http_response_bytes_total`` (body bytes received and sent; a chunked
  response's chunk size lines count too).

Workers count requests in a :class:`RequestStats` (plain ints, no prometheus-client
object on the request path) and send the cumulative counts in every heartbeat; the
master sums live workers and what retired workers last sent (:class:`HttpTotals`), so
the counters never go backwards when a worker is replaced.  A request whose
connection was lost before its response completed, or whose app failed after the
response started, is not counted in these series.  ``request_metrics = false`` turns
the counting off (the series stay at zero).  gunicorn services export the same
``procslice_http_*`` series through prometheus_client's multiprocess mode
(:mod:`procslice.gunicorn_metrics`).

With ``statsd`` set, the same figures go to StatsD once a second
(:func:`statsd_requests` in each worker, with a sample of the durations kept by
:class:`SampledRequestStats`; :func:`statsd_process` in the master), named after the
series above: ``procslice_http_requests_total{code,method}`` is
``procslice.http_requests.<code>.<method>`` (a counter of the increase since the last
send), or with DogStatsD tags ``procslice.http_requests|#code:2xx,method:GET``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from procslice.sockets import parse_address
from procslice.statsd import Reservoir, StatsdClient

__all__ = [
    "DURATION_BUCKETS",
    "HTTP_CODES",
    "HTTP_METHODS",
    "HttpTotals",
    "MetricsServer",
    "RequestStats",
    "SampledRequestStats",
    "Snapshot",
    "WorkerSample",
    "registry_for",
    "statsd_process",
    "statsd_requests",
]

log = logging.getLogger("procslice.metrics")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT = 5.0
MAX_REQUEST = 16384

#: ``method`` label values; any other method counts as "other" (bounded labels).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")
#: ``code`` label values: the status class.
HTTP_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: Upper bounds (seconds) of procslice_http_request_duration_seconds, +Inf implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHOD_INDEX = {method: i for i, method in enumerate(HTTP_METHODS[:-1])}
_OTHER = len(HTTP_METHODS) - 1
_CODES = len(HTTP_CODES)


class RequestStats:
    """A worker's cumulative per-request counts: plain ints, cheap to update.

    ``requests[method * len(HTTP_CODES) + code]`` counts answered requests;
    ``buckets[i]`` the durations in (DURATION_BUCKETS[i-1], DURATION_BUCKETS[i]]
    (not cumulative; the last one is above the largest bound).
    """

    __slots__ = ("buckets", "duration_sum", "request_bytes", "requests", "response_bytes")

    def __init__(self) -> None:
        self.requests = [0] * (len(HTTP_METHODS) * _CODES)
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.request_bytes = 0
        self.response_bytes = 0

    def record(self, method: str, code: int, sent: int, seconds: float) -> None:
        """Count one answered request; ``code`` indexes HTTP_CODES (0: 1xx .. 4: 5xx)."""
        if not 0 <= code < _CODES:
            code = _CODES - 1  # not a valid status: counted as a server error
        self.requests[_METHOD_INDEX.get(method, _OTHER) * _CODES + code] += 1
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.response_bytes += sent

    def beat(self) -> dict[str, object]:
        """The heartbeat's ``http`` field."""
        return {
            "requests": self.requests,
            "buckets": self.buckets,
            "sum": round(self.duration_sum, 6),
            "in": self.request_bytes,
            "out": self.response_bytes,
        }


class SampledRequestStats(RequestStats):
    """:class:`RequestStats` that also keeps a sample of the durations (in ms) for
    StatsD, bounded per flush interval (:class:`procslice.statsd.Reservoir`)."""

    __slots__ = ("timings",)

    def __init__(self) -> None:
        super().__init__()
        self.timings = Reservoir()

    def record(self, method: str, code: int, sent: int, seconds: float) -> None:
        """Count one answered request and offer its duration to the sample."""
        RequestStats.record(self, method, code, sent, seconds)
        self.timings.add(seconds * 1000.0)


@dataclass
class HttpTotals:
    """Per-request counts summed over workers (the master's side of RequestStats)."""

    requests: list[int] = field(default_factory=lambda: [0] * (len(HTTP_METHODS) * _CODES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0

    @classmethod
    def from_beat(cls, beat: object) -> HttpTotals | None:
        """A heartbeat's ``http`` field, None if it is missing or malformed."""
        if not isinstance(beat, Mapping):
            return None
        totals = cls()
        requests, buckets = beat.get("requests"), beat.get("buckets")
        duration_sum, received, sent = beat.get("sum"), beat.get("in"), beat.get("out")
        if (
            not isinstance(requests, list)
            or len(requests) != len(totals.requests)
            or not isinstance(buckets, list)
            or len(buckets) != len(totals.buckets)
            or not all(isinstance(v, int) for v in (*requests, *buckets))
            or not isinstance(received, int)
            or not isinstance(sent, int)
            or not isinstance(duration_sum, int | float)
        ):
            return None
        totals.requests = list(requests)
        totals.buckets = list(buckets)
        totals.duration_sum = float(duration_sum)
        totals.request_bytes = received
        totals.response_bytes = sent
        return totals

    def add(self, other: HttpTotals) -> None:
        """Add ``other`` in place."""
        self.requests = [a + b for a, b in zip(self.requests, other.requests, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.duration_sum += other.duration_sum
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes


@dataclass
class WorkerSample:
    """One worker as the master last saw it."""

    slot: int
    pid: int
    rss: int
    lag: float
    inflight: int


@dataclass
class Snapshot:
    """What the collector exposes."""

    workers: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    samples: list[WorkerSample] = field(default_factory=list)
    requests_total: int = 0
    task_workers: int = 0
    http: HttpTotals = field(default_factory=HttpTotals)


class SupervisorCollector(Collector):
    """Turns a :class:`Snapshot` into metric families at scrape time."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families."""
        snap = self.snapshot()
        yield GaugeMetricFamily("procslice_workers", "Serving workers.", value=snap.workers)
        yield GaugeMetricFamily(
            "procslice_task_workers", "Running task workers.", value=snap.task_workers
        )
        restarts = CounterMetricFamily(
            "procslice_worker_restarts",
            "Workers replaced, by reason.",
            labels=["reason"],
        )
        for reason in ("max_request", "memory", "crash", "reload"):
            restarts.add_metric([reason], snap.restarts.get(reason, 0))
        for reason, count in sorted(snap.restarts.items()):
            if reason not in ("max_request", "memory", "crash", "reload"):
                restarts.add_metric([reason], count)
        yield restarts
        rss = GaugeMetricFamily("procslice_worker_rss_bytes", "Worker RSS.", labels=["worker"])
        lag = GaugeMetricFamily(
            "procslice_loop_lag_seconds", "Worst event-loop lag last second.", labels=["worker"]
        )
        for sample in sorted(snap.samples, key=lambda s: (s.slot, s.pid)):
            rss.add_metric([str(sample.slot)], sample.rss)
            lag.add_metric([str(sample.slot)], sample.lag)
        yield rss
        yield lag
        yield GaugeMetricFamily(
            "procslice_requests_in_flight",
            "Requests being served.",
            value=sum(s.inflight for s in snap.samples),
        )
        yield CounterMetricFamily(
            "procslice_requests", "Requests answered by all workers.", value=snap.requests_total
        )
        yield from http_families(snap.http)


def http_families(http: HttpTotals) -> Iterator[Metric]:
    """The per-request metric families (also usable by other serving models)."""
    requests = CounterMetricFamily(
        "procslice_http_requests",
        "HTTP requests answered, by status class and method.",
        labels=["code", "method"],
    )
    for i, count in enumerate(http.requests):
        if count:
            method, code = divmod(i, _CODES)
            requests.add_metric([HTTP_CODES[code], HTTP_METHODS[method]], count)
    yield requests
    cumulative, buckets = 0, []
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), http.buckets, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
    yield HistogramMetricFamily(
        "procslice_http_request_duration_seconds",
        "Time from the app called for a request to its response's last write.",
        buckets=buckets,
        sum_value=http.duration_sum,
    )
    yield CounterMetricFamily(
        "procslice_http_request_bytes",
        "HTTP request body bytes received.",
        value=http.request_bytes,
    )
    yield CounterMetricFamily(
        "procslice_http_response_bytes",
        "HTTP response body bytes sent.",
        value=http.response_bytes,
    )


# ----------------------------------------------------------------------------- StatsD
# The same figures, named after the Prometheus series: "procslice_" becomes
# "procslice.", "_total" is dropped, and the labels follow as name parts (StatsD) or
# tags (DogStatsD). Counters are sent as their increase since the last flush.


def statsd_requests(client: StatsdClient, stats: RequestStats, last: HttpTotals) -> HttpTotals:
    """Queue a worker's per-request figures since ``last`` (what the previous call
    returned); returns the totals to pass next time."""
    for i, (now, before) in enumerate(zip(stats.requests, last.requests, strict=True)):
        if now != before:
            method, code = divmod(i, _CODES)
            labels = (("code", HTTP_CODES[code]), ("method", HTTP_METHODS[method]))
            client.count("procslice.http_requests", now - before, labels)
    client.count("procslice.http_request_bytes", stats.request_bytes - last.request_bytes)
    client.count("procslice.http_response_bytes", stats.response_bytes - last.response_bytes)
    if isinstance(stats, SampledRequestStats):
        values, rate = stats.timings.take()
        client.timings("procslice.http_request_duration", values, rate)
    return HttpTotals(
        requests=list(stats.requests),
        buckets=list(stats.buckets),
        duration_sum=stats.duration_sum,
        request_bytes=stats.request_bytes,
        response_bytes=stats.response_bytes,
    )


def statsd_process(client: StatsdClient, snap: Snapshot, last: Snapshot | None) -> None:
    """Queue a master's process figures: gauges now, counters since ``last``."""
    client.gauge("procslice.workers", snap.workers)
    client.gauge("procslice.task_workers", snap.task_workers)
    client.gauge("procslice.requests_in_flight", sum(s.inflight for s in snap.samples))
    for sample in sorted(snap.samples, key=lambda s: (s.slot, s.pid)):
        worker = (("worker", str(sample.slot)),)
        client.gauge("procslice.worker_rss_bytes", sample.rss, worker)
        client.gauge("procslice.loop_lag_seconds", sample.lag, worker)
    before = last.restarts if last is not None else {}
    for reason, count in sorted(snap.restarts.items()):
        client.count(
            "procslice.worker_restarts", count - before.get(reason, 0), (("reason", reason),)
        )
    served = snap.requests_total - (last.requests_total if last is not None else 0)
    client.count("procslice.requests", max(0, served))


def registry_for(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry holding only the supervisor's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(snapshot))
    return registry


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = b""
        self.started = time.monotonic()


class MetricsServer:
    """A non-blocking scrape endpoint driven by the master's poll loop."""

    def __init__(self, address: str, render: Callable[[], bytes]) -> None:
        family, sockaddr = parse_address(address)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(sockaddr)
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"metrics_listen {address}: {exc.strerror}") from exc
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.address = address
        self.render = render
        self.clients: dict[int, _Client] = {}

    def fds(self) -> list[int]:
        """Every descriptor the server owns (closed in forked children)."""
        return [self.sock.fileno(), *self.clients]

    def read_fds(self) -> list[int]:
        """Descriptors to watch for reading."""
        return [self.sock.fileno()] + [fd for fd, c in self.clients.items() if not c.outbox]

    def write_fds(self) -> list[int]:
        """Descriptors with a response to send."""
        return [fd for fd, c in self.clients.items() if c.outbox]

    def handle(self, fd: int) -> None:
        """Serve whatever is ready on ``fd``."""
        if fd == self.sock.fileno():
            self._accept()
            return
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            if client.outbox:
                sent = client.sock.send(client.outbox)
                client.outbox = client.outbox[sent:]
                if not client.outbox:
                    self._close(fd)
                return
            data = client.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._close(fd)
            return
        if not data:
            self._close(fd)
            return
        client.inbox += data
        if b"\r\n\r\n" in client.inbox or b"\n\n" in client.inbox:
            client.outbox = self._respond(bytes(client.inbox))
        elif len(client.inbox) > MAX_REQUEST:
            self._close(fd)

    def expire(self) -> None:
        """Drop clients that did not finish in CLIENT_TIMEOUT."""
        now = time.monotonic()
        for fd, client in list(self.clients.items()):
            if now - client.started > CLIENT_TIMEOUT:
                self._close(fd)

    def close(self) -> None:
        """Close the listener and every client."""
        for fd in list(self.clients):
            self._close(fd)
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("metrics accept failed: %s", exc)
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = _Client(conn)

    def _respond(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].split()
        path = line[1].split(b"?")[0] if len(line) >= 2 else b""
        if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
            status, body, ctype = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
        elif path not in (b"/", b"/metrics"):
            status, body, ctype = b"404 Not Found", b"see /metrics\n", b"text/plain"
        else:
            try:
                status, body, ctype = b"200 OK", self.render(), CONTENT_TYPE
            except Exception:
                log.exception("rendering metrics failed")
                status, body, ctype = b"500 Internal Server Error", b"error\n", b"text/plain"
        head = (
            b"HTTP/1.0 "
            + status
            + b"\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        return head + (body if line and line[0] != b"HEAD" else b"")

    def _close(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            with contextlib.suppress(OSError):
                client.sock.close()


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    data: bytes = generate_latest(registry)
    return data
