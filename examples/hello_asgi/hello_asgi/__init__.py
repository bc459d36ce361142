"""An ASGI app for procslice's demo, tests and benchmarks.

Paths:
  /           200 "hello"   (the benchmark's hello-world)
  /whoami     200 "hello from <service> pid <pid>"
  /healthz    200 "ok"
  /version    "<VERSION env> <package version>" (what a deploy changed), both as this
              process read them when it imported the app: the code it really runs
  /leak?mb=N  keeps N MiB more in this worker (a memory leak on demand)
  /block?ms=N blocks the event loop for N ms (a blocking call)
  /slow?ms=N  awaits N ms, then answers

HELLO_FAIL (read at import) makes it misbehave, for the health-gate tests: "500" (every
answer a 500), "hang" (no answer at all) or "after:N" (N answers per process, then 500s).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_leak: list[bytes] = []
FAIL = os.environ.get("HELLO_FAIL", "")
_answered = 0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hello-asgi")
    except PackageNotFoundError:
        return "unknown"


# Read once, at import: a process that runs old code answers the old version even
# after the release link moved (importlib.metadata would read the new release's files).
PACKAGE_VERSION = _package_version()
VERSION = os.environ.get("VERSION", "unset")


def _number(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(query.get(key, [str(default)])[0])
    except ValueError:
        return default


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    global _answered
    _answered += 1
    if FAIL == "hang":
        await asyncio.sleep(3600)
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    status = 200
    if FAIL == "500" or (FAIL.startswith("after:") and _answered > int(FAIL[6:])):
        status, body = 500, f"failing on purpose (HELLO_FAIL={FAIL})"
    elif path == "/":
        body = "hello"
    elif path == "/healthz":
        body = "ok"
    elif path == "/whoami":
        body = f"hello from {os.environ.get('PROCSLICE_SERVICE', 'asgi')} pid {os.getpid()}"
    elif path == "/version":
        body = f"{VERSION} {PACKAGE_VERSION}"
    elif path == "/leak":
        _leak.append(b"x" * (_number(query, "mb", 10) * 1024 * 1024))
        body = f"holding {len(_leak)} blocks"
    elif path == "/block":
        time.sleep(_number(query, "ms", 200) / 1000)
        body = "blocked"
    elif path == "/slow":
        await asyncio.sleep(_number(query, "ms", 1000) / 1000)
        body = "slept"
    else:
        status, body = 404, "not found"
    data = (body + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
