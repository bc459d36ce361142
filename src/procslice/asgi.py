"""ASGI serving glue: uvicorn's HTTP protocols, taught to drain, and the gated app.

uvicorn's own ``Server.shutdown`` calls ``protocol.shutdown()`` on every connection,
which closes idle keep-alive connections at once: a request the client had already
sent on such a connection is lost (a read error for the client).  procslice never
calls it.  Instead :class:`GatedApp` adds ``Connection: close`` to every response
that starts while the worker drains (uvicorn then closes the connection after that
response), and the protocol subclasses below record when a connection went idle so
the worker closes only connections idle for a while, and only at ``max_wait_time``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    HAVE_HTTPTOOLS = True
except ImportError:  # httptools is a dependency; h11 keeps things working without it
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]
    HAVE_HTTPTOOLS = False

if TYPE_CHECKING:
    from procslice.worker import ASGIApp, Message, Receive, Scope, Send, Worker

__all__ = ["GatedApp", "protocol_class"]


def _made(protocol: Any) -> None:
    now = protocol.loop.time()
    protocol.ps_idle_since = now
    protocol.ps_last_data = now


def _response_complete(protocol: Any) -> None:
    protocol.ps_idle_since = protocol.loop.time()
    worker: Worker = protocol.ps_worker
    worker.count_request()
    if worker.gate.full and not worker.draining and not protocol.transport.is_closing():
        protocol.flow.pause_reading()
        worker.paused.add(protocol)


class DrainAwareH11(H11Protocol):
    """uvicorn's h11 protocol, tracking idleness for the drain."""

    ps_idle_since: float
    ps_last_data: float

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start tracking."""
        super().connection_made(transport)
        _made(self)

    def data_received(self, data: bytes) -> None:
        """Note that (part of) a request arrived."""
        self.ps_last_data = self.loop.time()
        super().data_received(data)

    def on_response_complete(self) -> None:
        """Note that the connection is idle; count the request."""
        super().on_response_complete()
        _response_complete(self)


class DrainAwareHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, tracking idleness for the drain."""

    ps_idle_since: float
    ps_last_data: float

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start tracking."""
        super().connection_made(transport)
        _made(self)

    def data_received(self, data: bytes) -> None:
        """Note that (part of) a request arrived."""
        self.ps_last_data = self.loop.time()
        super().data_received(data)

    def on_response_complete(self) -> None:
        """Note that the connection is idle; count the request."""
        super().on_response_complete()
        _response_complete(self)


def protocol_class() -> type[asyncio.Protocol]:
    """The httptools-based protocol (a dependency), h11 if httptools is missing."""
    return DrainAwareHttpTools if HAVE_HTTPTOOLS else DrainAwareH11


class GatedApp:
    """Runs the app under the worker's concurrency gate; closes connections when draining."""

    def __init__(self, app: ASGIApp, worker: Worker) -> None:
        self.app = app
        self.worker = worker

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

        async with worker.gate:
            await self.app(scope, receive, send_closing)
