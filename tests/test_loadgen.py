"""The rollout tests' load generator counts what a client would see, on real sockets."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "molecule_support"))
import loadgen  # noqa: E402


async def serve(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(handler, seconds: float = 1.0) -> dict:
    async def main() -> dict:
        server, port = await serve(handler)
        async with server:
            return await loadgen.run({"t": ("127.0.0.1", port, "/")}, 2, seconds, rate=200)

    return asyncio.run(main())["t"]


async def read_request(reader: asyncio.StreamReader) -> bool:
    while True:
        line = await reader.readline()
        if not line:
            return False
        if line == b"\r\n":
            return True


def test_keep_alive_answers_are_counted_ok():
    async def handler(reader, writer):
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    tally = run(handler)
    assert tally["ok"] > 50 and tally["failed"] == 0 and tally["retried"] == 0


def test_http_1_0_answers_close_without_a_retry():
    async def handler(reader, writer):
        if await read_request(reader):
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    tally = run(handler)
    assert tally["ok"] > 50 and tally["failed"] == 0 and tally["retried"] == 0


def test_an_idle_connection_closed_under_a_request_is_retried_once():
    async def handler(reader, writer):
        # Answers one request, then closes the connection as the next one arrives.
        if await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        await reader.readline()
        writer.close()

    tally = run(handler)
    assert tally["ok"] > 20 and tally["failed"] == 0 and tally["retried"] > 10


def test_a_server_error_or_a_cut_answer_fails():
    async def handler(reader, writer):
        count = 0
        while await read_request(reader):
            count += 1
            if count % 2:
                writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
                await writer.drain()
                break
            await writer.drain()
        writer.close()

    tally = run(handler)
    assert tally["failed"] > 10
    assert set(tally["reasons"]) == {"status 503", "IncompleteReadError"}


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashing server's kernel does."""
    import socket
    import struct

    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def keep_alive_then(cut: bytes):
    """A server that answers a connection's first request, then sends ``cut`` of the
    second answer and resets the connection."""

    async def handler(reader, writer):
        if await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        if await read_request(reader):
            if cut:
                writer.write(cut)
                await writer.drain()
                await asyncio.sleep(0.01)
            reset(writer)
            return
        writer.close()

    return handler


def test_a_reset_in_the_middle_of_the_head_fails_and_is_not_retried():
    tally = run(keep_alive_then(b"HTTP/1.1 200 OK\r\nContent-Le"))
    assert tally["failed"] > 10, tally
    assert tally["retried"] == 0, tally


def test_a_reset_in_the_middle_of_the_body_fails_and_is_not_retried():
    tally = run(keep_alive_then(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"))
    assert tally["failed"] > 10, tally
    assert tally["retried"] == 0, tally


def test_a_reset_before_any_byte_on_a_kept_alive_connection_is_retried_and_counted():
    tally = run(keep_alive_then(b""))
    assert tally["failed"] == 0, tally
    assert tally["retried"] > 10 and tally["ok"] > 20, tally
