"""A keep-alive HTTP load generator that counts every failed request, for rollout tests.

    python3 loadgen.py NAME=HOST:PORT[/PATH] ... [--connections N] [--rate R] [--seconds S]

Each target gets N persistent HTTP/1.1 connections, each sending GET requests one
after another (at most R a second per connection; 0: back to back) until S seconds
have passed or SIGTERM/SIGINT arrives; then one JSON object is
printed: per target, requests answered 200, failed, and retried.

A request fails when it gets no complete 200 answer: a refused connection, a reset or
an end of stream after any byte of the answer (in its status line, its headers or its
body), a timeout, another status. One case is retried once, as HTTP clients do for
idempotent requests (RFC 9112, section 9.3.1): a request written on a kept-alive
connection that the server closed or reset before sending any byte of an answer (the
server closed an idle connection as the request crossed). The retry's outcome is what
counts; the retry itself is reported as "retried".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from dataclasses import dataclass, field


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class ClosedBeforeAnswer(Exception):
    """The server closed the connection before any byte of an answer."""


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """One request; the status and whether the server keeps the connection open.

    ClosedBeforeAnswer only while no byte of the answer has arrived; a reset or an end
    of stream after that is the request's failure, never a reason to retry it."""
    try:
        writer.write(request)
        await writer.drain()
        first = await reader.read(1)
    except (ConnectionResetError, BrokenPipeError) as error:
        raise ClosedBeforeAnswer from error
    if not first:
        raise ClosedBeforeAnswer
    line = first + await reader.readline()
    if not line.endswith(b"\n"):
        raise ConnectionError("end of stream in the status line")
    status = int(line.split()[1])
    length = 0
    # HTTP/1.0 closes after the answer unless it says keep-alive; HTTP/1.1 keeps it open.
    keep = not line.startswith(b"HTTP/1.0")
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n"):
            break
        if not header:
            raise ConnectionError("end of stream in the headers")
        name, _, value = header.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and "close" in value.lower():
            keep = False
        elif name == "connection" and "keep-alive" in value.lower():
            keep = True
    await reader.readexactly(length)
    return status, keep


async def connection(
    host: str, port: int, path: str, tally: Tally, stop: asyncio.Event, rate: float
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    reader = writer = None
    pause = 1.0 / rate if rate > 0 else 0.0
    while not stop.is_set():
        if pause:
            await asyncio.sleep(pause)
        fresh = False
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                fresh = True
            assert reader is not None
            try:
                status, keep = await asyncio.wait_for(exchange(reader, writer, request), 10)
            except ClosedBeforeAnswer:
                if fresh:
                    raise
                # The kept-alive connection was closed under the request: retry once.
                tally.retried += 1
                writer.close()
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                status, keep = await asyncio.wait_for(exchange(reader, writer, request), 10)
            if status == 200:
                tally.ok += 1
            else:
                tally.fail(f"status {status}")
            if not keep:
                writer.close()
                writer = None
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            ClosedBeforeAnswer,
            ValueError,
            IndexError,
        ) as error:
            tally.fail(type(error).__name__)
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def run(
    targets: dict[str, tuple[str, int, str]], connections: int, seconds: float, rate: float = 0.0
) -> dict[str, dict]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(seconds, stop.set)
    tallies = {name: Tally() for name in targets}
    started = time.monotonic()
    await asyncio.gather(
        *(
            connection(host, port, path, tallies[name], stop, rate)
            for name, (host, port, path) in targets.items()
            for _ in range(connections)
        )
    )
    took = time.monotonic() - started
    return {
        name: {
            "ok": t.ok,
            "failed": t.failed,
            "retried": t.retried,
            "reasons": t.reasons,
            "seconds": round(took, 1),
        }
        for name, t in tallies.items()
    }


def parse_target(text: str) -> tuple[str, tuple[str, int, str]]:
    name, _, address = text.partition("=")
    address, slash, path = address.partition("/")
    host, _, port = address.rpartition(":")
    return name, (host, int(port), slash + path or "/")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="+", help="NAME=HOST:PORT[/PATH]")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s per connection")
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    targets = dict(parse_target(t) for t in args.targets)
    print(
        json.dumps(
            asyncio.run(run(targets, args.connections, args.seconds, args.rate)), sort_keys=True
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
