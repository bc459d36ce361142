"""A raw ``asyncio.Protocol`` answering every HTTP/1.1 request with 200 "hello".

No framework and no parser: a request is everything up to the blank line (the
benchmark sends GETs without a body), pipelined requests are answered in one write.
``factory`` is what ``procslice aio|swoole --interface raw raw_hello:factory`` calls
per connection; :mod:`uvloop_reuseport` serves the same protocol with no supervisor,
so the two differ only by what procslice adds around it.
"""

from __future__ import annotations

import asyncio
from typing import cast

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CLOSING = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
END = b"\r\n\r\n"


class HelloProtocol(asyncio.Protocol):
    """One connection: answer each complete request head with RESPONSE."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is not an asyncio.Transport subclass)."""
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Answer every complete request head received so far."""
        buffer = self.buffer + data if self.buffer else data
        count = buffer.count(END)
        if not count:
            self.buffer = buffer
            return
        self.buffer = buffer[buffer.rindex(END) + len(END) :]
        assert self.transport is not None
        if self.closing:
            self.transport.write(CLOSING)
            self.transport.close()
            return
        self.transport.write(RESPONSE * count)

    def shutdown(self) -> None:
        """The worker drains: answer the next request with Connection: close."""
        self.closing = True


def factory() -> asyncio.Protocol:
    """A protocol per connection (procslice's raw interface)."""
    return HelloProtocol()
