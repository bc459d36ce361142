#!/usr/bin/python3 -I
"""``procslice status``: every procslice service of this host against its limits.

What ``docker stats`` and ``systemd-cgtop`` show, for procslice services: per service
its model, release, workers, CPU use against its quota, memory against MemoryMax and
MemoryHigh, tasks against TasksMax, restarts and their reasons, and health.

    procslice status                      # a table (CPU sampled over 1 s)
    procslice status --json               # the same figures for scripts
    procslice status --from fleet.json    # a table from JSON collected earlier
    procslice status --serve 0.0.0.0:9100 # a Prometheus exporter (GET /metrics)

This file uses the standard library only: the procslice_service role installs it as
``/usr/local/bin/procslice`` on every host (no virtualenv needed), and the runtime's
``procslice`` command offers the same ``status`` subcommand (``procslice.cli``).

Where each figure comes from (the parsers are pure functions, tested on fixture text):

* The services: the units ``procslice-<name>.service`` that systemd has loaded or has
  a unit file for (``systemctl list-units`` and ``list-unit-files``).
* Their state and limits: one ``systemctl show`` for every unit and its slices
  (ActiveState, MainPID, NRestarts, Result, ExecMainCode/Status, StatusText,
  MemoryCurrent, MemoryMax, MemoryHigh, CPUQuotaPerSecUSec, TasksCurrent, TasksMax).
  These work on cgroup v1 and v2.  A limit set on none of the unit, its slice and
  procslice.slice is "-"; the tightest of them is shown, and one that comes from a
  slice (shared with the slice's other services) is marked ``^`` in the table.
* The model: from the unit's ExecStart, what systemd really runs: ``-m gunicorn``,
  ``procslice aio``, ``procslice swoole``, or ``podman``; else the "(model)" suffix of
  the Description every procslice unit template writes.
* The release: the ``current`` link named in ExecStart
  (``/srv/procslice/<name>/current/venv/bin/python``), read with readlink; else the last
  release recorded by procslice-activate in /var/lib/procslice/applied/<unit> (line 4).
  For podman, the image of the unit's Description.
* Workers: children of MainPID (gunicorn, aio, swoole: the master's workers and task
  workers); for podman, the processes of the container's cgroup (libpod-payload-<id>
  under ``--cgroups=split``), else those of the unit's cgroup tree that are not podman's
  (conmon, podman, catatonit, fuse-overlayfs, ...).
* CPU: the cumulative usage counter, read twice ``--interval`` seconds apart for all
  units together (v1 ``cpuacct.usage``; the cgroup2 ``cpu.stat`` usage_usec, present on
  v2 and in the hybrid ``unified`` tree; else CPUUsageNSec).  Throttling from the cpu
  controller's ``cpu.stat`` of the cgroup that holds the quota, the unit's or its
  slice's: a unit under a slice's quota is throttled as a part of the slice and only the
  slice counts it (v1 nr_throttled and throttled_time in ns, v2 nr_throttled and
  throttled_usec).  100% is one CPU.
* OOM kills: v1 ``memory.oom_control`` (oom_kill, summed over the unit's subtree), v2
  ``memory.events`` (oom_kill, hierarchical).  The counters start again when the unit
  restarts (a new cgroup); systemd's Result=oom-kill says the last stop was one.
* The last recycle reason of an aio or swoole worker: the "last recycle: ..." part of
  the master's STATUS= text (StatusText).
* Health: the HTTP health URL is GET with a 2 s timeout: "ok" on 200, "failing:
  <why>" otherwise, "none" without a URL.  The URL is the ``--health-url`` that
  procslice-activate last ran the unit's health gate with (it keeps its arguments in
  /var/lib/procslice/applied/<unit>.args, one a line), unless ``--health NAME=URL``
  names another (playbooks/status.yml passes the inventory's, so a fleet activated
  before the .args files existed shows its health too).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import datetime
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "SCHEMA",
    "CgroupMount",
    "CpuStat",
    "ServiceStatus",
    "add_parser",
    "collect",
    "detect_model",
    "format_size",
    "format_table",
    "main",
    "make_server",
    "parse_activate_args",
    "parse_applied",
    "parse_cpu_stat",
    "parse_exec_argv",
    "parse_io_bytes",
    "parse_mountinfo",
    "parse_oom_kills",
    "parse_proc_stat",
    "parse_show",
    "parse_timespan_usec",
    "prometheus_text",
    "run",
    "unit_slices",
]

# The version of the JSON document (``--json``); raised when a field changes meaning.
SCHEMA = 1
UNIT_RE = re.compile(r"^procslice-([a-z][a-z0-9-]*)\.service$")
SHOW_PROPERTIES: tuple[str, ...] = (
    "Id",
    "LoadState",
    "Description",
    "Slice",
    "ControlGroup",
    "ExecStart",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "StatusText",
    "NRestarts",
    "MemoryCurrent",
    "MemoryMax",
    "MemoryHigh",
    "CPUUsageNSec",
    "CPUQuotaPerSecUSec",
    "TasksCurrent",
    "TasksMax",
)
APPLIED_DIR = "/var/lib/procslice/applied"
HEALTH_TIMEOUT = 2.0
# Processes in a podman unit's cgroup that are podman's, not the container's (counted
# out when the container's own cgroup, libpod-payload-<id> under --cgroups=split, is not
# found).
PODMAN_HELPERS = frozenset(
    {"conmon", "podman", "catatonit", "fuse-overlayfs", "slirp4netns", "pasta", "rootlessport"}
)
PODMAN_PAYLOAD_PREFIX = "libpod-payload-"
# systemd prints an unset 64-bit value as this (e.g. MemoryCurrent without accounting).
_UINT64_MAX = 2**64 - 1
# cgroup v1 writes "no limit" as a huge page-aligned number.
_V1_UNLIMITED = 2**62
_MAX_READ = 65536
_SIZE_UNITS = ("K", "M", "G", "T", "P")
_TIMESPAN_UNITS: dict[str, float] = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_TIMESPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(us|µs|ms|sec|s|min|m|h|d|w)(?![a-z])")
# CLD_* codes of ExecMainCode: how the main process ended.
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3

Runner = Callable[[Sequence[str]], str]


# --------------------------------------------------------------------------- parsing


def parse_show(text: str) -> list[dict[str, str]]:
    """The units of ``systemctl show -p ... UNIT...`` output: one dict per unit."""
    units: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        units.append(current)
    return units


def _show_int(value: str | None) -> int | None:
    """An integer property; "[not set]", "infinity" and UINT64_MAX are ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        return None
    number = int(value)
    return None if number >= _UINT64_MAX else number


