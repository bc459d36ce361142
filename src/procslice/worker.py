"""The serving worker process shared by ``procslice aio`` and ``procslice swoole``.

A worker is forked by the master (:mod:`procslice.master`), imports the application
itself (the master never does, so a reload picks up new code) and runs one asyncio
loop (uvloop when importable) that accepts on the inherited listening sockets:

* ``interface = "asgi"``: connections are served by uvicorn's protocol layer used as
  a library (``HttpToolsProtocol``, or ``H11Protocol`` without httptools, subclassed in
  :mod:`procslice.asgi`, which sees the worker only as a
  :class:`procslice.serving.ServingWorker`) driven by a ``ServerState``, as
  ``uvicorn.server.Server.startup`` does, with the app's lifespan run around it;
* ``interface = "raw"``: the app is a factory returning an ``asyncio.Protocol`` per
  connection.

Around it: a concurrency gate (:class:`procslice.serving.Gate`: ``max_concurrency``
requests at once, a plain counter; while it is full the worker stops accepting and
stops reading idle keep-alive connections, and a request parsed meanwhile waits for a
free slot, so the kernel backlog absorbs the load); a loop-lag monitor warning past
``loop_lag_warn_ms``; a bounded default executor of ``threads`` threads for
``asyncio.to_thread``; and a heartbeat, one JSON line a second on a pipe to the master
(state, requests served, in flight, RSS, loop lag, a request to be replaced after
``max_request``, and the cumulative per-request counts of
:class:`procslice.metrics.RequestStats` unless ``request_metrics`` is off); with
``statsd`` set, the same request figures go to StatsD from the heartbeat's turn of the
loop (a non-blocking send of what one second gathered, :mod:`procslice.statsd`).

Draining (SIGTERM) never closes a connection under a request that may be on the
wire: the worker stops accepting (first taking the connections already queued on its
slot's own sockets, which it may hold the last copy of: see :mod:`procslice.master`),
answers the next request of every keep-alive
connection with ``Connection: close`` (responses that already started are left
alone: the connection stays usable and its next request is the one that closes it),
and only once ``max_wait_time`` has passed closes connections idle longer than a
short grace, then the rest, and exits.  SIGQUIT/SIGINT exit at once.

Exit codes: 0 after a drain, :data:`BOOT_ERROR` when the worker cannot start
(rlimits, lifespan startup failed), :data:`APP_LOAD_ERROR` when the app does not
import; the master halts on those instead of respawning forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import random
import resource
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from procslice.asgi import BUSY, GatedApp, activity, gated_app, protocol_class
from procslice.config import ServiceConfig, parse_app
from procslice.metrics import HttpTotals, RequestStats, SampledRequestStats, statsd_requests
from procslice.serving import Gate
from procslice.sockets import Listener
from procslice.statsd import StatsdClient

__all__ = [
    "APP_LOAD_ERROR",
    "BOOT_ERROR",
    "HEARTBEAT_INTERVAL",
    "WorkerSpec",
    "load_target",
    "read_rss",
    "run_worker",
]

BOOT_ERROR = 3
APP_LOAD_ERROR = 4
HEARTBEAT_INTERVAL = 1.0
LAG_INTERVAL = 0.1  # seconds between two loop-lag probes
IDLE_GRACE = 0.25  # a connection idle this long has no request on the wire (at the deadline)
KEEPALIVE_SWEEP = 0.5  # seconds between two looks for idle keep-alive connections
ACCEPT_BATCH = 64  # connections accepted per wake-up on this slot's own socket
SHARED_ACCEPT_BATCH = 4  # ... on a socket every worker accepts on (fairness)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

log = logging.getLogger("procslice.worker")


def read_rss(pid: int | str = "self") -> int | None:
    """Resident set size of ``pid`` in bytes from /proc/<pid>/statm, None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def load_target(ref: str) -> Any:
    """Import ``"module:attr.sub"`` and return the object, or call the factory of
    ``"module:factory(args)"`` (literal arguments) and return what it built
    (exceptions propagate)."""
    module_name, attr, args, kwargs = parse_app(ref)
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if args is not None:
        target = target(*args, **kwargs)
        if asyncio.iscoroutine(target):
            target.close()
            raise TypeError(f"{ref}: the factory is a coroutine function; make it a plain one")
    return target


@dataclass
class WorkerSpec:
    """What the master hands a worker at fork."""

    config: ServiceConfig
    listeners: list[Listener]
    slot: int
    heartbeat_fd: int  # write end of the pipe to the master
    master_pid: int
    max_request: int = 0  # 0: never ask to be replaced
    max_request_grace: int = 0
    affinity: tuple[int, ...] | None = None


