"""Shared fixtures: start procslice supervisors as real processes on loopback.

``start_supervisor("swoole", "--workers", "2")`` runs ``python -m procslice swoole
hello:app --listen 127.0.0.1:<free port> ...`` with the test apps (tests/apps) on the
path, in its own session, logging to a file; teardown stops it (SIGTERM, then SIGKILL
to its process group) so no worker outlives the test.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
APPS = TESTS / "apps"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a supervisor: src/ and tests/apps/ importable, no systemd vars."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(APPS)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Supervisor:
    """A running ``procslice`` master and how to talk to it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, log_path: Path, metrics_port: int | None
    ) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.metrics_port = metrics_port

    @property
    def pid(self) -> int:
        """The master's pid."""
        return self.proc.pid

    def get(
        self, path: str = "/", timeout: float = 10.0, port: int | None = None
    ) -> tuple[int, str]:
        """One GET on a fresh connection: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def try_get(self, path: str = "/") -> tuple[int, str] | None:
        """Like :meth:`get`, None when nothing answers yet."""
        try:
            return self.get(path, timeout=2.0)
        except OSError:
            return None

    def wait_serving(self, timeout: float = 20.0) -> None:
        """Wait until GET / answers 200."""

        def ok() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited {self.proc.returncode}:\n{self.log()}")
            result = self.try_get("/")
            return result is not None and result[0] == 200

        wait_until(ok, timeout, "the supervisor to serve")

    def log(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        """Wait until ``text`` appears in the log."""
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in the log")

    def children(self) -> list[int]:
        """The master's child processes."""
        return children_of(self.pid)

    def metrics(self) -> str:
        """The Prometheus exposition from metrics_listen."""
        assert self.metrics_port is not None
        status, body = self.get("/metrics", port=self.metrics_port)
        assert status == 200
        return body

    def metric(self, line_prefix: str) -> float | None:
        """The value of the first metric line starting with ``line_prefix``."""
        for line in self.metrics().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.split()[-1])
        return None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the master."""
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the master and wait; its exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the master's whole process group (teardown)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


StartSupervisor = Callable[..., Supervisor]


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[StartSupervisor]:
    """A factory starting supervisors; all of them are stopped and killed at teardown."""
    started: list[Supervisor] = []

    def start(
        model: str,
        *args: str,
        app: str | None = "hello:app",
        listen: bool = True,
        metrics: bool = False,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
        wait: bool = True,
    ) -> Supervisor:
        port = free_port()
        metrics_port = free_port() if metrics else None
        command = [*(prefix or [sys.executable]), "-m", "procslice", model]
        if app is not None:
            command.append(app)
        if listen:
            command += ["--listen", f"127.0.0.1:{port}"]
        if metrics_port is not None:
            command += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
        command += list(args)
        log_path = tmp_path / f"supervisor-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                command,
                cwd=tmp_path,
                env=child_env(**(env or {})),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        supervisor = Supervisor(proc, port, log_path, metrics_port)
        started.append(supervisor)
        if wait:
            supervisor.wait_serving()
        return supervisor

    yield start
    for supervisor in started:
        try:
            supervisor.stop(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            supervisor.kill_all()