def parse_timespan_usec(text: str | None) -> int | None:
    """A systemd timespan ("1s", "500ms", "1.500000s", "1min 30s") in µs; ``None`` for
    "infinity", empty or unreadable values."""
    if text is None:
        return None
    text = text.strip()
    if not text or text == "infinity" or text.startswith("["):
        return None
    if text.isdigit():
        return int(text)
    total = 0.0
    end = 0
    for match in _TIMESPAN_RE.finditer(text):
        if text[end : match.start()].strip():
            return None
        total += float(match.group(1)) * _TIMESPAN_UNITS[match.group(2)]
        end = match.end()
    if end == 0 or text[end:].strip():
        return None
    return round(total)


def parse_exec_argv(text: str | None) -> list[str]:
    """The argv of the first command of an ExecStart property
    (``{ path=... ; argv[]=... ; ignore_errors=no ; ... }``)."""
    if not text:
        return []
    match = re.search(r"argv\[\]=(.*?) ; (?:ignore_errors|start_time|flags)=", text)
    return match.group(1).split() if match else []


def detect_model(argv: Sequence[str], description: str = "") -> str:
    """The procslice model of a unit from what it runs, else from its Description."""
    words = [os.path.basename(word) for word in argv]
    if words:
        if words[0] == "podman":
            return "podman"
        if "gunicorn" in words[:4]:
            return "gunicorn"
        for runtime, model in zip(words, words[1:], strict=False):
            if runtime == "procslice" and model in ("aio", "swoole"):
                return model
    match = re.search(r"\((gunicorn|aio|swoole|podman)\b[^)]*\)\s*$", description)
    return match.group(1) if match else "?"


def podman_image(description: str) -> str | None:
    """The image a podman unit's Description names: "... (podman IMAGE)"."""
    match = re.search(r"\(podman (\S+)\)\s*$", description)
    return match.group(1) if match else None


def current_link(argv: Sequence[str]) -> str | None:
    """The ``.../current`` release link that ExecStart runs through, if any."""
    for word in argv:
        index = word.find("/current/")
        if index > 0:
            return word[: index + len("/current")]
    return None


@dataclass(frozen=True)
class CpuStat:
    """The counters of one ``cpu.stat`` file (v1 or v2)."""

    usage_ns: int | None = None  # v2 usage_usec (the v1 file has none)
    nr_throttled: int | None = None
    throttled_ns: int | None = None  # v1 throttled_time, v2 throttled_usec


def parse_cpu_stat(text: str) -> CpuStat:
    """``cpu.stat``: v1 (nr_throttled, throttled_time in ns) or v2 (usage_usec,
    nr_throttled, throttled_usec)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    usage = values.get("usage_usec")
    throttled = values.get("throttled_time")
    if throttled is None and "throttled_usec" in values:
        throttled = values["throttled_usec"] * 1000
    return CpuStat(
        usage_ns=usage * 1000 if usage is not None else None,
        nr_throttled=values.get("nr_throttled"),
        throttled_ns=throttled,
    )


def parse_oom_kills(text: str) -> int | None:
    """The ``oom_kill`` count of v1 ``memory.oom_control`` or v2 ``memory.events``."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
            return int(parts[1])
    return None


def parse_io_bytes(text: str) -> tuple[int, int] | None:
    """Bytes read and written, summed over devices: v2 ``io.stat`` (``8:0 rbytes=N
    wbytes=N ...``) or v1 ``blkio.throttle.io_service_bytes`` (``8:0 Read N``)."""
    read = written = 0
    found = False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write") and parts[2].isdigit():
            found = True
            if parts[1] == "Read":
                read += int(parts[2])
            else:
                written += int(parts[2])
            continue
        for word in parts[1:]:
            key, _, value = word.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                found = True
                if key == "rbytes":
                    read += int(value)
                else:
                    written += int(value)
    return (read, written) if found else None


@dataclass(frozen=True)
class RequestCounts:
    """A runtime's request counters at one moment: requests answered, those with a 5xx
    status, and the response-time histogram's cumulative bucket counts by upper bound."""

    total: float
    errors: float
    buckets: tuple[tuple[float, float], ...]


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


_REQUEST_METRICS = (
    "procslice_http_requests_total",
    "procslice_http_request_duration_seconds_bucket",
)


def parse_request_counts(text: str) -> RequestCounts | None:
    """The per-request counters of a runtime's exposition (procslice_http_requests_total
    by code class, procslice_http_request_duration_seconds' buckets), summed over their
    other labels; None when it has none."""
    total = errors = 0.0
    buckets: dict[float, float] = {}
    found = False
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if not match:
            continue
        name, labels_text, value_text = match.groups()
        if name not in (
            "procslice_http_requests_total",
            "procslice_http_request_duration_seconds_bucket",
        ):
            continue
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(labels_text or ""))
        found = True
        if name == "procslice_http_requests_total":
            total += value
            if labels.get("code") == "5xx":
                errors += value
        else:
            bound = float(labels.get("le", "+Inf"))
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not found:
        return None
    return RequestCounts(total, errors, tuple(sorted(buckets.items())))


def request_figures(
    before: RequestCounts, after: RequestCounts, seconds: float
) -> tuple[float | None, float | None, float | None]:
    """Requests per second, the share of 5xx answers and the 99th percentile response
    time (seconds, interpolated in its bucket as Prometheus' histogram_quantile does)
    between two samples; None where nothing was answered."""
    if seconds <= 0:
        return None, None, None
    answered = after.total - before.total
    if answered < 0:  # the runtime restarted between the samples
        return None, None, None
    rate = answered / seconds
    if answered == 0:
        return rate, None, None
    ratio = (after.errors - before.errors) / answered
    earlier = dict(before.buckets)
    deltas = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after.buckets]
    p99: float | None = None
    if deltas and deltas[-1][1] > 0:
        target = 0.99 * deltas[-1][1]
        lower, below = 0.0, 0.0
        for bound, count in deltas:
            if count >= target:
                if bound == float("inf"):
                    p99 = lower  # beyond the last finite bound: at least that
                else:
                    share = (target - below) / (count - below) if count > below else 1.0
                    p99 = lower + (bound - lower) * share
                break
            lower, below = bound, count
    return rate, ratio, p99