class Acceptor:
    """Accepts on the listening sockets while the worker wants work."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[Listener],
        handle: Callable[[socket.socket, Listener], None],
        can_accept: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self.listeners = listeners
        self.handle = handle
        self.can_accept = can_accept
        self.accepting = False
        self.closed = False

    def start(self) -> None:
        """Watch every listening socket."""
        if self.accepting or self.closed:
            return
        for listener in self.listeners:
            self.loop.add_reader(listener.sock.fileno(), self._ready, listener)
        self.accepting = True

    def pause(self) -> None:
        """Stop accepting; connections wait in the kernel backlog."""
        if not self.accepting:
            return
        for listener in self.listeners:
            self.loop.remove_reader(listener.sock.fileno())
        self.accepting = False

    def close(self, sweep: bool = False) -> None:
        """Stop for good and close this process's copies of the listening sockets.

        With ``sweep``, first accept (and hand over) every connection queued on the
        sockets this slot owns: if this process holds their last copy (SIGTTOU
        removed the slot), closing them would reset the queued connections.
        """
        self.pause()
        self.closed = True
        for listener in self.listeners:
            if sweep and not listener.shared:
                self._accept(listener, 1 << 30, lambda: True)
            listener.sock.close()

    def _ready(self, listener: Listener) -> None:
        self._accept(
            listener, SHARED_ACCEPT_BATCH if listener.shared else ACCEPT_BATCH, self.can_accept
        )

    def _accept(self, listener: Listener, batch: int, can_accept: Callable[[], bool]) -> None:
        for _ in range(batch):
            if not can_accept():
                self.pause()
                return
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: back off, let others accept
                log.error("accept failed: %s; pausing accept for 0.5 s", exc)
                self.pause()
                self.loop.call_later(0.5, self._resume_after_error)
                return
            conn.setblocking(False)
            self.handle(conn, listener)

    def _resume_after_error(self) -> None:
        if not self.closed and self.can_accept():
            self.start()


class Worker:
    """One serving process: the loop, the app, the gate, the heartbeat and the drain."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.config = spec.config
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.target: Any = None
        self.uvicorn_config: Any = None
        self.waiting_app: Any = None  # the app behind the gate, for requests that must wait
        self.server_state: Any = None
        self.lifespan: Any = None
        self.gate: Gate = None  # type: ignore[assignment]
        self.acceptor: Acceptor = None  # type: ignore[assignment]
        self.stop_event: asyncio.Event = None  # type: ignore[assignment]
        self.quick = False
        self.draining = False
        self.raw_served = 0
        self.raw_connections: set[RawConnection] = set()
        self.paused: set[Any] = set()  # idle HTTP connections paused while the gate is full
        self.pending: set[asyncio.Task[None]] = set()
        self.max_lag = 0.0
        self.last_lag_warning = 0.0
        self.request_limit = 0
        if spec.max_request:
            self.request_limit = spec.max_request + random.randint(0, spec.max_request_grace)
        self.retire_asked = False
        self.master_gone = False
        # per-request metrics (HTTP with httptools; None: off), sent in the heartbeat;
        # with a StatsD server they keep a sample of the durations too
        counting = spec.config.interface == "asgi" and spec.config.request_metrics
        self.stats: RequestStats | None = None
        if counting:
            self.stats = SampledRequestStats() if spec.config.statsd else RequestStats()
        self.statsd: StatsdClient | None = None
        self.statsd_last = HttpTotals()

    # ------------------------------------------------------------------ process setup

    def run(self) -> int:
        """Boot and serve until drained; the process's exit code."""
        if not self.setup_process():
            return BOOT_ERROR
        try:
            self.target = load_target(self.config.app)
            if self.config.interface == "asgi":
                self.uvicorn_config = self.make_uvicorn_config(self.target)
        except Exception:
            log.exception("cannot load the app %r", self.config.app)
            return APP_LOAD_ERROR
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            return self.loop.run_until_complete(self.main())
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def setup_process(self) -> bool:
        """rlimits and CPU affinity; False (logged) if a limit cannot be applied."""
        for name, value in (
            ("rlimit_as", self.config.rlimit_as),
            ("rlimit_nofile", self.config.rlimit_nofile),
        ):
            if not value:
                continue
            kind = resource.RLIMIT_AS if name == "rlimit_as" else resource.RLIMIT_NOFILE
            _, hard = resource.getrlimit(kind)
            try:
                resource.setrlimit(kind, (value, hard))
            except (ValueError, OSError) as exc:
                log.error("%s: cannot set %d (hard limit %s): %s", name, value, hard, exc)
                return False
        if self.spec.affinity:
            try:
                os.sched_setaffinity(0, self.spec.affinity)
            except OSError as exc:
                log.warning("cpu_affinity: cannot pin to %s: %s", self.spec.affinity, exc)
        return True

    def make_uvicorn_config(self, app: Any) -> Any:
        """A loaded uvicorn Config for ``app`` using procslice's protocol subclass."""
        from uvicorn.config import Config

        config = Config(
            app=app,
            http=protocol_class(),
            lifespan="auto",
            log_config=None,
            access_log=False,
            backlog=2048,
            timeout_keep_alive=self.config.keepalive_timeout,  # type: ignore[arg-type]
            server_header=self.config.server_header,
            # X-Forwarded-* only from the proxies the operator names (uvicorn's default
            # trusts 127.0.0.1 and costs every request a header scan).
            proxy_headers=bool(self.config.forwarded_allow_ips),
            forwarded_allow_ips=list(self.config.forwarded_allow_ips) or None,
        )
        config.load()
        self.waiting_app = GatedApp(config.loaded_app, self)
        config.loaded_app = gated_app(config.loaded_app, self)
        return config

    # ------------------------------------------------------------------ the loop

    async def main(self) -> int:
        """Start serving, heartbeat, wait for a stop signal, drain."""
        loop = self.loop
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=self.config.threads, thread_name_prefix="to_thread")
        )
        self.stop_event = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.handle_term)
        loop.add_signal_handler(signal.SIGQUIT, self.handle_quit)
        loop.add_signal_handler(signal.SIGINT, self.handle_int)
        self.gate = Gate(self.config.max_concurrency, self.on_gate_full, self.on_gate_free)

        if self.uvicorn_config is not None:
            from uvicorn.server import ServerState

            self.server_state = ServerState()
            self.lifespan = self.uvicorn_config.lifespan_class(self.uvicorn_config)
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                log.error("the app's lifespan startup failed")
                return BOOT_ERROR
            self.server_state.default_headers = self.uvicorn_config.encoded_headers
            handle = self.accept_http
        else:
            handle = self.accept_raw

        if self.config.statsd and self.stats is not None:
            try:
                self.statsd = StatsdClient(
                    self.config.statsd, self.config.statsd_prefix, self.config.dogstatsd_tags
                )
            except (OSError, ValueError) as exc:
                log.warning("statsd %s: not sending: %s", self.config.statsd, exc)
        self.acceptor = Acceptor(loop, self.spec.listeners, handle, self.can_accept)
        self.acceptor.start()
        monitors = [
            loop.create_task(self.lag_monitor()),
            loop.create_task(self.heartbeat_loop()),
            loop.create_task(self.date_header_loop()),
            loop.create_task(self.keepalive_loop()),
        ]
        self.heartbeat("serving")
        log.info("serving %s (%s)", self.config.app, self.config.interface)
        await self.stop_event.wait()
        await self.drain()
        for task in monitors:
            task.cancel()
        if self.lifespan is not None and not self.quick:
            try:
                await asyncio.wait_for(self.lifespan.shutdown(), timeout=3.0)
            except TimeoutError:
                log.warning("the app's lifespan shutdown did not finish in 3 s")
        self.heartbeat("exiting")
        self.flush_statsd()
        return 0

    def handle_term(self) -> None:
        """SIGTERM: drain gracefully, then exit."""
        self.stop_event.set()

    def handle_quit(self) -> None:
        """SIGQUIT: exit at once."""
        self.quick = True
        self.stop_event.set()

    def handle_int(self) -> None:
        """SIGINT: exit at once (as SIGQUIT)."""
        self.handle_quit()

    @property
    def served(self) -> int:
        """Requests answered (raw: connections closed)."""
        if self.server_state is not None:
            return int(self.server_state.total_requests)
        return self.raw_served

    def can_accept(self) -> bool:
        """Whether to accept more connections now."""
        return not self.draining and not self.gate.full

    def on_gate_full(self) -> None:
        """The gate filled: stop accepting."""
        self.acceptor.pause()

    def on_gate_free(self) -> None:
        """The gate has room again: accept and read idle connections again."""
        if self.draining:
            return
        self.acceptor.start()
        paused, self.paused = self.paused, set()
        for connection in paused:
            if not connection.transport.is_closing():
                connection.flow.resume_reading()

    def count_request(self) -> None:
        """Called after each response; asks for a replacement past max_request."""
        if self.request_limit and not self.retire_asked and self.served >= self.request_limit:
            self.retire_asked = True
            log.info(
                "served %d requests (max_request %d + grace): asking for a replacement",
                self.served,
                self.spec.max_request,
            )
            self.heartbeat("serving")

    # ------------------------------------------------------------------ connections

    def accept_http(self, conn: socket.socket, listener: Listener) -> None:
        """Hand an accepted connection to uvicorn's protocol."""
        self._connect(conn, self.http_protocol, listener)

    def accept_raw(self, conn: socket.socket, listener: Listener) -> None:
        """Hand an accepted connection to the app's protocol factory."""
        self.gate.enter()
        self._connect(conn, lambda: RawConnection(self.target(), self), listener)

    def http_protocol(self) -> asyncio.Protocol:
        """A uvicorn protocol instance bound to this worker's state."""
        config = self.uvicorn_config
        protocol: asyncio.Protocol = config.http_protocol_class(
            config=config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
            _loop=self.loop,
        )
        protocol.ps_worker = self  # type: ignore[attr-defined]
        return protocol

    def _connect(
        self, conn: socket.socket, factory: Callable[[], asyncio.Protocol], listener: Listener
    ) -> None:
        if listener.is_tcp:
            with contextlib.suppress(OSError):
                conn.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self.config.tcp_nodelay)
                )
        task = self.loop.create_task(self._connect_task(conn, factory))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _connect_task(
        self, conn: socket.socket, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        try:
            transport, _ = await self.loop.connect_accepted_socket(factory, sock=conn)
        except OSError as exc:
            log.debug("connection lost before it started: %s", exc)
            conn.close()
            return
        if not self.config.tcp_nodelay:  # asyncio turns TCP_NODELAY on by itself
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)

    # ------------------------------------------------------------------ monitors

    async def lag_monitor(self) -> None:
        """Measure how late the loop runs a timer; warn past loop_lag_warn_ms."""
        warn = self.config.loop_lag_warn_ms / 1000
        while True:
            start = self.loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, self.loop.time() - start - LAG_INTERVAL)
            self.max_lag = max(self.max_lag, lag)
            if warn and lag > warn:
                now = time.monotonic()
                if now - self.last_lag_warning >= 1.0:
                    self.last_lag_warning = now
                    log.warning(
                        "event loop lag %d ms exceeds loop_lag_warn_ms %d: "
                        "a blocking call in the app? (use asyncio.to_thread)",
                        lag * 1000,
                        self.config.loop_lag_warn_ms,
                    )

    async def heartbeat_loop(self) -> None:
        """Tell the master we are alive once a second; drain if the master is gone."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            if os.getppid() != self.spec.master_pid:
                self.master_gone = True
            if self.master_gone and not self.stop_event.is_set():
                log.warning("the master is gone: draining")
                self.stop_event.set()
            self.heartbeat("draining" if self.draining else "serving")
            self.max_lag = 0.0
            self.flush_statsd()

    def flush_statsd(self) -> None:
        """Send the per-request figures since the last flush to StatsD (never blocks)."""
        if self.statsd is not None and self.stats is not None:
            self.statsd_last = statsd_requests(self.statsd, self.stats, self.statsd_last)
            self.statsd.flush()

    async def date_header_loop(self) -> None:
        """Refresh uvicorn's Date header once a second (Server.on_tick does this)."""
        if self.server_state is None:
            return
        from email.utils import formatdate

        config = self.uvicorn_config
        while True:
            date = [(b"date", formatdate(time.time(), usegmt=True).encode())]
            self.server_state.default_headers = date + config.encoded_headers
            await asyncio.sleep(1.0)

    async def keepalive_loop(self) -> None:
        """Close HTTP connections idle for keepalive_timeout (seconds) between requests.

        uvicorn's httptools protocol arms a timer per response for this; procslice's
        (``asgi.DrainAwareHttpTools``) leaves that to one sweep every
        KEEPALIVE_SWEEP seconds, so a connection closes between keepalive_timeout and
        keepalive_timeout + 2 sweeps after its last response (or after it opened, if it
        never sent a request).  A connection with a request in progress, or one whose
        next request has started to arrive, is left alone.  While draining,
        :meth:`drain` takes over.
        """
        if self.server_state is None:
            return
        timeout = self.config.keepalive_timeout
        marks: dict[Any, tuple[object, float]] = {}
        while not self.draining:
            await asyncio.sleep(KEEPALIVE_SWEEP)
            if self.draining:
                return
            for connection in self.watch_idle(marks, timeout):
                if getattr(connection, "ps_sweeps_keepalive", False):
                    transport = connection.transport
                    if not transport.is_closing():
                        transport.close()

    def heartbeat(self, state: str) -> None:
        """Write one heartbeat line to the master."""
        message = {
            "pid": os.getpid(),
            "slot": self.spec.slot,
            "state": state,
            "served": self.served,
            "inflight": self.gate.active if self.gate is not None else 0,
            "rss": read_rss() or 0,
            "lag": round(self.max_lag, 6),
            "retire": "max_request" if self.retire_asked else None,
        }
        if self.stats is not None:
            message["http"] = self.stats.beat()
        data = (json.dumps(message) + "\n").encode()
        try:
            os.write(self.spec.heartbeat_fd, data)
        except BlockingIOError:
            pass  # the master is busy; the next beat will do
        except OSError:
            self.master_gone = True

    # ------------------------------------------------------------------ drain

    def connections(self) -> list[Any]:
        """Open client connections (uvicorn protocols, or raw wrappers)."""
        if self.server_state is not None:
            return list(self.server_state.connections)
        return list(self.raw_connections)

    async def drain(self) -> None:
        """Stop accepting, let keep-alive connections close on their next response, exit."""
        self.draining = True
        self.acceptor.close(sweep=not self.quick)
        self.heartbeat("draining")
        for connection in self.paused:
            if not connection.transport.is_closing():
                connection.flow.resume_reading()
        self.paused.clear()
        if self.quick:
            log.info("quick exit: closing %d connection(s)", len(self.connections()))
            self.close_all()
            return
        for connection in self.connections():
            shutdown = getattr(connection, "drain", None)
            if shutdown is not None:
                shutdown()
        wait = self.config.max_wait_time
        log.info("draining %d connection(s) for up to %.1f s", len(self.connections()), wait)
        deadline = self.loop.time() + wait
        marks: dict[Any, tuple[object, float]] = {}
        while self.connections() and self.loop.time() < deadline:
            self.watch_idle(marks)
            await asyncio.sleep(0.05)
        # Past the deadline: close what idles (no request can be on the wire of a
        # connection idle for IDLE_GRACE); give the busy ones the grace to finish.
        end = self.loop.time() + IDLE_GRACE * 2
        while self.connections() and self.loop.time() < end:
            for connection in self.watch_idle(marks):
                connection.transport.close()
            await asyncio.sleep(0.05)
        left = self.connections()
        if left:
            log.warning("max_wait_time %.1f s passed: closing %d connection(s)", wait, len(left))
            self.close_all()
        await asyncio.sleep(0)

    def watch_idle(
        self, marks: dict[Any, tuple[object, float]], grace: float = IDLE_GRACE
    ) -> list[Any]:
        """Update ``marks`` (connection -> activity token, since); those idle ``grace`` s."""
        now = self.loop.time()
        idle = []
        connections = self.connections()
        for connection in connections:
            token = activity(connection)
            mark = marks.get(connection)
            if token is BUSY:
                marks.pop(connection, None)
            elif mark is None or mark[0] is not token:
                marks[connection] = (token, now)
            elif now - mark[1] >= grace:
                idle.append(connection)
        if len(marks) > len(connections):
            alive = set(connections)
            for gone in [c for c in marks if c not in alive]:
                del marks[gone]
        return idle

    def close_all(self) -> None:
        """Close every connection and cancel the app's tasks."""
        for connection in self.connections():
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        if self.server_state is not None:
            for task in list(self.server_state.tasks):
                task.cancel()


