"""ASGI serving glue: uvicorn's HTTP protocols, taught to drain, and the gated app.

uvicorn's own ``Server.shutdown`` calls ``protocol.shutdown()`` on every connection,
which closes idle keep-alive connections at once: a request the client had already
sent on such a connection is lost (a read error for the client).  procslice never
calls it.  Instead, while the worker drains, every request whose response has not
started yet is answered with ``Connection: close`` and the connection closes after
it: with httptools by clearing the request cycle's ``keep_alive`` (uvicorn then adds
the header itself), with h11 by :class:`ClosingGatedApp` adding the header.  The
worker closes a connection itself only at ``max_wait_time``, and only one that has
had no request arriving for a while (see :func:`activity`).

With httptools (the dependency) the protocol also does less per request than
uvicorn's own: a response's head and body leave in one writev (:class:`CoalescingWriter`),
idle keep-alive connections are closed by the worker's sweep instead of a timer armed
per response, and the concurrency gate is a counter kept in ``_start_asgi_task`` (only a
request that must wait for a place runs through :class:`GatedApp`).

The protocol knows its worker (``ps_worker``) only as a
:class:`procslice.serving.ServingWorker`: this module never imports
:mod:`procslice.worker`, which imports it.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from procslice.serving import ASGIApp, Gate, Message, Receive, Scope, Send, ServingWorker

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    HAVE_HTTPTOOLS = True
except ImportError:  # httptools is a dependency; h11 keeps things working without it
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]
    HAVE_HTTPTOOLS = False

__all__ = ["BUSY", "ClosingGatedApp", "GatedApp", "activity", "gated_app", "protocol_class"]

BUSY = object()  # activity(): a request is in progress on the connection
monotonic = time.monotonic  # a module global: one lookup less per request


def activity(connection: Any) -> object:
    """:data:`BUSY`, or a token that changes whenever a request starts arriving.

    A connection whose token stays the same for a while has no request on the wire.
    """
    cycle = getattr(connection, "cycle", None)
    if cycle is not None and not cycle.response_complete:
        return BUSY
    if getattr(connection, "pipeline", None):
        return BUSY
    token = getattr(connection, "ps_activity", BUSY)
    return token


def _pause_if_full(protocol: Any) -> None:
    """After a response: count it; stop reading the connection while the gate is full."""
    worker: ServingWorker = protocol.ps_worker
    if worker.request_limit:
        worker.count_request()
    gate = worker.gate
    if (
        gate.limit
        and gate.active >= gate.limit
        and not worker.draining
        and not protocol.transport.is_closing()
    ):
        protocol.flow.pause_reading()
        worker.paused.add(protocol)


class DrainAwareH11(H11Protocol):
    """uvicorn's h11 protocol (without httptools), tracking request activity."""

    ps_worker: ServingWorker
    ps_last_data: float = 0.0

    @property
    def ps_activity(self) -> object:
        """Changes with every chunk of request data (h11 buffers partial requests)."""
        return self.ps_last_data

    def data_received(self, data: bytes) -> None:
        """Note that (part of) a request arrived."""
        self.ps_last_data = self.loop.time()
        super().data_received(data)

    def on_response_complete(self) -> None:
        """Count the request; back-pressure."""
        super().on_response_complete()
        _pause_if_full(self)


class CoalescingWriter:
    """The request cycles' view of a connection's transport: one send per response.

    uvicorn writes a response's status line and headers, then its body, with two
    ``transport.write`` calls: two send(2) calls, and often two reads for the client.
    Here a write is held until the next one (sent together with it through
    ``writelines``, one writev(2)) or until the loop's next step, whichever comes first,
    so nothing waits longer than the current callback.

    It also notes, for the per-request metrics, what the current response wrote: the
    first write after :meth:`expect_head` is the response's head (uvicorn writes the
    status line and headers at once), whose status class it keeps (``ps_code``: 0 for
    1xx .. 4 for 5xx); the writes after it are the body (``ps_sent``, bytes; with
    chunked transfer encoding uvicorn writes each chunk with its size line and CRLF, so
    those few bytes per chunk count too).  Counting here costs no call of its own.
    """

    __slots__ = (
        "held",
        "loop",
        "ps_code",
        "ps_head",
        "ps_method",
        "ps_sent",
        "ps_start",
        "scheduled",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.scheduled = False
        self.ps_head = False
        self.ps_code = 0
        self.ps_sent = 0
        self.ps_start = 0.0
        self.ps_method = ""

    def expect_head(self, method: str) -> None:
        """A request starts: its response's head is the next write."""
        self.ps_head = True
        self.ps_sent = 0
        self.ps_method = method
        self.ps_start = monotonic()

    def write(self, data: bytes) -> None:
        """Hold ``data``, or send it with the held write."""
        if self.ps_head:
            code = data[9] - 49  # b"HTTP/1.1 200 ...": the status class digit, '1' is 49
            if code:  # an interim "100 Continue" is not the response's head
                self.ps_head = False
                self.ps_code = code
        else:
            self.ps_sent += len(data)
        held = self.held
        if held is None:
            self.held = data
            if not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self.flush)
        else:
            self.held = None
            self.transport.writelines((held, data))

    def flush(self) -> None:
        """Send what is held (dropped if the connection is gone meanwhile)."""
        self.scheduled = False
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        """Delegate."""
        return self.transport.is_closing()


class DrainAwareHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing keep-alive connections while draining."""

    ps_worker: ServingWorker
    ps_writer: CoalescingWriter
    ps_sweeps_keepalive = True  # Worker.keepalive_loop closes it when idle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set up uvicorn's connection state and the response writer."""
        HttpToolsProtocol.connection_made(self, transport)
        self.ps_writer = CoalescingWriter(transport, self.loop)

    @property
    def ps_activity(self) -> object:
        """The current request's scope: httptools starts a new one on a request's first byte."""
        return self.scope

    def on_headers_complete(self) -> None:
        """Start the request; while draining, make it the connection's last."""
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        if cycle is not None:
            cycle.transport = self.ps_writer  # type: ignore[assignment]
            if self.ps_worker.draining:
                cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        """uvicorn's; count the request body bytes received."""
        HttpToolsProtocol.on_body(self, body)
        stats = self.ps_worker.stats
        if stats is not None:
            stats.request_bytes += len(body)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Start a request's task under the worker's concurrency gate.

        uvicorn calls this for every request, pipelined ones included.  With room in
        the gate the request takes a place now and gives it back when its task ends
        (no wrapper coroutine on this path); with the gate full it runs through
        :class:`GatedApp`, which waits for a place first.
        """
        worker = self.ps_worker
        if worker.stats is not None:
            self.ps_writer.expect_head(cycle.scope["method"])
        gate = worker.gate
        if gate.limit and gate.active >= gate.limit:
            # uvicorn types an app by its own TypedDict scopes, serving's aliases by mappings
            HttpToolsProtocol._start_asgi_task(self, cycle, worker.waiting_app)  # type: ignore[arg-type]
            return
        gate.enter()
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.ps_task_done)
        self.tasks.add(task)

    def ps_task_done(self, task: asyncio.Task[None]) -> None:
        """A request's task ended: its place in the gate is free."""
        self.tasks.discard(task)
        self.ps_worker.gate.leave()

    def on_response_complete(self) -> None:
        """uvicorn's, without the keep-alive timer; count the request; back-pressure.

        uvicorn arms a timer after every response (and cancels it on the next request's
        first bytes): a tenth of a hello-world request's cost under uvloop.  The worker
        closes idle keep-alive connections with one sweep instead
        (``Worker.keepalive_loop``).
        """
        self.server_state.total_requests += 1
        stats = self.ps_worker.stats
        if stats is not None:
            writer = self.ps_writer
            stats.record(
                writer.ps_method, writer.ps_code, writer.ps_sent, monotonic() - writer.ps_start
            )
        if not self.transport.is_closing():  # closing: e.g. after Connection: close
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
        _pause_if_full(self)

    def drain(self) -> None:
        """The worker drains: a response not started yet is the connection's last.

        ``self.cycle`` is the newest request (pipelined ones included).  A response
        already on its way is left alone (the client may not expect the close): the
        connection's next request is the one answered with ``Connection: close``.
        """
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False


def protocol_class() -> type[asyncio.Protocol]:
    """The httptools-based protocol (a dependency), h11 if httptools is missing."""
    return DrainAwareHttpTools if HAVE_HTTPTOOLS else DrainAwareH11


class GatedApp:
    """Runs HTTP requests under the worker's concurrency gate (a counter, see ``Gate``)."""

    def __init__(self, app: ASGIApp, worker: ServingWorker) -> None:
        self.app = app
        self.worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call."""
        gate: Gate | None = self.worker.gate
        if gate is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if gate.limit and gate.active >= gate.limit:
            await gate.wait()
        else:
            gate.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            gate.leave()


class ClosingGatedApp(GatedApp):
    """:class:`GatedApp` adding ``Connection: close`` while draining (for h11)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        worker = self.worker

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and worker.draining:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"connection"
                ]
                headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await GatedApp.__call__(self, scope, receive, send_closing)


def gated_app(app: ASGIApp, worker: ServingWorker) -> ASGIApp:
    """The app uvicorn's protocol runs, matching :func:`protocol_class`.

    The httptools protocol keeps the gate's count itself (``_start_asgi_task``) and
    runs the app as it is; the h11 one runs it through :class:`ClosingGatedApp`.
    """
    return app if HAVE_HTTPTOOLS else ClosingGatedApp(app, worker)
