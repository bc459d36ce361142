"""``procslice aio``: N asyncio processes serving the shared sockets, and their parent.

Each child runs one asyncio loop (uvloop when importable) with the app (ASGI through
uvicorn's protocol layer, or a raw ``asyncio.Protocol`` factory), a concurrency
bound, a loop-lag monitor and a bounded ``to_thread`` pool: see
:mod:`procslice.worker`.  The parent is :class:`procslice.master.Master`: it restarts
a crashed child (with exponential back-off from the second crash in ten seconds),
halts when a child cannot boot, reloads children one at a time on SIGHUP and speaks
sd_notify.  Worker recycling, pinning and task workers are ``procslice swoole``'s;
the swoole-only settings are refused here.
"""

from __future__ import annotations

import argparse
from typing import Any

from procslice.config import add_arguments
from procslice.master import Master, run_master

__all__ = ["AioParent", "add_parser", "run"]


class AioParent(Master):
    """The aio parent: the shared master with aio sizing and crash back-off."""

    model = "aio"
    flap_threshold = 1


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``aio`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "aio",
        help="run N asyncio worker processes on shared sockets",
        description="Run an ASGI app or a raw asyncio protocol factory in N asyncio "
        "processes (uvloop when available) sharing the listening sockets.",
    )
    add_arguments(parser, "aio")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the aio parent; its exit code."""
    return run_master(args, "aio", AioParent)
