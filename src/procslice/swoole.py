"""``procslice swoole``: a Swoole-style master with recycling workers and task workers.

The master (:class:`SwooleMaster`, built on :class:`procslice.master.Master`) owns
the sockets and runs ``workers`` (Swoole's worker_num) serving workers, each an
asyncio loop with the app (see :mod:`procslice.worker`), plus:

* ``max_request`` (+ random 0..``max_request_grace``): a worker past its count asks
  for a replacement; the master starts the new worker, waits until it serves, then
  drains the old one;
* ``memory_limit``: the master reads each worker's RSS from /proc/<pid>/statm every
  second and recycles the same graceful way a worker above the limit, before the
  slice's MemoryMax would OOM-kill it.  "auto" is ``memory_limit_per_worker`` of the
  cgroup budget (off when the cgroup has no memory limit);
* ``cpu_affinity``: worker i pinned to ``cpu_affinity_map(budget, workers)[i]``;
* crash respawn, backing off exponentially after more than 5 crashes in 10 s;
* ``task_worker_num`` task workers for :func:`task` (``task_max_request`` each);
* SIGHUP reload one worker at a time, SIGTTIN/SIGTTOU to add/remove a worker.

App code reaches the task workers with::

    from procslice.swoole import task
    result = await task("myapp.jobs:render", 42)
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

from procslice.config import add_arguments
from procslice.limits import Budget, cpu_affinity_map, memory_limit_per_worker, read_budget
from procslice.master import Master, MiB, run_master
from procslice.tasks import TaskError, bind_task_socket, run_task_worker, task
from procslice.worker import WorkerSpec

__all__ = ["SwooleMaster", "TaskError", "add_parser", "run", "task"]

log = logging.getLogger("procslice.swoole")


class SwooleMaster(Master):
    """The swoole master: the shared master plus recycling, pinning and task workers."""

    model = "swoole"
    flap_threshold = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_sock: socket.socket | None = None
        self.budget: Budget | None = None
        self.rss_limit = 0

    @property
    def memory_limit(self) -> int:
        """RSS above which a worker is recycled (0: off)."""
        return self.rss_limit

    def resolve(self) -> None:
        """Workers, task workers and the memory limit from the config and the budget."""
        try:
            self.budget = read_budget()
        except (OSError, ValueError) as exc:
            log.warning("cannot read the cgroup budget: %s", exc)
            self.budget = None
        super().resolve()
        self.num_task_workers = self.config.task_worker_num
        if self.config.memory_limit is not None:
            self.rss_limit = self.config.memory_limit
        elif self.budget is not None:
            self.rss_limit = memory_limit_per_worker(self.budget, self.num_workers) or 0
        else:
            self.rss_limit = 0
        if self.rss_limit:
            log.info("memory_limit: recycling workers above %.1f MiB RSS", self.rss_limit / MiB)

    def on_start(self) -> None:
        """Bind the task workers' socket."""
        if self.num_task_workers or self.config.task_worker_num:
            self.task_sock = bind_task_socket()

    def worker_spec(self, slot: int, hb_fd: int) -> WorkerSpec:
        """Add max_request and CPU pinning to the shared spec."""
        spec = super().worker_spec(slot, hb_fd)
        spec.max_request = self.config.max_request
        spec.max_request_grace = self.config.max_request_grace
        if self.config.cpu_affinity and self.budget is not None:
            spec.affinity = cpu_affinity_map(self.budget, max(self.num_workers, slot + 1))[slot]
        return spec

    def child_fds(self, kind: str) -> list[int]:
        """Serving workers close the task socket (every child closes foreign listeners)."""
        fds = super().child_fds(kind)
        if kind != "task" and self.task_sock is not None:
            fds.append(self.task_sock.fileno())
        return fds

    def spawn_task_worker(self, slot: int) -> None:
        """Fork task worker ``slot``."""
        if self.task_sock is None:
            self.task_sock = bind_task_socket()
        sock = self.task_sock

        def body(hb_fd: int) -> int:
            os.close(hb_fd)  # task workers do not heartbeat: they block in their tasks
            return run_task_worker(sock, self.config.task_max_request, self.pid)

        child = self.fork("task", slot, body)
        child.state = "serving"

    def sample(self) -> None:
        """Read RSS; recycle serving workers above memory_limit."""
        super().sample()
        if not self.rss_limit:
            return
        for child in self.workers():
            if child.state == "serving" and child.reason is None and child.rss > self.rss_limit:
                log.warning(
                    "%s RSS %.1f MiB crossed memory_limit %.1f MiB: recycling it",
                    child.name,
                    child.rss / MiB,
                    self.rss_limit / MiB,
                )
                self.request_replacement(child, "memory")

    def close(self) -> None:
        """Also close the task socket."""
        super().close()
        if self.task_sock is not None:
            self.task_sock.close()


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``swoole`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "swoole",
        help="run a Swoole-style master with recycling workers and task workers",
        description="Run an ASGI app or a raw asyncio protocol factory under a master that "
        "recycles workers (max_request, memory_limit), pins them, reloads them one at a "
        "time and runs task workers.",
    )
    add_arguments(parser, "swoole")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the swoole master; its exit code."""
    return run_master(args, "swoole", SwooleMaster)
