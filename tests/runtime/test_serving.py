"""The HTTP protocol's interface to its worker (src/procslice/serving.py).

procslice.asgi knows the worker only as a ``ServingWorker``: procslice.worker imports
procslice.asgi, never the reverse. These tests fail if the reverse import comes back
(even one under ``TYPE_CHECKING``), and serve real requests on 127.0.0.1 through the
protocol with a stand-in worker that is not a ``Worker``: the gate, the back-pressure,
the request counting and the drain need nothing more than the interface.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from conftest import child_env
from uvicorn.config import Config
from uvicorn.server import ServerState

from procslice.asgi import GatedApp, protocol_class
from procslice.metrics import RequestStats
from procslice.serving import Gate

SRC = Path(__file__).resolve().parents[2] / "src" / "procslice"
# module -> the procslice modules it must never import
NEVER = {
    "asgi": {"procslice.worker"},
    "serving": {"procslice.worker", "procslice.asgi"},
}


def imported_names(path: Path) -> set[str]:
    """Every module (and ``from`` name) an import statement anywhere in ``path`` names:
    at the top, in functions and under ``if TYPE_CHECKING:`` alike."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_protocol_modules_never_name_the_worker_in_an_import() -> None:
    for module, never in NEVER.items():
        found = imported_names(SRC / f"{module}.py") & never
        assert not found, (
            f"src/procslice/{module}.py imports {', '.join(sorted(found))}: the HTTP protocol "
            "sees a worker only through procslice.serving.ServingWorker (add what it needs "
            "there); only procslice.worker imports procslice.asgi"
        )


def test_importing_the_protocol_loads_no_worker() -> None:
    for module, never in NEVER.items():
        code = (
            f"import sys, procslice.{module}; "
            "print(' '.join(m for m in sys.modules if m.startswith('procslice')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        loaded = set(result.stdout.split())
        assert not loaded & never, (
            f"import procslice.{module} loaded {', '.join(sorted(loaded & never))} "
            f"(all loaded: {', '.join(sorted(loaded))})"
        )


# ---------------------------------------------------------------- a stand-in worker


class StandIn:
    """A worker as the protocol sees it (``ServingWorker``), and nothing else."""

    def __init__(self, app: Any, limit: int) -> None:
        self.gate = Gate(limit, self.on_full, self.on_free)
        self.waiting_app = GatedApp(app, self)
        self.draining = False
        self.paused: set[Any] = set()
        self.request_limit = 1000
        self.stats: RequestStats | None = RequestStats()
        self.counted = 0
        self.fills = 0
        self.resumed = 0

    def count_request(self) -> None:
        self.counted += 1

    def on_full(self) -> None:
        self.fills += 1

    def on_free(self) -> None:
        """What Worker.on_gate_free does for connections: read the paused ones again."""
        paused, self.paused = self.paused, set()
        for connection in paused:
            self.resumed += 1
            if not connection.transport.is_closing():
                connection.flow.resume_reading()


class Site:
    """procslice's protocol served on 127.0.0.1 for a :class:`StandIn`, as Worker does."""

    def __init__(self, limit: int) -> None:
        self.release = asyncio.Event()  # /slow answers once it is set
        self.started = asyncio.Event()  # a /slow request reached the app
        self.config = Config(
            app=self.app,
            interface="asgi3",
            http=protocol_class(),
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
        self.config.load()
        self.worker = StandIn(self.config.loaded_app, limit)
        self.state = ServerState()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/slow":
            self.started.set()
            await self.release.wait()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = b"ok %d" % len(body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(
            config=self.config,
            server_state=self.state,
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        protocol.ps_worker = self.worker  # type: ignore[attr-defined]
        return protocol

    async def __aenter__(self) -> Site:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self.protocol, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for connection in list(self.state.connections):
            connection.transport.close()
        await self.server.wait_closed()

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return Client(reader, writer)


class Client:
    """One keep-alive HTTP/1.1 client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, path: str, body: bytes = b"") -> None:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def response(self) -> tuple[bytes, bytes]:
        """The next response's head (lower case) and body."""
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return head, await self.reader.readexactly(length)

    async def closed(self) -> bool:
        """Whether the server closes the connection (now or within a second)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 1.0) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async test on a fresh loop, bounded in time."""

    async def bounded(body: Awaitable[None]) -> None:
        await asyncio.wait_for(body, 20)

    asyncio.run(bounded(test()))


def test_a_request_past_a_stand_ins_full_gate_waits_then_is_served() -> None:
    async def scenario() -> None:
        async with Site(limit=1) as site:
            worker = site.worker
            first, second = await site.connect(), await site.connect()
            first.send("/slow", b"12345")
            await site.started.wait()
            assert (worker.gate.active, worker.fills) == (1, 1)
            second.send("/")
            waiting = asyncio.ensure_future(second.response())
            await asyncio.sleep(0.3)
            assert not waiting.done(), "a request past the full gate was answered at once"
            assert len(worker.gate.waiters) == 1
            site.release.set()
            assert (await first.response())[1] == b"ok 5"
            assert (await waiting)[1] == b"ok 0"
            await asyncio.sleep(0.05)  # the requests' tasks end
            assert worker.gate.active == 0 and not worker.gate.waiters
            # both connections stopped reading after their response (the gate was full)
            # until the gate had room again
            assert (worker.resumed, worker.paused) == (2, set())
            first.send("/")
            assert (await first.response())[1] == b"ok 0"
            assert worker.counted == 3
            assert worker.stats is not None
            assert (sum(worker.stats.requests), worker.stats.request_bytes) == (3, 5)
            first.close()
            second.close()

    run(scenario)


def test_a_draining_stand_in_gets_each_connections_next_response_closing_it() -> None:
    async def scenario() -> None:
        async with Site(limit=0) as site:
            worker = site.worker
            idle, busy = await site.connect(), await site.connect()
            idle.send("/")
            head, _ = await idle.response()
            assert b"connection: close" not in head
            busy.send("/slow")
            await site.started.wait()  # its response has not started
            worker.draining = True
            for connection in list(site.state.connections):
                connection.drain()  # what Worker.drain does
            idle.send("/")
            head, body = await idle.response()
            assert b"connection: close" in head and body == b"ok 0"
            assert await idle.closed(), "an idle connection stayed open after its last response"
            site.release.set()
            head, body = await busy.response()
            assert b"connection: close" in head and body == b"ok 0"
            assert await busy.closed(), "a busy connection stayed open after its last response"
            assert worker.counted == 3 and worker.gate.active == 0
            idle.close()
            busy.close()

    run(scenario)
