"""gunicorn's uvicorn worker, draining keep-alive connections the procslice way, and
counting its requests.

uvicorn's shutdown (a gunicorn reload, max_requests, a stop) closes every idle
keep-alive connection at once: a request the client was sending on it meets a closed
connection (a read error, or a retry if the client makes one). This worker keeps such
a connection open instead and answers its next request with ``Connection: close``
(the same drain as ``procslice aio`` and ``swoole``, see :mod:`procslice.asgi`); a
connection that stays idle is closed by uvicorn's keep-alive timeout (gunicorn's
``keepalive``), and gunicorn's ``graceful_timeout`` bounds the whole.

    worker_class = "procslice.gunicorn_worker.UvicornWorker"

gunicorn's ``pre_request`` / ``post_request`` hooks and its statsd logger see only the
requests of gunicorn's own HTTP workers (sync, gthread); uvicorn parses these. So the
protocol counts them itself, in plain integers as the aio and swoole workers do
(:class:`procslice.metrics.RequestStats`), and the worker writes them once a second
from its event loop: into its prometheus_client files when the service serves metrics
(:class:`procslice.gunicorn_metrics.FileTotals`, the same series as the other gunicorn
workers), and with ``statsd_host`` set as the figures gunicorn's statsd logger sends for
its own workers (``gunicorn.requests``, ``gunicorn.request.status.<code>``,
``gunicorn.request.duration`` in ms), batched and non-blocking (:mod:`procslice.statsd`)
instead of three datagrams per request. A worker killed by SIGKILL loses at most its
last second of counts; one that stops writes them before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

from procslice import gunicorn_metrics
from procslice.metrics import RequestStats
from procslice.statsd import FLUSH_INTERVAL, Reservoir, StatsdClient

__all__ = ["DrainingHttpToolsProtocol", "UvicornWorker"]

monotonic = time.monotonic


class GunicornStatsd:
    """The request figures of gunicorn's statsd logger, gathered between flushes."""

    def __init__(self, client: StatsdClient) -> None:
        self.client = client
        self.statuses: Counter[int] = Counter()
        self.timings = Reservoir()

    def record(self, status: int, seconds: float) -> None:
        """One answered request."""
        self.statuses[status] += 1
        self.timings.add(seconds * 1000.0)

    def flush(self) -> None:
        """Send what was gathered (non-blocking; dropped on error)."""
        statuses, self.statuses = self.statuses, Counter()
        values, rate = self.timings.take()
        self.client.timings("gunicorn.request.duration", values, rate)
        self.client.count("gunicorn.requests", sum(statuses.values()))
        for status, count in sorted(statuses.items()):
            self.client.count(f"gunicorn.request.status.{status}", count)
        self.client.flush()


class Counts:
    """This worker's per-request counts, and where they go once a second."""

    def __init__(self) -> None:
        self.stats: RequestStats | None = None  # with the Prometheus files
        self.files: gunicorn_metrics.FileTotals | None = None
        self.statsd: GunicornStatsd | None = None
        self.in_flight = 0

    def write(self) -> None:
        """Write the files, send the StatsD figures (never blocks)."""
        if self.files is not None and self.stats is not None:
            self.files.write(self.stats, self.in_flight)
        if self.statsd is not None:
            self.statsd.flush()


counts = Counts()  # this worker's, set up by UvicornWorker.init_process


