"""``procslice limits``: show the cgroup budget of this process and the worker counts it implies.

``procslice.cli`` registers the subcommand with :func:`add_parser` and dispatches to
:func:`run`.  Output is a human-readable table by default, JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from procslice.data.checks import show
from procslice.limits import (
    MODELS,
    Budget,
    cpu_affinity_map,
    memory_limit_per_worker,
    parse_size,
    read_budget,
    workers_for,
)

__all__ = ["add_parser", "run"]


def _size_arg(text: str) -> int:
    """argparse ``type=`` for sizes: a clear message instead of "invalid value"."""
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{show(text)} {exc}") from exc
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the ``limits`` subcommand (sets ``func=run`` as its default)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "limits",
        help="show the cgroup CPU/memory/task budget and the worker counts it implies",
        description=(
            "Read the cgroup limits that apply to this process (CPU quota, cpuset, memory.max, "
            "memory.high, pids.max, walking up the cgroup tree) and print the worker count "
            "each process model should use."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="only show this process model (default: all of them)",
    )
    parser.add_argument(
        "--per-worker-memory",
        metavar="SIZE",
        type=_size_arg,
        default=None,
        help="expected memory of one worker, e.g. 256M or 1.5G; caps the worker count",
    )
    parser.add_argument(
        "--root",
        metavar="PATH",
        default="/",
        help="filesystem root to read /proc and /sys from (for testing; default: /)",
    )
    parser.set_defaults(func=run)


def _plan(budget: Budget, models: tuple[str, ...], per_worker: int | None) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    for model in models:
        workers = workers_for(budget, model, per_worker_memory=per_worker)
        plan[model] = {
            "workers": workers,
            "memory_limit_per_worker": memory_limit_per_worker(budget, workers),
            "cpu_affinity": [list(cpus) for cpus in cpu_affinity_map(budget, workers)],
        }
    return plan


def _human_bytes(value: int | None) -> str:
    """ "unlimited", "512 B", or e.g. "1.5 GiB (1610612736)"."""
    if value is None:
        return "unlimited"
    if value < 1024:
        return f"{value} B"
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(len(units), (value.bit_length() - 1) // 10)
    size = value / (1 << (10 * power))
    return f"{size:.1f}".removesuffix(".0") + f" {units[power - 1]} ({value})"


def _cpu_ranges(cpus: tuple[int, ...]) -> str:
    if not cpus:
        return "unknown"
    ranges: list[str] = []
    start = previous = cpus[0]
    for cpu in (*cpus[1:], None):
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(ranges)


def _cpus(value: float | None) -> str:
    if value is None:
        return "unlimited"
    return f"{value:g}"


def _table(budget: Budget, plan: dict[str, Any], per_worker: int | None) -> str:
    version = {0: "none found", 1: "v1", 2: "v2"}.get(budget.cgroup_version, "?")
    rows = [
        ("cgroup", f"{version} {budget.cgroup_path}".rstrip()),
        ("host cpus", str(budget.host_cpus)),
        ("affinity cpus", str(budget.affinity_cpus)),
        ("cpu quota", _cpus(budget.quota_cpus)),
        ("effective cpus", _cpus(budget.cpus)),
        ("allowed cpus", _cpu_ranges(budget.allowed_cpus)),
        ("memory.max", _human_bytes(budget.memory_max)),
        ("memory.high", _human_bytes(budget.memory_high)),
        ("memory budget", _human_bytes(budget.memory_budget)),
        ("tasks max", "unlimited" if budget.tasks_max is None else str(budget.tasks_max)),
        ("per-worker memory", "not given" if per_worker is None else _human_bytes(per_worker)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    header = ("model", "workers", "memory limit per worker")
    table = [header] + [
        (model, str(entry["workers"]), _human_bytes(entry["memory_limit_per_worker"]))
        for model, entry in plan.items()
    ]
    widths = [max(len(row[column]) for row in table) for column in range(2)]
    for row in table:
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]}".rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the budget and worker plan; returns the process exit status."""
    raw_size: object = getattr(args, "per_worker_memory", None)
    model: str | None = getattr(args, "model", None)
    root: str = getattr(args, "root", None) or "/"
    per_worker: int | None
    try:
        if isinstance(raw_size, str):
            per_worker = _size_arg(raw_size)
        elif raw_size is None or (isinstance(raw_size, int) and raw_size > 0):
            per_worker = raw_size
        else:
            raise ValueError(f"per-worker memory must be a positive size, got {raw_size!r}")
        if model is not None and model not in MODELS:
            raise ValueError(f"unknown model {model!r}: expected one of {', '.join(MODELS)}")
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"procslice limits: error: {exc}", file=sys.stderr)
        return 2

    budget = read_budget(root=root)
    models = (model,) if model is not None else MODELS
    plan = _plan(budget, models, per_worker)
    if getattr(args, "json", False):
        document = {"budget": budget.as_dict(), "per_worker_memory": per_worker, "models": plan}
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(_table(budget, plan, per_worker))
    return 0
