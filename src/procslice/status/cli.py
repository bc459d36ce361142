"""The ``status`` subcommand: a table, JSON, or the exporter."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from procslice.status.collection import (
    RUNTIME_ADDRESSES,
    ServiceStatus,
    collect,
    host_document,
    read_drained,
)
from procslice.status.exporter import serve
from procslice.status.table import documents_of, format_table


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 to 60 seconds")
    return value


def _health_arg(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not re.match(r"(https?|tcp)://", url):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=URL (e.g. api=http://127.0.0.1:8000/healthz)"
        )
    return name, url


def _address_arg(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if (
        not sep
        or not name
        or not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):[0-9]{1,5}$", address)
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=HOST:PORT (e.g. api=127.0.0.1:9003)"
        )
    return name, address


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``status`` subcommand (sets ``func=run``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="every procslice service of this host against its limits (table, JSON, exporter)",
        description="Every procslice-<name>.service of this host: model, release, workers, "
        "CPU against its quota, memory against MemoryMax and MemoryHigh, tasks against "
        "TasksMax, restarts and their reasons, health.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="S",
        help="seconds over which CPU use is sampled (default 1; 0: no CPU %%)",
    )
    parser.add_argument(
        "--health",
        type=_health_arg,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the health URL of a service (default: the one its health gate last used)",
    )
    parser.add_argument("--no-health", action="store_true", help="do not ask the health URLs")
    parser.add_argument(
        "--runtime-metrics",
        type=_address_arg,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="with --serve: a gunicorn, aio or swoole service's metrics_listen, served "
        "onwards (default: read from /etc/procslice/NAME/procslice.toml or gunicorn.conf.py)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="print the table of a JSON document collected earlier ('-': stdin)",
    )
    parser.add_argument(
        "--serve",
        metavar="HOST:PORT",
        help="serve the figures as Prometheus metrics on http://HOST:PORT/metrics",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``procslice status``: the exit code."""
    if args.source:
        try:
            if args.source == "-":
                data = json.load(sys.stdin)
            else:
                with open(args.source, encoding="utf-8") as handle:
                    data = json.load(handle)
            documents = documents_of(data)
        except (OSError, ValueError) as exc:
            print(f"procslice status: {args.source}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(documents, indent=2) if args.json else format_table(documents))
        return 0

    health_urls = dict(args.health)
    RUNTIME_ADDRESSES.update(dict(args.runtime_metrics))

    def collect_now(interval: float) -> list[ServiceStatus]:
        return collect(
            interval=interval,
            health_urls=health_urls,
            health=not args.no_health,
        )

    if args.serve:
        try:
            serve(args.serve, lambda: collect_now(0.0))
        except (OSError, ValueError) as exc:
            print(f"procslice status: --serve {args.serve}: {exc}", file=sys.stderr)
            return 3 if isinstance(exc, OSError) else 2
        return 0
    try:
        statuses = collect_now(args.interval)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"procslice status: {exc}", file=sys.stderr)
        return 1
    document = host_document(statuses, args.interval, drained=read_drained())
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(format_table([document]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``procslice status ...`` on a host: /usr/local/bin/procslice runs
    ``python -m procslice.status`` of the host runtime (procslice.status.__main__)."""
    parser = argparse.ArgumentParser(
        prog="procslice",
        description="procslice on a host: the status of its services.",
        epilog="limits, aio and swoole are commands of the runtime in each service's "
        "virtualenv (/srv/procslice/<name>/current/venv/bin/procslice), where they see "
        "the service's budget.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))