def parse_proc_stat(text: str) -> tuple[int, str, int] | None:
    """``(pid, comm, ppid)`` from /proc/<pid>/stat (comm may hold spaces and parens)."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 1 or close_paren < open_paren:
        return None
    pid_text = text[:open_paren].strip()
    rest = text[close_paren + 1 :].split()
    if not pid_text.isdigit() or len(rest) < 2 or not rest[1].isdigit():
        return None
    return int(pid_text), text[open_paren + 1 : close_paren], int(rest[1])


def parse_applied(text: str) -> str | None:
    """The release id in /var/lib/procslice/applied/<unit>: three fingerprints, then the
    release that last passed the health gate (``releases/<id>``, empty without a link)."""
    lines = text.splitlines()
    release = lines[3].strip() if len(lines) > 3 else ""
    return os.path.basename(release) or None


def parse_activate_args(text: str) -> dict[str, str]:
    """The options of procslice-activate's last run, from applied/<unit>.args (the unit,
    then one argument a line): ``{"--health-url": URL, "--link": PATH, ...}`` for the
    options that take one value."""
    lines = text.splitlines()
    options: dict[str, str] = {}
    for index, line in enumerate(lines[1:], start=1):
        if line in ("--health-url", "--health-timeout", "--link") and index + 1 < len(lines):
            options[line] = lines[index + 1]
    return options


def unit_slices(slice_unit: str) -> list[str]:
    """A slice and its ancestors, innermost first: procslice-web.slice ->
    [procslice-web.slice, procslice.slice]."""
    if not slice_unit.endswith(".slice") or slice_unit == "-.slice":
        return []
    parts = slice_unit[: -len(".slice")].split("-")
    return ["-".join(parts[:depth]) + ".slice" for depth in range(len(parts), 0, -1)]


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup hierarchy mount from /proc/self/mountinfo."""

    mount_root: str
    mountpoint: str
    version: int
    options: frozenset[str]


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup (v1) and cgroup2 mounts of /proc/self/mountinfo."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 3:
            continue
        fstype = fields[separator + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            CgroupMount(
                mount_root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                version=2 if fstype == "cgroup2" else 1,
                options=frozenset(fields[separator + 3].split(",")),
            )
        )
    return mounts


def _relative(cgroup_path: str, mount_root: str) -> str | None:
    path = "/" + cgroup_path.strip("/")
    root = "/" + mount_root.strip("/")
    if root == "/":
        return path
    if path == root:
        return "/"
    if path.startswith(root + "/"):
        return path[len(root) :]
    return None


def cgroup_dir(
    mounts: Sequence[CgroupMount], root: str, cgroup_path: str, controller: str
) -> str | None:
    """The directory of ``cgroup_path`` for a controller: its v1 hierarchy if one is
    mounted, else the cgroup2 tree.  ``controller`` "systemd" is where the processes are
    tracked: the cgroup2 tree (v2, and hybrid's ``unified``), else name=systemd."""
    v1_option = "name=systemd" if controller == "systemd" else controller
    v1 = [m for m in mounts if m.version == 1 and v1_option in m.options]
    v2 = [m for m in mounts if m.version == 2]
    candidates = (v2 + v1) if controller == "systemd" else (v1 or v2)
    for mount in candidates:
        relative = _relative(cgroup_path, mount.mount_root)
        if relative is None:
            continue
        directory = os.path.join(root, mount.mountpoint.lstrip("/"), relative.lstrip("/"))
        if os.path.isdir(directory):
            return directory.rstrip("/")
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(_MAX_READ)
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return None if value >= _V1_UNLIMITED else value


def _subtree(directory: str) -> Iterator[str]:
    for path, _dirs, _files in os.walk(directory):
        yield path


def _cgroup_pids(directory: str | None) -> list[int]:
    if directory is None:
        return []
    pids: list[int] = []
    for path in _subtree(directory):
        text = _read(os.path.join(path, "cgroup.procs")) or ""
        pids.extend(int(word) for word in text.split() if word.isdigit())
    return pids


@dataclass
class _Dirs:
    """The cgroup directories of one unit, per controller (``None``: not found)."""

    cpu: str | None  # of the cgroup holding the CPU quota: the unit's or a slice's
    cpuacct: str | None
    memory: str | None
    pids: str | None
    unified: str | None
    procs: str | None
    blkio: str | None = None  # v1 only


def _unit_dirs(
    mounts: Sequence[CgroupMount], root: str, cgroup_path: str, quota_path: str
) -> _Dirs:
    v2 = [m for m in mounts if m.version == 2]
    return _Dirs(
        cpu=cgroup_dir(mounts, root, quota_path or cgroup_path, "cpu"),
        cpuacct=cgroup_dir([m for m in mounts if m.version == 1], root, cgroup_path, "cpuacct"),
        memory=cgroup_dir(mounts, root, cgroup_path, "memory"),
        pids=cgroup_dir(mounts, root, cgroup_path, "pids"),
        unified=cgroup_dir(v2, root, cgroup_path, "systemd"),
        procs=cgroup_dir(mounts, root, cgroup_path, "systemd"),
        blkio=cgroup_dir([m for m in mounts if m.version == 1], root, cgroup_path, "blkio"),
    )


@dataclass(frozen=True)
class _CpuSample:
    usage_ns: int | None
    nr_throttled: int | None
    throttled_ns: int | None


def _cpu_sample(dirs: _Dirs, show_usage: int | None) -> _CpuSample:
    usage: int | None = None
    if dirs.cpuacct is not None:
        usage = _read_int(os.path.join(dirs.cpuacct, "cpuacct.usage"))
    if usage is None and dirs.unified is not None:
        usage = parse_cpu_stat(_read(os.path.join(dirs.unified, "cpu.stat")) or "").usage_ns
    if usage is None:
        usage = show_usage
    stat = CpuStat()
    if dirs.cpu is not None:
        stat = parse_cpu_stat(_read(os.path.join(dirs.cpu, "cpu.stat")) or "")
    return _CpuSample(usage, stat.nr_throttled, stat.throttled_ns)


def _oom_kills(dirs: _Dirs) -> int | None:
    if dirs.memory is None:
        return None
    events = _read(os.path.join(dirs.memory, "memory.events"))
    if events is not None:  # v2: hierarchical already
        return parse_oom_kills(events)
    counts = [
        parse_oom_kills(_read(os.path.join(path, "memory.oom_control")) or "")
        for path in _subtree(dirs.memory)
    ]
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _io_bytes(dirs: _Dirs) -> tuple[int, int] | None:
    """The unit's block IO: v2 io.stat (hierarchical), else v1's throttle counters summed
    over its subtree. On v1 these count the IO the unit's processes submit (reads, and
    direct writes); buffered writes are written back outside the cgroup."""
    if dirs.unified is not None:
        found = parse_io_bytes(_read(os.path.join(dirs.unified, "io.stat")) or "")
        if found is not None:
            return found
    if dirs.blkio is None:
        return None
    sums = [
        parse_io_bytes(_read(os.path.join(path, "blkio.throttle.io_service_bytes")) or "")
        for path in _subtree(dirs.blkio)
    ]
    known = [pair for pair in sums if pair is not None]
    if not known:
        return None
    return sum(pair[0] for pair in known), sum(pair[1] for pair in known)


# --------------------------------------------------------------------------- collecting


