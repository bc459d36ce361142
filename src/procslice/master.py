"""The supervisor master shared by ``procslice aio`` and ``procslice swoole``.

Modelled on gunicorn's arbiter.  The master owns the listening sockets, forks the
workers (it never imports the app, so a reload runs new code) and loops:

    wait (poll on a signal self-pipe, the workers' heartbeat pipes, the metrics
    endpoint) -> handle the recorded signals -> read heartbeats -> reap children with
    waitpid(WNOHANG) -> recycle and heal -> tell systemd.

Signal handlers only append the signal to a queue (and ``signal.set_wakeup_fd``
wakes the select); ``handle_<signame>`` methods do the work in the loop:

* SIGTERM: graceful stop (STOPPING=1, SIGTERM to every child, ``max_wait_time`` plus
  a margin, SIGKILL, a last reap);  SIGINT / SIGQUIT: quick stop;
* SIGHUP: reload: re-read the config file, then replace workers one at a time, each
  new worker serving before its old one is told to drain (RELOADING=1 with
  MONOTONIC_USEC=, then READY=1);
* SIGTTIN / SIGTTOU: one worker more / fewer;
* SIGCHLD: just wakes the loop (reaping happens every turn).

Listening sockets per worker slot: a TCP socket with SO_REUSEPORT (every socket
procslice binds itself; a socket-activated one when systemd set ReusePort=yes) is
slot 0's, and the master opens one more socket in its SO_REUSEPORT group for every
other slot, so the kernel spreads connections evenly over the slots (one shared
socket lets the first worker to wake take a whole burst of keep-alive connections,
and they never move).  A worker gets only its slot's sockets; its replacement
(reload, recycle, crash respawn) inherits the same sockets, which stay open in the
master throughout, so connections queued meanwhile wait in the backlog and nothing
is lost.  The price: connections the kernel hashed to a slot whose worker is
momentarily gone (crash back-off) or full (``max_concurrency``) wait for that slot
instead of going to another worker.  When SIGTTOU removes a slot, the master closes
its copy of the slot's sockets *before* telling the slot's worker to drain; the
worker accepts the backlog, then closes the last copy, so the kernel stops routing
to it.  Only a connection completing its handshake in the microseconds between that
last accept and the close is reset (none with ``net.ipv4.tcp_migrate_req = 1``,
which migrates them to the other slots' sockets).  Sockets that cannot be split (unix
sockets, socket-activated ones without SO_REUSEPORT or owned by another user) are
shared by every worker, which then accepts a few connections per wake-up only.

A worker that exits with :data:`~procslice.worker.BOOT_ERROR` or
:data:`~procslice.worker.APP_LOAD_ERROR` halts the master with the same exit code
(during a reload it only aborts the reload and the old workers keep serving).  Any
other unexpected exit is a crash: respawned at once until crashes flap (more than
``flap_threshold`` in ``FLAP_WINDOW`` seconds), then with exponential back-off.  A
worker killed by SIGKILL is logged as a possible OOM kill with its last RSS.

With ``statsd`` set, :meth:`Master.tick` sends the process figures (workers, in flight,
RSS and loop lag per worker, restarts, requests) to StatsD once a second: a
non-blocking send, dropped when it cannot go (:mod:`procslice.statsd`).

Master exit codes: 0 stopped, 1 unexpected error, 2 bad configuration (cli), 3 a
worker could not boot or the sockets could not be bound, 4 the app failed to load.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import select
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType

from procslice import logs
from procslice.config import CONFIG_ERROR, ConfigError, Model, ServiceConfig, from_args
from procslice.metrics import (
    HttpTotals,
    MetricsServer,
    Snapshot,
    WorkerSample,
    registry_for,
    render,
    statsd_process,
)
from procslice.sdnotify import Notifier
from procslice.sockets import Listener, listeners, reuseport_twin
from procslice.statsd import FLUSH_INTERVAL, StatsdClient
from procslice.worker import (
    APP_LOAD_ERROR,
    BOOT_ERROR,
    HEARTBEAT_INTERVAL,
    WorkerSpec,
    read_rss,
    run_worker,
)

__all__ = ["Child", "Master", "run_master"]

log = logging.getLogger("procslice.master")

HEARTBEAT_TIMEOUT = 3 * HEARTBEAT_INTERVAL  # a serving worker silent this long is stale
BOOT_TIMEOUT = 60.0  # a replacement not serving by then is killed
KILL_MARGIN = 5.0  # seconds past max_wait_time before SIGKILL on stop
FLAP_WINDOW = 10.0
MAX_BACKOFF = 30.0
LOOP_TIMEOUT = 0.2
EXIT_REASONS = {BOOT_ERROR: "could not boot", APP_LOAD_ERROR: "could not load the app"}
MiB = 1024 * 1024


@dataclass(eq=False)
class Child:
    """A worker or task worker as the master sees it."""

    pid: int
    kind: str  # "worker" | "task"
    slot: int
    hb_fd: int | None
    started: float = field(default_factory=time.monotonic)
    state: str = "booting"  # booting | serving | stopping
    last_beat: float = field(default_factory=time.monotonic)
    buffer: bytes = b""
    served: int = 0
    inflight: int = 0
    rss: int = 0
    lag: float = 0.0
    http: HttpTotals | None = None  # cumulative per-request counts, as last sent
    reason: str | None = None  # why it is being replaced
    replaces: int | None = None  # pid of the worker this one replaces
    stop_sent: float | None = None
    stale: bool = False

    @property
    def name(self) -> str:
        """ "worker 2 (pid 123)"."""
        return f"{'task worker' if self.kind == 'task' else 'worker'} {self.slot} (pid {self.pid})"


class Master:
    """The arbiter: spawns, watches, recycles and stops the workers."""

    model = "aio"
    flap_threshold = 1  # crashes tolerated in FLAP_WINDOW before backing off
    handled_signals = (
        signal.SIGHUP,
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGCHLD,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )

    def __init__(
        self,
        config: ServiceConfig,
        reload_config: Callable[[], ServiceConfig] | None = None,
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.listeners: list[Listener] = []  # the bound or inherited sockets (slot 0's)
        self.slot_listeners: dict[int, list[Listener]] = {}  # slot -> its sockets
        self.spread: list[bool] = []  # per listener: one socket per slot?
        self.children: dict[int, Child] = {}
        self.num_workers = 1
        self.num_task_workers = 0
        self.signal_queue: list[int] = []
        self.wakeup_r = -1
        self.wakeup_w = -1
        self.notifier = Notifier()
        self.metrics: MetricsServer | None = None
        self.statsd: StatsdClient | None = None
        self.statsd_last: Snapshot | None = None
        self.next_statsd = 0.0
        self.restarts: Counter[str] = Counter()
        self.retired_served = 0
        self.retired_http = HttpTotals()
        self.crash_times: deque[float] = deque()
        self.backoff_until = 0.0
        self.ready_sent = False
        self.reloading = False
        self.replace_queue: deque[int] = deque()
        self.current: tuple[int, int] | None = None  # (old pid, new pid)
        self.halt_code: int | None = None
        self.stopping = False
        self.quick = False
        self.last_recycle = ""
        self.last_status = ""
        self.next_watchdog = 0.0
        self.next_sample = 0.0
        self.pid = os.getpid()

    # ------------------------------------------------------------------ hooks

    def resolve(self) -> None:
        """Turn "auto" settings into numbers (workers from the cgroup budget)."""
        if self.config.workers is not None:
            self.num_workers = self.config.workers
            return
        from procslice.limits import read_budget, workers_for

        try:
            self.num_workers = workers_for(read_budget(), self.model)
        except (OSError, ValueError) as exc:
            self.num_workers = len(os.sched_getaffinity(0)) or 1
            log.warning("cannot read the cgroup budget (%s): %d workers", exc, self.num_workers)

    def on_start(self) -> None:
        """Called once the sockets are bound, before the first fork."""

    def worker_spec(self, slot: int, hb_fd: int) -> WorkerSpec:
        """What a new worker in ``slot`` gets."""
        return WorkerSpec(
            config=self.config,
            listeners=self.listeners_for(slot),
            slot=slot,
            heartbeat_fd=hb_fd,
            master_pid=self.pid,
        )

    def split_listeners(self) -> None:
        """Decide which sockets get one per slot; open those of the first slots."""
        self.spread = [listener.reuseport for listener in self.listeners]
        for listener, spread in zip(self.listeners, self.spread, strict=True):
            listener.shared = not spread
        for slot in range(self.num_workers):
            self.listeners_for(slot)

    def listeners_for(self, slot: int) -> list[Listener]:
        """The listening sockets of worker ``slot`` (opened on first use)."""
        mine = self.slot_listeners.get(slot)
        if mine is not None:
            return mine
        mine = []
        for index, primary in enumerate(self.listeners):
            if slot == 0 or not self.spread[index]:
                mine.append(primary)
                continue
            try:
                mine.append(reuseport_twin(primary))
            except OSError as exc:
                log.warning(
                    "%s: cannot open a SO_REUSEPORT socket per worker (%s): "
                    "the workers share one socket",
                    primary.name,
                    exc.strerror or exc,
                )
                self.spread[index] = False
                primary.shared = True
                mine.append(primary)
        self.slot_listeners[slot] = mine
        return mine

    def release_slot(self, slot: int) -> None:
        """Close the master's copies of a removed slot's own sockets."""
        for listener in self.slot_listeners.pop(slot, []):
            if not any(listener is primary for primary in self.listeners):
                with contextlib.suppress(OSError):
                    listener.sock.close()

    def all_listeners(self) -> list[Listener]:
        """Every listening socket the master holds."""
        result = list(self.listeners)
        for mine in self.slot_listeners.values():
            result += [ls for ls in mine if not any(ls is known for known in result)]
        return result

    def child_fds(self, kind: str) -> list[int]:
        """Descriptors of the master a forked child of ``kind`` must close."""
        fds = [self.wakeup_r, self.wakeup_w]
        fds += [c.hb_fd for c in self.children.values() if c.hb_fd is not None]
        if self.metrics is not None:
            fds += self.metrics.fds()
        if self.notifier.sock is not None:
            fds.append(self.notifier.sock.fileno())
        if self.statsd is not None:
            fds.append(self.statsd.sock.fileno())
        return fds

    def spawn_task_worker(self, slot: int) -> None:
        """Start task worker ``slot`` (swoole only)."""

    def preload(self) -> None:
        """Import the serving machinery (never the app) once, so forked workers boot fast."""
        import importlib

        for module in ("procslice.asgi", "uvloop"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)

    def sample(self) -> None:
        """Once a second: read every child's RSS (swoole adds memory recycling)."""
        for child in self.children.values():
            rss = read_rss(child.pid)
            if rss is not None:
                child.rss = rss

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Serve until stopped; the process exit code."""
        self.pid = os.getpid()
        self.install_signals()
        try:
            self.listeners = listeners(self.config.listen)
        except OSError as exc:
            log.error("%s", exc.strerror or exc)
            return BOOT_ERROR
        if self.config.metrics_listen:
            registry = registry_for(self.snapshot)
            try:
                self.metrics = MetricsServer(self.config.metrics_listen, lambda: render(registry))
            except OSError as exc:
                log.error("%s", exc.strerror or exc)
                return BOOT_ERROR
            log.info("metrics on http://%s/metrics", self.config.metrics_listen)
        if self.config.statsd:
            try:
                self.statsd = StatsdClient(
                    self.config.statsd, self.config.statsd_prefix, self.config.dogstatsd_tags
                )
            except (OSError, ValueError) as exc:
                log.warning("statsd %s: not sending: %s", self.config.statsd, exc)
            else:
                log.info("statsd: figures to %s every %.0f s", self.config.statsd, FLUSH_INTERVAL)
        self.resolve()
        self.split_listeners()
        self.on_start()
        self.preload()
        log.info(
            "procslice %s master %d: %d worker(s)%s, app %s",
            self.model,
            self.pid,
            self.num_workers,
            f", {self.num_task_workers} task worker(s)" if self.num_task_workers else "",
            self.config.app,
        )
        try:
            self.heal()
            while not self.stopping and self.halt_code is None:
                self.wait()
                self.process_signals()
                self.read_heartbeats()
                self.reap()
                if self.stopping or self.halt_code is not None:
                    break
                self.tick()
            if self.halt_code is not None:
                reason = EXIT_REASONS.get(self.halt_code, "failed")
                log.error("halting: a worker %s (exit code %d)", reason, self.halt_code)
                self.stop(graceful=False, status=f"halted: a worker {reason}")
                return self.halt_code
            self.stop(graceful=not self.quick)
            return 0
        finally:
            self.close()

    def tick(self) -> None:
        """One turn of housekeeping after reaping."""
        now = time.monotonic()
        if now >= self.next_sample:
            self.next_sample = now + 1.0
            self.sample()
        self.check_stale(now)
        self.check_stopping(now)
        self.advance_replacements(now)
        self.heal()
        self.check_ready()
        self.ping_watchdog(now)
        self.update_status()
        if self.metrics is not None:
            self.metrics.expire()
        if self.statsd is not None and now >= self.next_statsd:
            self.next_statsd = now + FLUSH_INTERVAL
            self.flush_statsd()

    def flush_statsd(self) -> None:
        """Send the process figures to StatsD (a non-blocking send; dropped on error)."""
        if self.statsd is None:
            return
        snap = self.snapshot()
        statsd_process(self.statsd, snap, self.statsd_last)
        self.statsd_last = snap
        self.statsd.flush()

    # ------------------------------------------------------------------ signals

    def install_signals(self) -> None:
        """Record signals in a queue; a self-pipe wakes the select."""
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        for sig in self.handled_signals:
            signal.signal(sig, self.record_signal)

    def record_signal(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: only records the signal."""
        self.signal_queue.append(signum)

    def process_signals(self) -> None:
        """Run handle_<signame> for every recorded signal, in order."""
        while self.signal_queue:
            signum = self.signal_queue.pop(0)
            name = signal.Signals(signum).name[3:].lower()
            handler: Callable[[], None] | None = getattr(self, f"handle_{name}", None)
            if handler is not None:
                handler()

    def handle_chld(self) -> None:
        """SIGCHLD: a child exited; the loop reaps it."""

    def handle_term(self) -> None:
        """SIGTERM: stop gracefully, draining every worker."""
        if not self.stopping:
            log.info(
                "SIGTERM: stopping gracefully (max_wait_time %.1f s)", self.config.max_wait_time
            )
        self.stopping = True

    def handle_int(self) -> None:
        """SIGINT: stop quickly."""
        self.handle_quit()

    def handle_quit(self) -> None:
        """SIGQUIT: stop quickly (workers exit without draining)."""
        log.info("quick stop")
        self.quick = True
        if self.stopping:  # a second signal during a graceful stop: hurry
            self.signal_children(signal.SIGQUIT)
        self.stopping = True

    def handle_hup(self) -> None:
        """SIGHUP: reload the config and replace workers one at a time."""
        if self.stopping:
            return
        if self.reload_config is not None:
            try:
                config = self.reload_config()
            except ConfigError as exc:
                log.error("reload: keeping the running configuration: %s", exc)
            else:
                if config.listen != self.config.listen:
                    log.warning("reload: listen changes need a restart; keeping the sockets")
                self.config = replace(config, listen=self.config.listen)
                self.resolve()
        log.info("SIGHUP: reloading %d worker(s) one at a time", self.num_workers)
        self.reloading = True
        self.notifier.reloading(status="reloading")
        for child in sorted(self.workers(), key=lambda c: c.slot):
            if child.reason is None and child.replaces is None:
                self.request_replacement(child, "reload")
        for child in list(self.children.values()):
            if child.kind == "task" and child.state != "stopping":
                self.stop_child(child)  # heal starts a new one at once
        self.check_reload_done()

    def handle_ttin(self) -> None:
        """SIGTTIN: run one more worker."""
        self.num_workers += 1
        log.info("SIGTTIN: %d worker(s)", self.num_workers)

    def handle_ttou(self) -> None:
        """SIGTTOU: run one worker fewer (at least one)."""
        if self.num_workers > 1:
            self.num_workers -= 1
            log.info("SIGTTOU: %d worker(s)", self.num_workers)

    # ------------------------------------------------------------------ waiting

    def wait(self, timeout: float = LOOP_TIMEOUT) -> None:
        """Sleep until a signal, a heartbeat, a scrape, or ``timeout``."""
        poller = select.poll()
        poller.register(self.wakeup_r, select.POLLIN)
        for child in self.children.values():
            if child.hb_fd is not None:
                poller.register(child.hb_fd, select.POLLIN)
        if self.metrics is not None:
            for fd in self.metrics.read_fds():
                poller.register(fd, select.POLLIN)
            for fd in self.metrics.write_fds():
                poller.register(fd, select.POLLOUT)
        try:
            events = poller.poll(timeout * 1000)
        except InterruptedError:
            return
        ready = [fd for fd, _ in events]
        if self.wakeup_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wakeup_r, 4096):
                    pass
        if self.metrics is not None:
            metric_fds = set(self.metrics.fds())
            for fd in ready:
                if fd in metric_fds:
                    self.metrics.handle(fd)

    # ------------------------------------------------------------------ children

    def workers(self) -> list[Child]:
        """Serving-kind children that are not stopping."""
        return [c for c in self.children.values() if c.kind == "worker" and c.state != "stopping"]

    def fork(self, kind: str, slot: int, body: Callable[[int], int]) -> Child:
        """Fork a child running ``body(heartbeat_write_fd)``; the child never returns."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_fd)
                self.after_fork(kind, slot)
                code = body(write_fd)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s %d failed", kind, slot)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        child = Child(pid=pid, kind=kind, slot=slot, hb_fd=read_fd)
        self.children[pid] = child
        return child

    def after_fork(self, kind: str, slot: int) -> None:
        """In the child: reset the inherited signal handlers, close the master's fds."""
        signal.set_wakeup_fd(-1)
        for sig in self.handled_signals:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for fd in self.child_fds(kind):
            with contextlib.suppress(OSError):
                os.close(fd)
        keep = self.slot_listeners.get(slot, []) if kind == "worker" else []
        for listener in self.all_listeners():
            if not any(listener is mine for mine in keep):
                with contextlib.suppress(OSError):
                    listener.sock.close()  # another slot's socket: not ours to hold
        logs.set_role(f"task {slot}" if kind == "task" else f"worker {slot}")
        self.children.clear()

    def spawn_worker(self, slot: int, replaces: int | None = None) -> Child:
        """Fork a serving worker for ``slot``."""
        self.listeners_for(slot)  # opened in the master, before the fork
        child = self.fork("worker", slot, lambda fd: run_worker(self.worker_spec(slot, fd)))
        child.replaces = replaces
        log.debug("spawned %s", child.name)
        return child

    def stop_child(self, child: Child, sig: int = signal.SIGTERM) -> None:
        """Ask ``child`` to drain and exit."""
        child.state = "stopping"
        child.stop_sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)

    def signal_children(self, sig: int) -> None:
        """Send ``sig`` to every child."""
        for child in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)

    def heal(self) -> None:
        """Start missing workers and task workers; stop those past the wanted count."""
        if self.stopping or self.halt_code is not None:
            return
        removed = [c for c in self.workers() if c.slot >= self.num_workers]
        for slot in [s for s in self.slot_listeners if s >= self.num_workers]:
            self.release_slot(slot)  # before the drain: the worker closes the last copy
        for child in removed:
            log.info("stopping %s (fewer workers wanted)", child.name)
            self.stop_child(child)
        if time.monotonic() < self.backoff_until:
            return
        filled = {c.slot for c in self.workers()}
        tasks = {
            c.slot for c in self.children.values() if c.kind == "task" and c.state != "stopping"
        }
        try:
            for slot in range(self.num_workers):
                if slot not in filled:
                    self.spawn_worker(slot)
            for slot in range(self.num_task_workers):
                if slot not in tasks:
                    self.spawn_task_worker(slot)
        except OSError as exc:  # EAGAIN at TasksMax, ENOMEM: try again after a back-off
            log.error("cannot fork: %s", exc)
            self.note_crash()

    def reap(self) -> None:
        """Collect exited children (waitpid WNOHANG) and decide what each exit means."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.read_heartbeat(child)
            if child.hb_fd is not None:
                os.close(child.hb_fd)
                child.hb_fd = None
            if child.kind == "worker":
                self.retired_served += child.served
                if child.http is not None:
                    self.retired_http.add(child.http)
            self.on_exit(child, os.waitstatus_to_exitcode(status))

    def on_exit(self, child: Child, code: int) -> None:
        """Log an exit and act on it: nothing, abort a replacement, halt, or count a crash."""
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if child.state == "stopping":
            if code in (0, -signal.SIGTERM, -signal.SIGQUIT):
                log.info("%s exited (%s)", child.name, how)
            else:
                log.warning("%s exited with %s while stopping", child.name, how)
            return
        if child.kind == "task" and code == 0 and not self.stopping:
            log.info("%s retired after task_max_request", child.name)
            self.restarts["max_request"] += 1
            return
        if code in EXIT_REASONS:
            reason = EXIT_REASONS[code]
            if child.replaces is not None and child.replaces in self.children:
                log.error(
                    "replacement %s %s (exit code %d): keeping the old worker serving",
                    child.name,
                    reason,
                    code,
                )
                self.abort_replacements(f"the new worker {reason}")
            elif not self.stopping:
                log.error("%s %s (exit code %d)", child.name, reason, code)
                self.halt_code = code
            return
        if code == -signal.SIGKILL:
            log.error(
                "%s was killed by SIGKILL: possible OOM kill (last RSS %.1f MiB%s)",
                child.name,
                child.rss / MiB,
                f", memory_limit {self.memory_limit / MiB:.1f} MiB" if self.memory_limit else "",
            )
        else:
            log.error("%s died unexpectedly (%s)", child.name, how)
        if self.stopping:
            return
        self.restarts["crash"] += 1
        if child.replaces is not None and self.current is not None and self.current[1] == child.pid:
            old = self.children.get(child.replaces)
            self.current = None
            if old is not None and old.reason is not None:
                self.replace_queue.append(old.pid)  # try again, after any back-off
        self.note_crash()

    @property
    def memory_limit(self) -> int:
        """RSS above which a worker is recycled (0: off)."""
        return 0

    def note_crash(self) -> None:
        """Count a crash; back off exponentially when crashes flap."""
        now = time.monotonic()
        self.crash_times.append(now)
        while self.crash_times and now - self.crash_times[0] > FLAP_WINDOW:
            self.crash_times.popleft()
        recent = len(self.crash_times)
        if recent > self.flap_threshold:
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (recent - self.flap_threshold - 1))
            self.backoff_until = now + delay
            log.warning(
                "%d crashes in %.0f s: flapping; waiting %.1f s before respawning",
                recent,
                FLAP_WINDOW,
                delay,
            )

    # ------------------------------------------------------------------ heartbeats

    def read_heartbeats(self) -> None:
        """Read every worker's pending heartbeat lines."""
        for child in list(self.children.values()):
            self.read_heartbeat(child)

    def read_heartbeat(self, child: Child) -> None:
        """Read and apply ``child``'s pending heartbeat lines."""
        if child.hb_fd is None:
            return
        data = b""
        while True:
            try:
                chunk = os.read(child.hb_fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    chunk = b""
                else:
                    continue
            if not chunk:
                os.close(child.hb_fd)
                child.hb_fd = None
                break
            data += chunk
        if not data:
            return
        *lines, child.buffer = (child.buffer + data).split(b"\n")
        for line in lines:
            try:
                beat = json.loads(line)
            except ValueError:
                continue
            self.on_heartbeat(child, beat)

    def on_heartbeat(self, child: Child, beat: dict[str, object]) -> None:
        """Apply one heartbeat."""
        child.last_beat = time.monotonic()
        if child.stale:
            child.stale = False
            log.info("%s heartbeats again", child.name)
        for key in ("served", "inflight", "rss"):
            value = beat.get(key)
            if isinstance(value, int):
                setattr(child, key, value)
        lag = beat.get("lag")
        if isinstance(lag, int | float):
            child.lag = float(lag)
        http = HttpTotals.from_beat(beat.get("http"))
        if http is not None:
            child.http = http
        if beat.get("state") == "serving" and child.state == "booting":
            child.state = "serving"
            log.info("%s serving", child.name)
        if beat.get("retire") == "max_request" and child.state == "serving":
            self.request_replacement(child, "max_request")

    def check_stale(self, now: float) -> None:
        """Log serving workers whose heartbeats stopped."""
        for child in self.workers():
            if (
                child.state == "serving"
                and not child.stale
                and now - child.last_beat > HEARTBEAT_TIMEOUT
            ):
                child.stale = True
                log.warning(
                    "%s sent no heartbeat for %.1f s (blocked event loop?)%s",
                    child.name,
                    now - child.last_beat,
                    "; withholding WATCHDOG=1" if self.notifier.watchdog_interval else "",
                )

    def check_stopping(self, now: float) -> None:
        """SIGKILL a retired worker still draining well past max_wait_time."""
        limit = self.config.max_wait_time + KILL_MARGIN
        for child in self.children.values():
            if child.state == "stopping" and child.stop_sent and now - child.stop_sent > limit:
                log.warning("%s still draining after %.1f s: SIGKILL", child.name, limit)
                child.stop_sent = None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ replacement

    def request_replacement(self, child: Child, reason: str) -> None:
        """Queue ``child`` for a graceful replacement (new one serving, then drain the old)."""
        if child.reason is not None or child.state == "stopping" or self.stopping:
            return
        child.reason = reason
        self.replace_queue.append(child.pid)

    def advance_replacements(self, now: float) -> None:
        """Move the one replacement in progress along; start the next one."""
        if self.current is not None:
            old_pid, new_pid = self.current
            new = self.children.get(new_pid)
            old = self.children.get(old_pid)
            if new is None:
                self.current = None
            elif new.state == "serving":
                self.current = None
                new.replaces = None
                reason = old.reason if old is not None else "reload"
                if old is not None and old.state != "stopping":
                    self.stop_child(old)
                    log.info("%s replaced %s (%s)", new.name, old.name, reason)
                self.restarts[reason or "reload"] += 1
                self.last_recycle = f"worker {new.slot} {reason}"
            elif now - new.started > BOOT_TIMEOUT:
                log.error("%s not serving after %.0f s: killing it", new.name, BOOT_TIMEOUT)
                self.stop_child(new, signal.SIGKILL)
                self.current = None
                self.abort_replacements("a new worker did not start")
        while self.current is None and self.replace_queue and now >= self.backoff_until:
            old = self.children.get(self.replace_queue.popleft())
            if old is None or old.state == "stopping":
                continue
            new = self.spawn_worker(old.slot, replaces=old.pid)
            self.current = (old.pid, new.pid)
        self.check_reload_done()

    def abort_replacements(self, why: str) -> None:
        """Give up on queued replacements; the old workers keep serving."""
        for pid in [*self.replace_queue, *([self.current[0]] if self.current else [])]:
            child = self.children.get(pid)
            if child is not None:
                child.reason = None
        self.replace_queue.clear()
        self.current = None
        if self.reloading:
            self.reloading = False
            log.error("reload aborted: %s", why)
            self.notifier.ready(status=f"reload failed: {why}; old workers serving")

    def check_reload_done(self) -> None:
        """READY=1 again once the last worker of a reload is replaced."""
        if self.reloading and self.current is None and not self.replace_queue:
            self.reloading = False
            log.info("reload complete")
            self.notifier.ready(status=self.status_line())

    # ------------------------------------------------------------------ systemd

    def serving_count(self) -> int:
        """Slots with a serving worker."""
        return len({c.slot for c in self.workers() if c.state == "serving"})

    def check_ready(self) -> None:
        """READY=1 once every worker (and task worker) is up."""
        if self.ready_sent or self.serving_count() < self.num_workers:
            return
        tasks = sum(1 for c in self.children.values() if c.kind == "task" and c.state != "stopping")
        if tasks < self.num_task_workers:
            return
        self.ready_sent = True
        log.info("ready: %d worker(s) serving", self.num_workers)
        self.notifier.ready(status=self.status_line())
        self.last_status = self.status_line()

    def ping_watchdog(self, now: float) -> None:
        """WATCHDOG=1 at half the interval, only while every serving worker heartbeats."""
        interval = self.notifier.watchdog_interval
        if not interval or now < self.next_watchdog:
            return
        self.next_watchdog = now + interval / 2
        if not any(c.stale for c in self.workers()):
            self.notifier.watchdog()

    def status_line(self) -> str:
        """The STATUS= text."""
        text = f"workers {self.serving_count()}/{self.num_workers} up"
        if self.num_task_workers:
            tasks = sum(
                1 for c in self.children.values() if c.kind == "task" and c.state != "stopping"
            )
            text += f"; task workers {tasks}/{self.num_task_workers}"
        if self.reloading:
            text += "; reloading"
        if self.last_recycle:
            text += f"; last recycle: {self.last_recycle}"
        return text

    def update_status(self) -> None:
        """Send STATUS= when it changed."""
        status = self.status_line()
        if status != self.last_status and self.ready_sent:
            self.last_status = status
            self.notifier.status(status)

    def snapshot(self) -> Snapshot:
        """The metrics view of the workers."""
        workers = [c for c in self.children.values() if c.kind == "worker"]
        http = HttpTotals()
        for totals in (self.retired_http, *(c.http for c in workers)):
            if totals is not None:
                http.add(totals)
        return Snapshot(
            workers=self.serving_count(),
            restarts=dict(self.restarts),
            samples=[WorkerSample(c.slot, c.pid, c.rss, c.lag, c.inflight) for c in workers],
            requests_total=self.retired_served + sum(c.served for c in workers),
            task_workers=sum(1 for c in self.children.values() if c.kind == "task"),
            http=http,
        )

    # ------------------------------------------------------------------ stopping

    def stop(self, graceful: bool = True, status: str = "stopping") -> None:
        """STOPPING=1; SIGTERM (or SIGQUIT), wait, SIGKILL, a last reap."""
        self.stopping = True
        self.notifier.stopping(status=status)
        self.signal_children(signal.SIGTERM if graceful else signal.SIGQUIT)
        for child in self.children.values():
            child.state = "stopping"
        limit = self.config.max_wait_time + KILL_MARGIN if graceful else 2.0
        deadline = time.monotonic() + limit
        while self.children and time.monotonic() < deadline:
            self.wait(0.1)
            self.process_signals()
            self.read_heartbeats()
            self.reap()
        for child in list(self.children.values()):
            log.warning("%s still running after %.1f s: SIGKILL", child.name, limit)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        end = time.monotonic() + 5.0
        while self.children and time.monotonic() < end:
            self.reap()
            time.sleep(0.02)
        self.flush_statsd()
        log.info("stopped")

    def close(self) -> None:
        """Release the master's descriptors."""
        if self.metrics is not None:
            self.metrics.close()
        if self.statsd is not None:
            self.statsd.close()
        for listener in self.all_listeners():
            with contextlib.suppress(OSError):
                listener.sock.close()
            if not listener.activated and listener.name.startswith("unix:"):
                with contextlib.suppress(OSError):
                    os.unlink(listener.name[len("unix:") :])
        signal.set_wakeup_fd(-1)
        for fd in (self.wakeup_r, self.wakeup_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.notifier.close()


def run_master(args: argparse.Namespace, model: Model, cls: type[Master]) -> int:
    """``procslice aio|swoole``: build the config from ``args``, run ``cls``; the exit code."""
    try:
        config = from_args(args, model)
    except ConfigError as exc:
        print(f"procslice {model}: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    logs.setup(config.log_level)
    try:
        return cls(config, reload_config=lambda: from_args(args, model)).run()
    except Exception:
        log.exception("the master failed")
        return 1
