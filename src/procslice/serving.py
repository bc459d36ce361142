"""What procslice's HTTP protocol needs from the process that serves it.

:mod:`procslice.asgi` (the protocol) and :mod:`procslice.worker` (the process) meet
here, and this module imports neither: the worker imports the protocol, the protocol
knows the worker only as a :class:`ServingWorker`.  Here too are the concurrency
:class:`Gate` both use and the ASGI type aliases.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from procslice.metrics import RequestStats

__all__ = ["ASGIApp", "Gate", "Message", "Receive", "Scope", "Send", "ServingWorker"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Gate:
    """The per-process concurrency bound; tells the worker when it fills and frees.

    A plain counter on the hot path; only work that starts while the gate is full
    waits (in FIFO order), and a leaving unit hands its place straight to the
    longest waiter.
    """

    def __init__(self, limit: int, on_full: Callable[[], None], on_free: Callable[[], None]):
        self.limit = limit
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.on_full = on_full
        self.on_free = on_free

    @property
    def full(self) -> bool:
        """Whether no more work may start now."""
        return self.limit > 0 and self.active >= self.limit

    def enter(self) -> None:
        """Count one more unit of work (the caller checked there is room)."""
        self.active += 1
        if self.limit and self.active >= self.limit:
            self.on_full()

    def leave(self) -> None:
        """Count one unit of work done; its place goes to a waiter, if any."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the count stays: the waiter holds the place now
                return
        limit = self.limit
        self.active -= 1
        if limit and self.active == limit - 1:
            self.on_free()

    async def wait(self) -> None:
        """Wait for a place (the gate is full); on return the caller holds one."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # a place was handed over just as we were cancelled
            raise


class ServingWorker(Protocol):
    """The worker as its HTTP connections see it (``protocol.ps_worker``).

    Everything :mod:`procslice.asgi` reads or calls on a worker, and nothing more;
    :class:`procslice.worker.Worker` is one.  Read-only members are properties, so a
    plain attribute of a narrower type satisfies them.
    """

    @property
    def gate(self) -> Gate:
        """The concurrency gate: a request enters it before the app runs, leaves after."""

    @property
    def waiting_app(self) -> ASGIApp:
        """The app behind the gate, for a request that arrives while the gate is full."""

    @property
    def draining(self) -> bool:
        """Whether the worker drains: a response not started yet is its connection's last."""

    @property
    def paused(self) -> set[Any]:
        """Connections not read while the gate is full; the worker resumes them."""

    @property
    def request_limit(self) -> int:
        """Responses after which the worker asks to be replaced (0: never); with it set,
        :meth:`count_request` is called after every response."""

    @property
    def stats(self) -> RequestStats | None:
        """The per-request counts, None when they are not kept."""

    def count_request(self) -> None:
        """A response completed (called only when :attr:`request_limit` is set)."""
