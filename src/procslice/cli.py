"""The ``procslice`` command: ``limits``, ``aio``, ``swoole`` and ``status`` subcommands.

Exit codes: 0 success, 1 unexpected error, 2 bad usage or configuration, 3 a worker
could not boot (or the sockets could not be bound), 4 the app failed to load.
"""

from __future__ import annotations

import argparse

from procslice import __version__, aio, cli_limits, status, swoole

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; the exit code."""
    parser = argparse.ArgumentParser(
        prog="procslice",
        description="The procslice runtime: cgroup-aware sizing, the aio and swoole "
        "supervisors, and the status of a host's services.",
    )
    parser.add_argument("--version", action="version", version=f"procslice {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_limits.add_parser(subparsers)
    aio.add_parser(subparsers)
    swoole.add_parser(subparsers)
    status.add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))
