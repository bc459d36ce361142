"""A raw asyncio protocol factory: echoes every line back, prefixed with the pid."""

from __future__ import annotations

import asyncio
import os
from typing import cast


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.transport.write(f"{os.getpid()} ".encode() + data)


def factory() -> asyncio.Protocol:
    return Echo()
