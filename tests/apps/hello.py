"""A small ASGI app for the supervisor tests, with misbehaviour switches.

GET /            200 "hello"
GET /pid         the worker's pid
GET /slow?t=1.5  sleeps asynchronously, then answers (for drains and the gate)
GET /block?t=0.4 blocks the event loop with time.sleep (for the loop-lag warning)
GET /stats       the most requests this process ran at once
GET /task        2 + 3 computed by a task worker: "5 <task worker pid>"
GET /client      "<client host> <scheme>" as the server saw them (X-Forwarded-* tests)
GET /stream?t=1  the response head at once, the body t seconds later
GET /error       raises before answering (uvicorn answers 500)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

active = 0
most = 0


async def respond(
    send: Callable[[Message], Awaitable[None]], body: bytes, status: int = 200
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    global active, most
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    seconds = float(query.get("t", ["1"])[0])
    active += 1
    most = max(most, active)
    try:
        if path == "/pid":
            await respond(send, str(os.getpid()).encode())
        elif path == "/slow":
            await asyncio.sleep(seconds)
            await respond(send, b"slow done")
        elif path == "/block":
            time.sleep(seconds)
            await respond(send, b"blocked")
        elif path == "/stats":
            await respond(send, str(most).encode())
        elif path == "/client":
            await respond(send, f"{scope['client'][0]} {scope['scheme']}".encode())
        elif path == "/stream":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")],
                }
            )
            await asyncio.sleep(seconds)
            await send({"type": "http.response.body", "body": b"late"})
        elif path == "/error":
            raise RuntimeError("the /error route fails on purpose")
        elif path == "/task":
            from procslice.swoole import task

            total, pid = await task("taskfuncs:add", 2, 3)
            await respond(send, f"{total} {pid}".encode())
        else:
            await respond(send, b"hello")
    finally:
        active -= 1


App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
built_in: list[int] = []  # the pids of the processes that called make_app


def make_app(greeting: str = "hello", *, times: int = 1) -> App:
    """An app factory (app: "hello:make_app('hi', times=2)"): GET /greeting answers
    the greeting times times, and the pid of the process that built the app; the rest
    is app's."""
    built_in.append(os.getpid())

    async def made(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http" and scope["path"] == "/greeting":
            body = f"{' '.join([greeting] * times)} {built_in[-1]}"
            await respond(send, body.encode())
            return
        await app(scope, receive, send)

    return made