@dataclass
class ServiceStatus:
    """One service as ``procslice status`` reports it."""

    service: str
    unit: str
    slice: str = ""
    model: str = "?"
    release: str | None = None
    state: str = "unknown"
    sub_state: str = ""
    main_pid: int | None = None
    workers: int | None = None
    cpu_seconds: float | None = None
    cpu_percent: float | None = None
    cpu_quota_percent: float | None = None
    cpu_quota_from: str | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_seconds: float | None = None
    cpu_throttled_recent: int | None = None
    memory_bytes: int | None = None
    memory_max_bytes: int | None = None
    memory_max_from: str | None = None
    memory_high_bytes: int | None = None
    memory_high_from: str | None = None
    tasks: int | None = None
    tasks_max: int | None = None
    tasks_max_from: str | None = None
    restarts: int = 0
    result: str = ""
    last_exit: str | None = None
    oom_kills: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    requests_per_second: float | None = None
    requests_error_ratio: float | None = None
    requests_p99_seconds: float | None = None
    last_recycle: str | None = None
    status_text: str = ""
    health: str = "none"
    health_url: str | None = None
    health_detail: str | None = None
    # Where its cgroup files are (not part of the output).
    cgroup_dirs: _Dirs | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form of one service (see :data:`SCHEMA`)."""
        return {
            "service": self.service,
            "unit": self.unit,
            "slice": self.slice,
            "model": self.model,
            "release": self.release,
            "state": self.state,
            "sub_state": self.sub_state,
            "main_pid": self.main_pid,
            "workers": self.workers,
            "cpu": {
                "seconds": self.cpu_seconds,
                "percent": self.cpu_percent,
                "quota_percent": self.cpu_quota_percent,
                "quota_from": self.cpu_quota_from,
                "throttled_periods": self.cpu_throttled_periods,
                "throttled_seconds": self.cpu_throttled_seconds,
                "throttled_in_sample": self.cpu_throttled_recent,
            },
            "memory": {
                "bytes": self.memory_bytes,
                "max_bytes": self.memory_max_bytes,
                "max_from": self.memory_max_from,
                "high_bytes": self.memory_high_bytes,
                "high_from": self.memory_high_from,
            },
            "tasks": {
                "current": self.tasks,
                "max": self.tasks_max,
                "max_from": self.tasks_max_from,
            },
            "io": {"read_bytes": self.io_read_bytes, "write_bytes": self.io_write_bytes},
            "requests": {
                "per_second": self.requests_per_second,
                "error_ratio": self.requests_error_ratio,
                "p99_seconds": self.requests_p99_seconds,
            },
            "restarts": {
                "count": self.restarts,
                "result": self.result,
                "last_exit": self.last_exit,
                "oom_kills": self.oom_kills,
                "last_recycle": self.last_recycle,
                "status_text": self.status_text,
            },
            "health": {"state": self.health, "url": self.health_url, "detail": self.health_detail},
        }


def run_command(argv: Sequence[str]) -> str:
    """Run a command and return its stdout (``systemctl`` in production)."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=20, check=False, env=_c_locale()
    )
    # `systemctl list-unit-files PATTERN` exits 1 when nothing matches, silently.
    if result.returncode != 0 and result.stderr.strip():
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def _c_locale() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
    return env


def list_units(runner: Runner) -> list[str]:
    """Every procslice-<name>.service systemd has loaded or has a unit file for."""
    loaded = runner(
        [
            "systemctl",
            "list-units",
            "--all",
            "--type=service",
            "--plain",
            "--no-legend",
            "--no-pager",
            "procslice-*.service",
        ]
    )
    files = runner(
        [
            "systemctl",
            "list-unit-files",
            "--type=service",
            "--no-legend",
            "--no-pager",
            "procslice-*.service",
        ]
    )
    names: set[str] = set()
    for line in (loaded + "\n" + files).splitlines():
        words = line.replace("●", " ").split()
        if words and UNIT_RE.match(words[0]):
            names.add(words[0])
    return sorted(names)


def _tightest(
    values: Iterable[tuple[int | None, str]],
) -> tuple[int | None, str | None]:
    known = [(value, unit) for value, unit in values if value is not None]
    if not known:
        return None, None
    return min(known, key=lambda pair: pair[0])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_exit(code: int | None, status: int | None) -> str | None:
    if code == _CLD_EXITED and status:
        return f"exit {status}"
    if code == _CLD_KILLED and status:
        return f"killed by {_signal_name(status)}"
    if code == _CLD_DUMPED and status:
        return f"core dump ({_signal_name(status)})"
    return None


def _last_recycle(status_text: str) -> str | None:
    match = re.search(r"last recycle: ([^;]+)", status_text)
    return match.group(1).strip() if match else None


def _service_from_show(
    props: Mapping[str, str], slices: Mapping[str, Mapping[str, str]]
) -> ServiceStatus:
    unit = props.get("Id", "")
    match = UNIT_RE.match(unit)
    argv = parse_exec_argv(props.get("ExecStart"))
    description = props.get("Description", "")
    status = ServiceStatus(service=match.group(1) if match else unit, unit=unit)
    status.slice = props.get("Slice", "")
    status.model = detect_model(argv, description)
    status.state = props.get("ActiveState", "unknown")
    status.sub_state = props.get("SubState", "")
    main_pid = _show_int(props.get("MainPID"))
    status.main_pid = main_pid or None
    status.restarts = _show_int(props.get("NRestarts")) or 0
    status.result = props.get("Result", "")
    status.last_exit = _last_exit(
        _show_int(props.get("ExecMainCode")), _show_int(props.get("ExecMainStatus"))
    )
    status.status_text = props.get("StatusText", "")
    status.last_recycle = _last_recycle(status.status_text)
    status.memory_bytes = _show_int(props.get("MemoryCurrent"))
    status.tasks = _show_int(props.get("TasksCurrent"))

    chain = [(unit, props)] + [
        (name, slices[name]) for name in unit_slices(status.slice) if name in slices
    ]
    quota, status.cpu_quota_from = _tightest(
        (parse_timespan_usec(p.get("CPUQuotaPerSecUSec")), name) for name, p in chain
    )
    status.cpu_quota_percent = quota / 10_000 if quota is not None else None
    status.memory_max_bytes, status.memory_max_from = _tightest(
        (_show_int(p.get("MemoryMax")), name) for name, p in chain
    )
    status.memory_high_bytes, status.memory_high_from = _tightest(
        (_show_int(p.get("MemoryHigh")), name) for name, p in chain
    )
    status.tasks_max, status.tasks_max_from = _tightest(
        (_show_int(p.get("TasksMax")), name) for name, p in chain
    )
    return status


def _release(
    status: ServiceStatus, argv: Sequence[str], description: str, root: str, applied: str | None
) -> None:
    if status.model == "podman":
        status.release = podman_image(description)
        return
    link = current_link(argv)
    if link is not None:
        with contextlib.suppress(OSError):
            status.release = os.path.basename(os.readlink(os.path.join(root, link.lstrip("/"))))
    if status.release is None:
        status.release = applied