class RawConnection(asyncio.Protocol):
    """Wraps the app's protocol to count and track its connection."""

    def __init__(self, inner: asyncio.Protocol, worker: Worker) -> None:
        self.inner = inner
        self.worker = worker
        self.transport: asyncio.BaseTransport | None = None
        # The loop looks data_received up on this object: the app's own bound method,
        # so the hot path has no delegating frame.
        self.data_received = inner.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Track the connection, then hand over to the app's protocol."""
        self.transport = transport
        self.worker.raw_connections.add(self)
        self.inner.connection_made(transport)

    def eof_received(self) -> bool | None:
        """Delegate."""
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Untrack, count, delegate."""
        if self in self.worker.raw_connections:
            self.worker.raw_connections.discard(self)
            self.worker.raw_served += 1
            self.worker.gate.leave()
            self.worker.count_request()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Delegate."""
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Delegate."""
        self.inner.resume_writing()

    def drain(self) -> None:
        """Tell the app's protocol the worker drains, if it has a ``shutdown()``."""
        shutdown = getattr(self.inner, "shutdown", None)
        if callable(shutdown):
            shutdown()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is importable, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_worker(spec: WorkerSpec) -> int:
    """The body of a forked worker; returns its exit code."""
    os.set_blocking(spec.heartbeat_fd, False)
    try:
        return Worker(spec).run()
    except Exception:
        log.exception("worker failed")
        return 1
