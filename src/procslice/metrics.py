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
  including the retired ones).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from procslice.sockets import parse_address

__all__ = ["MetricsServer", "Snapshot", "WorkerSample", "registry_for"]

log = logging.getLogger("procslice.metrics")
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
CLIENT_TIMEOUT = 5.0
MAX_REQUEST = 16384


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