def _children(root: str, pid: int) -> list[int]:
    """The children of ``pid`` from /proc/<pid>/task/*/children."""
    tasks = os.path.join(root, "proc", str(pid), "task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        return []
    children: list[int] = []
    for tid in tids:
        text = _read(os.path.join(tasks, tid, "children")) or ""
        children.extend(int(word) for word in text.split() if word.isdigit())
    return children


def _workers(status: ServiceStatus, root: str) -> int | None:
    if status.state not in ("active", "reloading", "deactivating"):
        return 0
    dirs = status.cgroup_dirs
    pids = _cgroup_pids(dirs.procs if dirs else None)
    if status.model == "podman" and dirs and dirs.procs:
        payload = [
            pid
            for entry in sorted(os.listdir(dirs.procs))
            if entry.startswith(PODMAN_PAYLOAD_PREFIX)
            for pid in _cgroup_pids(os.path.join(dirs.procs, entry))
        ]
        if payload:
            return len(payload)
    if not pids:
        # No cgroup tree found: the main process's children are all we can see.
        return len(_children(root, status.main_pid)) if status.main_pid else None
    count = 0
    for pid in pids:
        parsed = parse_proc_stat(_read(os.path.join(root, "proc", str(pid), "stat")) or "")
        if parsed is None:
            continue
        _pid, comm, ppid = parsed
        if status.model == "podman":
            if comm not in PODMAN_HELPERS:
                count += 1
        elif ppid == status.main_pid:
            count += 1
    return count


def unix_socket_url(url: str) -> tuple[str, str] | None:
    """``http+unix://%2Frun%2Fx.sock/healthz`` -> ``("/run/x.sock", "/healthz")``;
    ``unix://%2Frun%2Fx.sock`` -> ``("/run/x.sock", "")``; None for any other URL.
    The socket path is percent-encoded, slashes included (as the preflight writes it)."""
    for scheme in ("http+unix://", "unix://"):
        if url.startswith(scheme):
            quoted, slash, rest = url[len(scheme) :].partition("/")
            return urllib.parse.unquote(quoted), slash + rest
    return None


def _check_unix_health(socket_path: str, target: str, timeout: float) -> tuple[str, str | None]:
    """GET ``target`` over the unix socket (a connection accepted without a target)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        if not target:
            return "ok", None
        connection = http.client.HTTPConnection("localhost", timeout=timeout)
        connection.sock = sock
        connection.request("GET", target)
        code = connection.getresponse().status
    except ConnectionRefusedError:
        return "failing", "connection refused"
    except TimeoutError:
        return "failing", f"no answer within {timeout:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return "failing", str(exc) or type(exc).__name__
    finally:
        sock.close()
    if code == 200:
        return "ok", None
    return "failing", f"HTTP {code}"


def check_health(url: str, timeout: float = HEALTH_TIMEOUT) -> tuple[str, str | None]:
    """GET ``url`` (no proxy): ``("ok", None)`` on 200, else ``("failing", why)``.
    ``tcp://HOST:PORT`` (a TCP health check): ok when a connection is accepted.
    ``http+unix://QUOTED_PATH/PATH`` GETs PATH over a unix socket, ``unix://QUOTED_PATH``
    connects to it (see :func:`unix_socket_url`)."""
    unix = unix_socket_url(url)
    if unix is not None:
        return _check_unix_health(unix[0], unix[1], timeout)
    if url.startswith("tcp://"):
        host, _, port = url[len("tcp://") :].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except ConnectionRefusedError:
            return "failing", "connection refused"
        except TimeoutError:
            return "failing", f"no answer within {timeout:g}s"
        except (OSError, ValueError) as exc:
            return "failing", str(exc) or type(exc).__name__
        return "ok", None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            code = int(answer.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "failing", "connection refused"
        if isinstance(reason, TimeoutError):
            return "failing", f"no answer within {timeout:g}s"
        return "failing", str(reason)
    except TimeoutError:
        return "failing", f"no answer within {timeout:g}s"
    except (OSError, ValueError) as exc:
        return "failing", str(exc) or type(exc).__name__
    if code == 200:
        return "ok", None
    return "failing", f"HTTP {code}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def collect(
    *,
    interval: float = 1.0,
    root: str = "/",
    runner: Runner = run_command,
    health_urls: Mapping[str, str] | None = None,
    health: bool = True,
    health_timeout: float = HEALTH_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[ServiceStatus]:
    """Every procslice service of the host (under ``root``), CPU sampled over ``interval``
    seconds for all of them together (0: no sample, no CPU %)."""
    units = list_units(runner)
    if not units:
        return []
    first = parse_show(runner(["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), *units]))
    services = [p for p in first if p.get("Id") in units and p.get("LoadState") != "not-found"]
    slice_names = sorted({s for p in services for s in unit_slices(p.get("Slice", ""))})
    slices: dict[str, dict[str, str]] = {}
    if slice_names:
        shown = runner(["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), *slice_names])
        slices = {p["Id"]: p for p in parse_show(shown) if "Id" in p}

    mounts = parse_mountinfo(_read(os.path.join(root, "proc", "self", "mountinfo")) or "")
    statuses: list[ServiceStatus] = []
    for props in services:
        status = _service_from_show(props, slices)
        cgroup = props.get("ControlGroup", "")
        # Throttling is counted where the quota is enforced: a unit without a quota of
        # its own is throttled as a part of its slice, and only the slice counts it.
        quota_holder = slices.get(status.cpu_quota_from or "", {}).get("ControlGroup", "")
        status.cgroup_dirs = _unit_dirs(mounts, root, cgroup, quota_holder) if cgroup else None
        argv = parse_exec_argv(props.get("ExecStart"))
        applied = os.path.join(root, APPLIED_DIR.lstrip("/"), status.unit[: -len(".service")])
        _release(
            status, argv, props.get("Description", ""), root, parse_applied(_read(applied) or "")
        )
        activated = parse_activate_args(_read(applied + ".args") or "")
        status.health_url = (health_urls or {}).get(status.service) or activated.get("--health-url")
        statuses.append(status)

    show_usage = {p.get("Id", ""): _show_int(p.get("CPUUsageNSec")) for p in services}
    # Requests per second, 5xx share and p99 of the runtimes that count them (aio and
    # swoole with metrics_listen), over the same sample.
    etc = os.path.join(root, "etc", "procslice")
    known = {**exporter_addresses(root), **RUNTIME_ADDRESSES} if interval > 0 else {}
    counted = {
        s.unit: address
        for s in statuses
        if interval > 0 and (address := _runtime_address(s, etc, known))
    }
    counts_before = {unit: _request_counts(address) for unit, address in counted.items()}
    start = clock()
    before = {s.unit: _sample(s, show_usage.get(s.unit)) for s in statuses}
    if interval > 0:
        sleep(interval)
        if any(b.usage_ns is None for b in before.values()):
            again = runner(["systemctl", "show", "-p", "Id,CPUUsageNSec", *units])
            show_usage = {
                p.get("Id", ""): _show_int(p.get("CPUUsageNSec")) for p in parse_show(again)
            }
    elapsed = clock() - start
    for status in statuses:
        sampled = counts_before.get(status.unit)
        later = _request_counts(counted[status.unit]) if sampled is not None else None
        if sampled is not None and later is not None:
            (
                status.requests_per_second,
                status.requests_error_ratio,
                status.requests_p99_seconds,
            ) = request_figures(sampled, later, elapsed)
        after = _sample(status, show_usage.get(status.unit))
        _fill_cpu(status, before[status.unit], after, elapsed if interval > 0 else 0.0)
        status.oom_kills = _oom_kills(status.cgroup_dirs) if status.cgroup_dirs else None
        io = _io_bytes(status.cgroup_dirs) if status.cgroup_dirs else None
        status.io_read_bytes, status.io_write_bytes = io if io else (None, None)
        status.workers = _workers(status, root)
        if status.memory_bytes is None and status.cgroup_dirs and status.cgroup_dirs.memory:
            status.memory_bytes = _read_int(
                os.path.join(status.cgroup_dirs.memory, "memory.usage_in_bytes")
            ) or _read_int(os.path.join(status.cgroup_dirs.memory, "memory.current"))
        if status.tasks is None and status.cgroup_dirs and status.cgroup_dirs.pids:
            status.tasks = _read_int(os.path.join(status.cgroup_dirs.pids, "pids.current"))

    if health:
        _check_all(statuses, health_timeout)
    return statuses


def _sample(status: ServiceStatus, show_usage: int | None) -> _CpuSample:
    if status.cgroup_dirs is None:
        return _CpuSample(show_usage, None, None)
    return _cpu_sample(status.cgroup_dirs, show_usage)


def _fill_cpu(status: ServiceStatus, before: _CpuSample, after: _CpuSample, elapsed: float) -> None:
    if after.usage_ns is not None:
        status.cpu_seconds = after.usage_ns / 1e9
    if elapsed > 0 and before.usage_ns is not None and after.usage_ns is not None:
        used = max(0, after.usage_ns - before.usage_ns)
        status.cpu_percent = round(used / (elapsed * 1e9) * 100, 2)
    status.cpu_throttled_periods = after.nr_throttled
    if after.throttled_ns is not None:
        status.cpu_throttled_seconds = after.throttled_ns / 1e9
    if elapsed > 0 and before.nr_throttled is not None and after.nr_throttled is not None:
        status.cpu_throttled_recent = max(0, after.nr_throttled - before.nr_throttled)


def _check_all(statuses: Sequence[ServiceStatus], timeout: float) -> None:
    targets = [s for s in statuses if s.health_url]
    if not targets:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        futures = {pool.submit(check_health, s.health_url or "", timeout): s for s in targets}
        for future in concurrent.futures.as_completed(futures):
            status = futures[future]
            status.health, status.health_detail = future.result()


# Written by deploy.yml when it drains services of the host from the front ("SERVICES:
# drained by a deploy run at ..."), rewritten with the services a failed apply left
# out and why, removed when a deploy passes on the host.
DRAINED_MARKER = "/var/lib/procslice/drained"


def read_drained(path: str = DRAINED_MARKER) -> str | None:
    """Why the host is out of the front's rotation (the marker's text), or None."""
    text = _read(path)
    if text is None:
        return None
    return " ".join(text.split()) or "drained (no reason recorded)"


def host_document(
    statuses: Sequence[ServiceStatus],
    interval: float,
    host: str | None = None,
    drained: str | None = None,
) -> dict[str, Any]:
    """The ``--json`` document of one host."""
    return {
        "schema": SCHEMA,
        "host": host or socket.gethostname(),
        "time": _now(),
        "interval": interval,
        "drained": drained,
        "services": [status.as_json() for status in statuses],
    }


# --------------------------------------------------------------------------- table

COLUMNS: tuple[str, ...] = (
    "HOST",
    "SERVICE",
    "MODEL",
    "RELEASE",
    "STATE",
    "WORKERS",
    "CPU/QUOTA",
    "MEM/MAX",
    "HIGH",
    "TASKS/MAX",
    "REQUESTS",
    "RESTARTS",
    "HEALTH",
)
INHERITED_MARK = "^"


def format_size(value: int | float | None) -> str:
    """Bytes as a short size: 512B, 1.5K, 41M, 256M, 2G; ``-`` for ``None``."""
    if value is None:
        return "-"
    number = float(value)
    if number < 1024:
        return f"{number:.0f}B"
    index = 0
    number /= 1024
    while number >= 1024 and index < len(_SIZE_UNITS) - 1:
        number /= 1024
        index += 1
    unit = _SIZE_UNITS[index]
    text = f"{number:.1f}" if number < 10 else f"{number:.0f}"
    return text.removesuffix(".0") + unit


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def _own(service: Mapping[str, Any], source: Any) -> bool:
    return source is None or source == service.get("unit")


def _limit(text: str, service: Mapping[str, Any], source: Any) -> str:
    return text if _own(service, source) or text == "-" else text + INHERITED_MARK


def _restarts_cell(service: Mapping[str, Any]) -> str:
    restarts = service.get("restarts") or {}
    reasons: list[str] = []
    result = restarts.get("result")
    if result and result != "success":
        reasons.append(str(result))
    if restarts.get("last_exit"):
        reasons.append(str(restarts["last_exit"]))
    if restarts.get("oom_kills"):
        reasons.append(f"oom_kill={restarts['oom_kills']}")
    if restarts.get("last_recycle"):
        reasons.append(f"recycled: {restarts['last_recycle']}")
    count = str(restarts.get("count", 0))
    return f"{count} ({'; '.join(reasons)})" if reasons else count


def _health_cell(service: Mapping[str, Any]) -> str:
    health = service.get("health") or {}
    state = str(health.get("state") or "none")
    return f"{state}: {health['detail']}" if state == "failing" and health.get("detail") else state


def _row(host: str, service: Mapping[str, Any]) -> list[str]:
    cpu = service.get("cpu") or {}
    memory = service.get("memory") or {}
    tasks = service.get("tasks") or {}
    state = str(service.get("state") or "?")
    if state != "active" and service.get("sub_state"):
        state += f"/{service['sub_state']}"
    cpu_cell = (
        _percent(cpu.get("percent"))
        + "/"
        + _limit(_percent(cpu.get("quota_percent")), service, cpu.get("quota_from"))
    )
    if cpu.get("throttled_in_sample"):
        cpu_cell += " throttled"
    memory_cell = (
        format_size(memory.get("bytes"))
        + "/"
        + _limit(format_size(memory.get("max_bytes")), service, memory.get("max_from"))
    )
    tasks_max = tasks.get("max")
    tasks_cell = f"{tasks.get('current') if tasks.get('current') is not None else '-'}/" + _limit(
        str(tasks_max) if tasks_max is not None else "-", service, tasks.get("max_from")
    )
    workers = service.get("workers")
    return [
        host,
        str(service.get("service", "?")),
        str(service.get("model", "?")),
        str(service.get("release") or "-"),
        state,
        str(workers) if workers is not None else "-",
        cpu_cell,
        memory_cell,
        _limit(format_size(memory.get("high_bytes")), service, memory.get("high_from")),
        tasks_cell,
        _requests_cell(service),
        _restarts_cell(service),
        _health_cell(service),
    ]


def _requests_cell(service: Mapping[str, Any]) -> str:
    """``120/s 0.5% p99 12ms``: requests per second, their 5xx share and p99 over the
    sample (gunicorn, aio and swoole with metrics_listen); ``-`` where nothing counts them."""
    requests = service.get("requests") or {}
    rate = requests.get("per_second")
    if rate is None:
        return "-"
    cell = f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s"
    ratio = requests.get("error_ratio")
    if ratio is not None:
        cell += f" {ratio * 100:.1f}%"
    p99 = requests.get("p99_seconds")
    if p99 is not None:
        cell += f" p99 {p99 * 1000:.0f}ms" if p99 < 10 else f" p99 {p99:.0f}s"
    return cell


def format_table(documents: Sequence[Mapping[str, Any]]) -> str:
    """One aligned table for host documents (``--json`` output, or an error document
    ``{"host": ..., "error": ...}``): a row per service, host column first."""
    rows: list[list[str]] = []
    for document in documents:
        host = str(document.get("host", "?"))
        if document.get("error"):
            rows.append([host, f"({document['error']})"])
            continue
        services = document.get("services") or []
        if not services:
            rows.append([host, "(no procslice services)"])
        rows.extend(_row(host, service) for service in services)
    widths = [len(name) for name in COLUMNS]
    widths[0] = max([widths[0]] + [len(row[0]) for row in rows])
    for row in rows:
        if len(row) == len(COLUMNS):
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [_join(COLUMNS, widths)]
    for row in rows:
        if len(row) == len(COLUMNS):
            lines.append(_join(row, widths))
        else:
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
    if any(INHERITED_MARK in cell for row in rows for cell in row[6:10]):
        lines.append(
            f"{INHERITED_MARK} the limit of its slice, shared with the slice's other services"
        )
    for document in documents:
        if document.get("drained"):
            lines.append(
                f"{document.get('host', '?')} has services out of the front's rotation: "
                f"{document['drained']}"
            )
    return "\n".join(lines)


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _documents(data: Any) -> list[dict[str, Any]]:
    """Host documents from a host document, a list of them, or ``{"hosts": [...]}``."""
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        data = data["hosts"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError("expected a host document, a list of them or {'hosts': [...]}")
    return list(data)


# --------------------------------------------------------------------------- Prometheus

_METRICS: tuple[tuple[str, str, str, Callable[[ServiceStatus], float | int | None]], ...] = (
    (
        "cpu_seconds_total",
        "counter",
        "CPU time used by the unit's cgroup.",
        lambda s: s.cpu_seconds,
    ),
    (
        "cpu_quota_cores",
        "gauge",
        "CPU quota in CPUs: the tightest of the unit's and its slices' CPUQuota.",
        lambda s: s.cpu_quota_percent / 100 if s.cpu_quota_percent is not None else None,
    ),
    (
        "cpu_throttled_periods_total",
        "counter",
        "CFS periods in which the cgroup holding the CPU quota (the unit's or its slice's) "
        "was throttled.",
        lambda s: s.cpu_throttled_periods,
    ),
    (
        "cpu_throttled_seconds_total",
        "counter",
        "Time the cgroup holding the CPU quota (the unit's or its slice's) spent throttled.",
        lambda s: s.cpu_throttled_seconds,
    ),
    (
        "memory_bytes",
        "gauge",
        "Memory charged to the unit (MemoryCurrent).",
        lambda s: s.memory_bytes,
    ),
    (
        "memory_max_bytes",
        "gauge",
        "The tightest MemoryMax of the unit and its slices.",
        lambda s: s.memory_max_bytes,
    ),
    (
        "memory_high_bytes",
        "gauge",
        "The tightest MemoryHigh of the unit and its slices.",
        lambda s: s.memory_high_bytes,
    ),
    ("tasks", "gauge", "Tasks in the unit (TasksCurrent).", lambda s: s.tasks),
    (
        "tasks_max",
        "gauge",
        "The tightest TasksMax of the unit and its slices.",
        lambda s: s.tasks_max,
    ),
    (
        "restarts_total",
        "counter",
        "Automatic restarts of the unit (NRestarts).",
        lambda s: s.restarts,
    ),
    (
        "oom_kills_total",
        "counter",
        "OOM kills in the unit's cgroup since it was created.",
        lambda s: s.oom_kills,
    ),
    (
        "io_read_bytes_total",
        "counter",
        "Bytes the unit read from block devices (v2 io.stat; v1 blkio throttle counters).",
        lambda s: s.io_read_bytes,
    ),
    (
        "io_write_bytes_total",
        "counter",
        "Bytes the unit wrote to block devices (v1: its direct writes only; buffered "
        "writes are written back outside its cgroup).",
        lambda s: s.io_write_bytes,
    ),
    ("up", "gauge", "1 when the unit is active.", lambda s: int(s.state == "active")),
    (
        "health",
        "gauge",
        "1 when the health URL answers 200, 0 when not; absent without one.",
        lambda s: {"ok": 1, "failing": 0}.get(s.health),
    ),
    (
        "workers",
        "gauge",
        "Worker processes (children of the main process; podman: the container's processes).",
        lambda s: s.workers,
    ),
)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _slice_label(slice_unit: str) -> str:
    if slice_unit.startswith("procslice-") and slice_unit.endswith(".slice"):
        return slice_unit[len("procslice-") : -len(".slice")]
    return "" if slice_unit == "procslice.slice" else slice_unit


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def prometheus_text(statuses: Sequence[ServiceStatus]) -> str:
    """The Prometheus text exposition (format 0.0.4) of every service: metrics
    ``procslice_unit_*`` with labels service, slice, model, release."""
    lines: list[str] = []
    for name, kind, help_text, value_of in _METRICS:
        metric = f"procslice_unit_{name}"
        samples: list[str] = []
        for status in statuses:
            value = value_of(status)
            if value is None:
                continue
            labels = {
                "service": status.service,
                "slice": _slice_label(status.slice),
                "model": status.model,
                "release": status.release or "",
            }
            text = ",".join(f'{key}="{_label_value(val)}"' for key, val in labels.items())
            samples.append(f"{metric}{{{text}}} {_number(value)}")
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- runtime metrics

# (podman: the image's own /metrics, at the metrics_listen the exporter's unit names)
RUNTIME_MODELS = ("gunicorn", "aio", "swoole", "podman")
RUNTIME_TIMEOUT = 1.0
# Service name -> metrics_listen, from --runtime-metrics (the exporter's unit names them:
# it cannot read the services' 0750 configuration directories).
RUNTIME_ADDRESSES: dict[str, str] = {}


# The exporter's unit, which names every service's metrics address (--runtime-metrics):
# `procslice status` on the command line reads a podman service's there, having no other
# record of it (procslice writes no configuration for an image's app).
EXPORTER_UNIT = "etc/systemd/system/prometheus-procslice-exporter.service"


def exporter_addresses(root: str = "/") -> dict[str, str]:
    """Service name -> metrics address, from the installed exporter unit's ExecStart
    (``--runtime-metrics NAME=HOST:PORT``); empty without the unit."""
    text = _read(os.path.join(root, EXPORTER_UNIT)) or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("ExecStart="):
            continue
        words = line.split()
        for flag, value in zip(words, words[1:], strict=False):
            name, equals, address = value.partition("=")
            if flag == "--runtime-metrics" and equals and name and address:
                found[name] = address
    return found


def gunicorn_metrics_address(config_text: str) -> str | None:
    """The ``metrics_listen = "..."`` of a gunicorn service's gunicorn.conf.py (a plain
    assignment, as templates/gunicorn writes it), or None (off); the file is parsed,
    never run."""
    try:
        tree = ast.parse(config_text)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "metrics_listen" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value or None
    return None


def runtime_metrics_address(config_text: str) -> str | None:
    """The ``metrics_listen`` of an aio/swoole service's procslice.toml, or None (off)."""
    try:
        data = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return None
    address = data.get("metrics_listen")
    return address if isinstance(address, str) and address else None


