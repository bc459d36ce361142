"""Swoole-style task workers: run a function in another process and await its result.

The swoole master binds one listening unix socket in the abstract namespace (its
address in ``$PROCSLICE_TASK_SOCKET``, inherited by every worker) and forks
``task_worker_num`` task workers that accept on it, one task at a time.  A worker's
app code calls::

    from procslice.swoole import task
    total = await task("myapp.jobs:resize", image_id, width=640)

which connects, sends the pickled call, and awaits the pickled result; an exception
raised by the function is raised again in the caller.  The kernel queues the
connection until a task worker is free, so busy task workers apply back-pressure and
idle ones share the load.  A task worker exits after ``task_max_request`` tasks and
the master starts another.  The function may be a coroutine function (run with
``asyncio.run`` in the task worker).  Arguments and results must pickle.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pickle
import secrets
import signal
import socket
import struct
from collections.abc import Callable
from types import FrameType
from typing import Any

from procslice.worker import load_target

__all__ = ["ENV", "TaskError", "bind_task_socket", "run_task_worker", "task"]

ENV = "PROCSLICE_TASK_SOCKET"
_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 256 * 1024 * 1024

log = logging.getLogger("procslice.tasks")


class TaskError(RuntimeError):
    """The task could not run (no task workers, a task worker died, unpicklable data)."""


def bind_task_socket() -> socket.socket:
    """Bind the task workers' listening socket and publish its address in $PROCSLICE_TASK_SOCKET."""
    name = f"procslice-task-{os.getpid()}-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(1024)
    os.environ[ENV] = "@" + name
    return sock


def _address() -> str:
    address = os.environ.get(ENV)
    if not address:
        raise TaskError("no task workers here: procslice swoole with task_worker_num > 0 runs them")
    return "\0" + address[1:] if address.startswith("@") else address


async def task(ref: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``ref`` ("module:function") in a task worker with these arguments; its result."""
    try:
        payload = pickle.dumps((ref, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TaskError(f"task {ref}: arguments do not pickle: {exc}") from exc
    # Connect by hand: uvloop's create_unix_connection refuses abstract addresses.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, _address())
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        writer.write(_HEADER.pack(len(payload)) + payload)
        await writer.drain()
        try:
            (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
            body = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise TaskError(f"task {ref}: the task worker exited before answering") from None
    finally:
        writer.close()
    ok, value = pickle.loads(body)
    if ok:
        return value
    raise value


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = conn.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("caller went away")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class TaskWorker:
    """The loop of one task worker process."""

    def __init__(self, sock: socket.socket, max_request: int, master_pid: int) -> None:
        self.sock = sock
        self.max_request = max_request
        self.master_pid = master_pid
        self.stop = False
        self.functions: dict[str, Callable[..., Any]] = {}

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM: finish the current task, then exit."""
        self.stop = True

    def run(self) -> int:
        """Accept and run tasks until told to stop or task_max_request is reached."""
        signal.signal(signal.SIGTERM, self.handle_term)
        self.sock.settimeout(0.5)
        done = 0
        while not self.stop and os.getppid() == self.master_pid:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                conn.settimeout(None)
                self.serve(conn)
            done += 1
            if self.max_request and done >= self.max_request:
                log.info("ran %d tasks (task_max_request): exiting", done)
                break
        return 0

    def serve(self, conn: socket.socket) -> None:
        """Run one task and send its result back."""
        try:
            (size,) = _HEADER.unpack(_recv_exactly(conn, _HEADER.size))
            if size > _MAX_MESSAGE:
                raise ConnectionError(f"task message of {size} bytes refused")
            ref, args, kwargs = pickle.loads(_recv_exactly(conn, size))
        except (OSError, ConnectionError, pickle.UnpicklingError, ValueError) as exc:
            log.warning("bad task request: %s", exc)
            return
        reply: tuple[bool, Any]
        try:
            function = self.functions.get(ref)
            if function is None:
                function = self.functions[ref] = load_target(ref)
            value = function(*args, **kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
            reply = (True, value)
        except Exception as exc:
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps((False, TaskError(f"task {ref}: result does not pickle: {exc}")))
        try:
            conn.sendall(_HEADER.pack(len(data)) + data)
        except OSError as exc:
            log.warning("task %s: caller went away: %s", ref, exc)


async def _await(value: Any) -> Any:
    return await value


def run_task_worker(sock: socket.socket, max_request: int, master_pid: int) -> int:
    """The body of a forked task worker; returns its exit code."""
    return TaskWorker(sock, max_request, master_pid).run()