class CountingWriter:
    """The running request's view of the connection's transport: notes its response's
    status (the head is the first write that is not an interim 1xx) and body bytes."""

    __slots__ = ("head", "sent", "status", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head = False
        self.status = 0
        self.sent = 0

    def begin(self) -> None:
        """A request starts: its response's head is the next write."""
        self.head = True
        self.status = 0
        self.sent = 0

    def write(self, data: bytes) -> None:
        """Note, then write."""
        if self.head:
            status = int(data[9:12])  # b"HTTP/1.1 200 ..."
            if status >= 200:  # "100 Continue" is not the response's head
                self.head = False
                self.status = status
        else:
            self.sent += len(data)
        self.transport.write(data)

    def close(self) -> None:
        """Delegate."""
        self.transport.close()

    def is_closing(self) -> bool:
        """Delegate."""
        return self.transport.is_closing()


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose shutdown lets the client's next request in,
    counting each request it answers."""

    draining = False
    ps_stats: RequestStats | None = None
    ps_statsd: GunicornStatsd | None = None
    ps_writer: CountingWriter | None = None
    ps_running = False  # a request of this connection has started and is not answered
    ps_start = 0.0
    ps_method = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """uvicorn's; and what this connection's requests are counted into, if anything."""
        HttpToolsProtocol.connection_made(self, transport)
        self.ps_stats = counts.stats
        self.ps_statsd = counts.statsd
        if self.ps_stats is not None or self.ps_statsd is not None:
            self.ps_writer = CountingWriter(transport)

    def shutdown(self) -> None:
        """The worker stops: the connection's next response (or the current one) is its last."""
        self.draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        """Start the request; while draining, answer it with ``Connection: close``."""
        HttpToolsProtocol.on_headers_complete(self)
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Start a request (pipelined ones once the one before is answered): note it."""
        writer = self.ps_writer
        if writer is not None:
            cycle.transport = writer
            writer.begin()
            self.ps_running = True
            self.ps_method = cycle.scope["method"]
            self.ps_start = monotonic()
            counts.in_flight += 1
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    def on_body(self, body: bytes) -> None:
        """uvicorn's; count the request body bytes received."""
        HttpToolsProtocol.on_body(self, body)
        if self.ps_stats is not None:
            self.ps_stats.request_bytes += len(body)

    def on_response_complete(self) -> None:
        """Count the answered request; then uvicorn's (the next pipelined request)."""
        writer = self.ps_writer
        if self.ps_running and writer is not None:
            self.ps_running = False
            counts.in_flight -= 1
            seconds = monotonic() - self.ps_start
            if self.ps_stats is not None:
                code = writer.status // 100 - 1  # the status class: 0 for 1xx .. 4 for 5xx
                self.ps_stats.record(self.ps_method, code, writer.sent, seconds)
            if self.ps_statsd is not None:
                self.ps_statsd.record(writer.status, seconds)
        HttpToolsProtocol.on_response_complete(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """A request under way when the connection went is not counted as answered."""
        if self.ps_running:
            self.ps_running = False
            counts.in_flight -= 1
        HttpToolsProtocol.connection_lost(self, exc)


def _statsd_address(host: Any) -> str | None:
    """gunicorn's parsed ``statsd_host`` ((host, port), or a unix path) as "IP:port"."""
    if not isinstance(host, tuple) or len(host) != 2:
        return None
    name, port = host
    return f"[{name}]:{port}" if ":" in str(name) else f"{name}:{port}"


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    """``uvicorn_worker.UvicornWorker`` with :class:`DrainingHttpToolsProtocol`."""

    CONFIG_KWARGS: dict[str, Any] = {
        **_UvicornWorker.CONFIG_KWARGS,
        "http": DrainingHttpToolsProtocol,
    }

    def init_process(self) -> None:
        """In the new worker: where the request counts go, if anywhere."""
        if gunicorn_metrics.counting():
            counts.stats = RequestStats()
            counts.files = gunicorn_metrics.FileTotals()
        address = _statsd_address(self.cfg.statsd_host) if self.cfg.statsd_host else None
        if address is not None:
            try:
                client = StatsdClient(address, self.cfg.statsd_prefix, self.cfg.dogstatsd_tags)
            except (OSError, ValueError) as exc:
                self.log.warning("statsd %s: not sending request figures: %s", address, exc)
            else:
                counts.statsd = GunicornStatsd(client)
        super().init_process()

    async def _serve(self) -> None:
        """uvicorn's server, and the counts written once a second beside it."""
        writer = None
        if counts.stats is not None or counts.statsd is not None:
            writer = asyncio.get_running_loop().create_task(self._write_counts())
        try:
            await super()._serve()
        finally:
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                counts.write()

    async def _write_counts(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            counts.write()