def _with_service(sample: str, service: str) -> str:
    """A sample line with ``service="<name>"`` as its first label."""
    label = f'service="{_label_value(service)}"'
    name, brace, rest = sample.partition("{")
    if brace:
        return f"{name}{{{label},{rest}" if not rest.startswith("}") else f"{name}{{{label}{rest}"
    name, _, value = sample.partition(" ")
    return f"{name}{{{label}}} {value}"


def merge_expositions(texts: Mapping[str, str]) -> str:
    """Several services' Prometheus texts as one: every sample gains a ``service``
    label and each metric family is declared once (HELP and TYPE), its samples from
    every service together, as the text format requires."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for service, text in sorted(texts.items()):
        current = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                _, kind, name, *rest = line.split(" ", 3)
                help_text, type_text, samples = families.get(name, ("", "", []))
                if kind == "HELP":
                    help_text = help_text or (rest[0] if rest else "")
                else:
                    type_text = type_text or (rest[0] if rest else "untyped")
                families[name] = (help_text, type_text, samples)
                current = name
            elif line and not line.startswith("#") and current:
                families[current][2].append(_with_service(line, service))
    lines: list[str] = []
    for name, (help_text, type_text, samples) in families.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {type_text}")
        lines.extend(samples)
    return "\n".join(lines) + "\n" if lines else ""


def _runtime_address(status: ServiceStatus, etc: str, addresses: Mapping[str, str]) -> str | None:
    """Where an active gunicorn, aio or swoole service serves its metrics (host:port),
    or a podman service's image (its metrics_listen, named to the exporter), or None."""
    if status.model not in RUNTIME_MODELS or status.state != "active":
        return None
    address = addresses.get(status.service)
    if status.model == "podman":
        pass  # (no configuration file of procslice's to read it from)
    elif address is None and status.model == "gunicorn":
        config = _read(f"{etc}/{status.service}/gunicorn.conf.py")
        address = gunicorn_metrics_address(config) if config else None
    elif address is None:
        config = _read(f"{etc}/{status.service}/procslice.toml")
        address = runtime_metrics_address(config) if config else None
    if not address:
        return None
    host, _, port = address.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{host}:{port}"


def _fetch_metrics(address: str, timeout: float = RUNTIME_TIMEOUT) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as answer:
            text: str = answer.read().decode("utf-8", "replace")
            return text
    except (OSError, ValueError):
        return None


def _request_counts(address: str) -> RequestCounts | None:
    text = _fetch_metrics(address)
    return parse_request_counts(text) if text is not None else None


def runtime_metrics(
    statuses: Sequence[ServiceStatus],
    etc: str = "/etc/procslice",
    timeout: float = RUNTIME_TIMEOUT,
    addresses: Mapping[str, str] | None = None,
) -> str:
    """The metrics of every gunicorn, aio or swoole service that serves them (``metrics_listen``,
    often loopback only), fetched now and merged: one scrape of the exporter carries
    workers, restarts by reason, RSS per worker and loop lag of every service."""
    texts: dict[str, str] = {}
    known = RUNTIME_ADDRESSES if addresses is None else addresses
    for status in statuses:
        address = _runtime_address(status, etc, known)
        text = _fetch_metrics(address, timeout) if address else None
        # (none: procslice_unit_up and health tell that the service is in trouble)
        if text is not None:
            texts[status.service] = text
    return merge_expositions(texts)


class _Scraper:
    """Collects at most once per ``min_interval`` however many scrapes arrive."""

    def __init__(self, collect_now: Callable[[], list[ServiceStatus]], min_interval: float) -> None:
        self.collect_now = collect_now
        self.min_interval = min_interval
        self.lock = threading.Lock()
        self.when = 0.0
        self.body = b""

    def render(self) -> bytes:
        with self.lock:
            now = time.monotonic()
            if not self.body or now - self.when >= self.min_interval:
                statuses = self.collect_now()
                self.body = (prometheus_text(statuses) + runtime_metrics(statuses)).encode()
                self.when = time.monotonic()
            return self.body


def _handler(scraper: _Scraper) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "procslice-exporter"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            """Serve /metrics."""
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            """Headers of /metrics."""
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    data = scraper.render()
                    code, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
                except Exception as exc:  # a scrape must answer, not kill the server
                    data, code, ctype = f"collect failed: {exc}\n".encode(), 500, "text/plain"
            elif path == "/":
                data, code, ctype = b"procslice exporter: see /metrics\n", 200, "text/plain"
            else:
                data, code, ctype = b"see /metrics\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: a scrape every few seconds is not worth a journal line."""

    return Handler


def parse_listen(address: str) -> tuple[socket.AddressFamily, str, int]:
    """``host:port`` or ``[v6]:port`` into (family, host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port (e.g. 127.0.0.1:9100 or [::]:9100)")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host or "0.0.0.0", int(port)


def make_server(
    address: str, collect_now: Callable[[], list[ServiceStatus]], min_interval: float = 1.0
) -> ThreadingHTTPServer:
    """An HTTP server for ``address`` answering GET /metrics with the figures of
    ``collect_now()``, collected at most once per ``min_interval`` seconds."""
    family, host, port = parse_listen(address)

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    return Server((host, port), _handler(_Scraper(collect_now, min_interval)))


def serve(address: str, collect_now: Callable[[], list[ServiceStatus]]) -> None:
    """Serve the Prometheus text on ``address`` until interrupted or terminated."""
    with make_server(address, collect_now) as server:
        signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
        print(f"procslice exporter: serving http://{address}/metrics", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


# --------------------------------------------------------------------------- command


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
            documents = _documents(data)
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
    """``procslice status ...`` when this file runs on its own (/usr/local/bin/procslice)."""
    parser = argparse.ArgumentParser(
        prog="procslice",
        description="procslice on a host: the status of its services.",
        epilog="limits, aio and swoole are commands of the runtime in each service's "
        "virtualenv: /srv/procslice/<name>/current/venv/bin/procslice.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
