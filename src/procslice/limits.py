"""Cgroup-aware sizing: how many workers a service should run, and how big each may get.

Everything here is a pure function of a filesystem tree (``root``, "/" in production, a
fake tree in tests), so the rules can be tested without touching the real machine.

Reading the budget (:func:`read_budget`)
    * ``/proc/<pid>/cgroup`` says which cgroup the process is in, per hierarchy;
      ``/proc/<pid>/mountinfo`` says where each hierarchy is mounted and which part of it
      (the 4th, "root" field: "/" on a host, a sub-path such as ``/docker/<id>`` in some
      containers).  The process's directory is ``mountpoint / (cgroup path - mount root)``;
      if that directory does not exist, or the path lies outside the mount root (cgroup
      namespaces), the mount point itself is used.
    * Each controller we need (cpu, memory, pids, cpuset) is read from its cgroup v1
      hierarchy when one is mounted (hybrid hosts mount v1 controllers next to an empty
      cgroup2 at ``/sys/fs/cgroup/unified``), otherwise from the cgroup2 (unified) mount.
    * Limits are inherited, and a child's file does not show its parent's limit, so we walk
      from the process's directory up to the mount point and keep the tightest value.
      A missing, unreadable or garbled file counts as "no limit" at that level.
    * CPU quota: v1 ``cpu.cfs_quota_us / cpu.cfs_period_us`` (quota -1 = unlimited), v2
      ``cpu.max`` ("max 100000" or "150000 100000").  Memory: v1 ``memory.limit_in_bytes``
      (values >= 2**62 mean unlimited), v2 ``memory.max`` and ``memory.high``.  Tasks:
      ``pids.max``.  CPU set: v2 ``cpuset.cpus.effective``, v1 ``cpuset.cpus``.
    * The effective CPU count is ``min(host CPUs, affinity CPUs, quota)``.

Sizing (:func:`workers_for`)
    * gunicorn (pre-fork, sync-ish workers): ``2 * ceil(cpus) + 1`` with ``ceil(cpus) >= 1``,
      so a 100% quota on a 2-core host gives 3 workers rather than the host formula's 5.
    * aio and swoole (one event loop per CPU): ``ceil(cpus)``, at least 1.
    * Memory cap, when both a memory budget (``min(memory.max, memory.high)``) and a
      per-worker size are known: ``budget // per_worker`` workers; for gunicorn half a share
      is left for the master: ``(budget - per_worker // 2) // per_worker``.  At least 1.
    * Tasks cap, when ``pids.max`` is set: at most ``tasks_max - 4`` (room for the master
      and helpers), at least 1.
    * Finally the result is clamped to ``[minimum, maximum]``.

Per-worker recycling threshold (:func:`memory_limit_per_worker`):
``floor(memory_budget * headroom / (workers + 1))`` -- the ``+ 1`` is the master.

CPU pinning (:func:`cpu_affinity_map`): worker ``i`` gets one CPU of the allowed set,
round-robin (the host's CPUs if the allowed set is unknown).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from procslice.data.checks import parse_size

__all__ = [
    "MODELS",
    "Budget",
    "CgroupMount",
    "cgroup_relative",
    "cpu_affinity_map",
    "memory_limit_per_worker",
    "parse_cpu_list",
    "parse_mountinfo",
    "parse_size",
    "read_cgroup_int",
    "read_budget",
    "workers_for",
]

MODELS: tuple[str, ...] = ("gunicorn", "aio", "swoole")

# cgroup v1 reports "no limit" as a huge page-aligned number (e.g. 9223372036854771712).
_V1_UNLIMITED = 2**62
# Workers must leave this many tasks for the master, its threads and helpers.
_TASKS_RESERVE = 4
# Limit files are tiny; never read more than this from one.
_MAX_READ = 65536
_CONTROLLERS: tuple[str, ...] = ("cpu", "memory", "pids", "cpuset")


@dataclass(frozen=True)
class Budget:
    """The resources a process may use, as seen from inside its cgroups."""

    host_cpus: int
    affinity_cpus: int
    quota_cpus: float | None
    cpus: float
    allowed_cpus: tuple[int, ...]
    memory_max: int | None
    memory_high: int | None
    memory_budget: int | None
    tasks_max: int | None
    cgroup_version: int
    cgroup_path: str

    def as_dict(self) -> dict[str, object]:
        """A JSON-serialisable dict of all fields (``allowed_cpus`` as a list)."""
        data: dict[str, object] = asdict(self)
        data["allowed_cpus"] = list(self.allowed_cpus)
        return data


# --------------------------------------------------------------------------- sizes
# One grammar for sizes, the controller's and the runtime's: procslice.data.checks
# (parse_size is re-exported here for the runtime's callers).


def parse_cpu_list(text: str) -> tuple[int, ...] | None:
    """Parse a kernel CPU list such as "0-3,8,10-11" into sorted CPU numbers.

    Returns ``None`` for an empty or malformed list.
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return None
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low_s, sep, high_s = part.partition("-")
        if not (low_s.isdigit() and (not sep or high_s.isdigit())):
            return None
        low = int(low_s)
        high = int(high_s) if sep else low
        if high < low or high - low > 1_000_000:
            return None
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus)) if cpus else None


# --------------------------------------------------------------------------- files


def _read(path: str) -> str | None:
    """The text of a small file, or ``None`` if it is missing, unreadable or not text."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read(_MAX_READ)
    except (OSError, ValueError):
        return None


def read_cgroup_int(path: str) -> int | None:
    """A non-negative integer file; "max", garbage and v1's huge sentinel mean ``None``."""
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():  # covers "max", "-1", "", garbage
        return None
    value = int(text)
    return None if value >= _V1_UNLIMITED else value


def _v1_quota(directory: str) -> float | None:
    quota_text = _read(os.path.join(directory, "cpu.cfs_quota_us"))
    period_text = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if quota_text is None or period_text is None:
        return None
    try:
        quota = int(quota_text.strip())
        period = int(period_text.strip())
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _v2_quota(directory: str) -> float | None:
    text = _read(os.path.join(directory, "cpu.max"))
    if text is None:
        return None
    fields = text.split()
    if not fields or len(fields) > 2 or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) == 2 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _tightest(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def _tightest_int(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------- mounts


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup (v1) or cgroup2 mount of /proc/<pid>/mountinfo.

    The one reader of mountinfo: ``procslice status`` (procslice.status.collection)
    finds each unit's directories with it too."""

    mount_root: str  # the 4th mountinfo field: which part of the hierarchy is mounted
    mountpoint: str  # where, inside ``root``
    fstype: str  # "cgroup" or "cgroup2"
    options: frozenset[str]  # super options: the v1 controllers live here

    @property
    def version(self) -> int:
        """2 for the cgroup2 (unified) tree, 1 for a v1 hierarchy."""
        return 2 if self.fstype == "cgroup2" else 1


_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE_RE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a mountinfo text, in its order.

    A line has six fields before its optional ones and the "-" separator (mount id,
    parent id, major:minor, root, mount point, mount options), then the filesystem
    type, the source and the super options; a line with fewer is not a mount line and
    is skipped."""
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        fields = line.split()
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        if separator < 6 or len(fields) < separator + 3:
            continue
        fstype = fields[separator + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            CgroupMount(
                mount_root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                fstype=fstype,
                options=frozenset(fields[separator + 3].split(",")),
            )
        )
    return mounts


def _parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """``({v1 controller: path}, v2 path or None)`` from /proc/<pid>/cgroup."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                v1[controller] = path
    return v1, v2


def _components(path: str) -> list[str] | None:
    """A cgroup path's components without "" and "."; ``None`` when one is ".."."""
    components = [part for part in path.split("/") if part and part != "."]
    return None if ".." in components else components


def cgroup_relative(cgroup_path: str, mount_root: str) -> str | None:
    """``cgroup_path`` relative to ``mount_root`` ("" for the root itself, else "a/b"
    without a leading slash); ``None`` if it lies outside it.

    Both are normalised first ("//", "." and a trailing "/" mean nothing). A ".." in
    either is outside: /proc/<pid>/cgroup writes a cgroup above the reader's cgroup
    namespace as "/../x", and mountinfo a mount of a hierarchy above it as "/..";
    where such a path lies under a mount of this namespace is not known."""
    path = _components(cgroup_path)
    root = _components(mount_root)
    if path is None or root is None or path[: len(root)] != root:
        return None
    return "/".join(path[len(root) :])


def _pick_mount(mounts: list[CgroupMount], cgroup_path: str) -> CgroupMount | None:
    """Prefer a mount whose root contains the path (the longest such root), else the first."""
    if not mounts:
        return None
    containing = [m for m in mounts if cgroup_relative(cgroup_path, m.mount_root) is not None]
    if containing:
        return max(containing, key=lambda m: len(m.mount_root.rstrip("/")))
    return mounts[0]


def _levels(root: str, mount: CgroupMount, cgroup_path: str) -> list[str]:
    """Directories from the process's cgroup up to (and including) the mount point."""
    top = os.path.join(root, mount.mountpoint.lstrip("/"))
    relative = cgroup_relative(cgroup_path, mount.mount_root)
    if not relative:
        return [top]
    parts = relative.split("/")
    if not os.path.isdir(os.path.join(top, *parts)):
        return [top]
    return [os.path.join(top, *parts[:depth]) for depth in range(len(parts), -1, -1)]


@dataclass(frozen=True)
class _Source:
    version: int
    cgroup_path: str
    levels: tuple[str, ...]


def _sources(root: str, pid: str) -> dict[str, _Source]:
    """For each controller we need, which cgroup version and directories to read."""
    proc = os.path.join(root, "proc", pid)
    cgroup_text = _read(os.path.join(proc, "cgroup")) or ""
    mountinfo_text = _read(os.path.join(proc, "mountinfo")) or ""
    v1_paths, v2_path = _parse_proc_cgroup(cgroup_text)
    mounts = parse_mountinfo(mountinfo_text)
    v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]

    sources: dict[str, _Source] = {}
    for controller in _CONTROLLERS:
        v1_mounts = [m for m in mounts if m.fstype == "cgroup" and controller in m.options]
        if v1_mounts:
            path = v1_paths.get(controller, "/")
            mount = _pick_mount(v1_mounts, path)
            if mount is not None:
                levels = tuple(_levels(root, mount, path))
                sources[controller] = _Source(1, path, levels)
                continue
        if v2_mounts:
            path = v2_path if v2_path is not None else "/"
            mount = _pick_mount(v2_mounts, path)
            if mount is not None:
                sources[controller] = _Source(2, path, tuple(_levels(root, mount, path)))
    return sources


# --------------------------------------------------------------------------- CPUs


def _host_cpus(root: str) -> int:
    text = _read(os.path.join(root, "sys", "devices", "system", "cpu", "online"))
    cpus = parse_cpu_list(text) if text is not None else None
    if cpus:
        return len(cpus)
    return os.cpu_count() or 1


def _is_real_root(root: str) -> bool:
    return os.path.realpath(root) == "/"


def _real_affinity(pid: str) -> set[int] | None:
    if pid == "self":
        target = 0
    elif pid.isdigit():
        target = int(pid)
    else:
        return None
    try:
        return set(os.sched_getaffinity(target))
    except (AttributeError, OSError):
        return None


def _cpuset(source: _Source | None) -> tuple[int, ...] | None:
    """The intersection of the cpusets found up the tree (``None`` if none was readable)."""
    if source is None:
        return None
    name = "cpuset.cpus.effective" if source.version == 2 else "cpuset.cpus"
    found: set[int] | None = None
    for directory in source.levels:
        text = _read(os.path.join(directory, name))
        cpus = parse_cpu_list(text) if text is not None else None
        if cpus is not None:
            found = set(cpus) if found is None else found & set(cpus)
    return tuple(sorted(found)) if found else None


# --------------------------------------------------------------------------- budget


def read_budget(
    root: str = "/", pid: str = "self", affinity: Iterable[int] | None = None
) -> Budget:
    """Read the CPU, memory and task limits that apply to ``pid`` under ``root``.

    ``affinity`` overrides the CPU affinity set; when not given it is read with
    ``os.sched_getaffinity`` for the real root, and assumed to be every host CPU for a
    fake root.  Never raises for missing or malformed files: they mean "no limit".
    """
    pid = str(pid)
    sources = _sources(root, pid)
    cpu, memory, pids = sources.get("cpu"), sources.get("memory"), sources.get("pids")

    host_cpus = _host_cpus(root)
    affinity_set: set[int] | None
    if affinity is not None:
        affinity_set = set(affinity) or None
    elif _is_real_root(root):
        affinity_set = _real_affinity(pid) or None
    else:
        affinity_set = None
    affinity_cpus = len(affinity_set) if affinity_set else host_cpus

    quota_cpus: float | None = None
    if cpu is not None:
        quota_of = _v2_quota if cpu.version == 2 else _v1_quota
        quota_cpus = _tightest(quota_of(directory) for directory in cpu.levels)

    cpus = float(min(host_cpus, affinity_cpus))
    if quota_cpus is not None:
        cpus = min(cpus, quota_cpus)

    cpuset = _cpuset(sources.get("cpuset"))
    allowed: tuple[int, ...] = ()
    if cpuset is not None and affinity_set is not None:
        allowed = tuple(sorted(set(cpuset) & affinity_set)) or tuple(sorted(affinity_set))
    elif cpuset is not None:
        allowed = cpuset
    elif affinity_set is not None:
        allowed = tuple(sorted(affinity_set))

    memory_max: int | None = None
    memory_high: int | None = None
    if memory is not None:
        max_name = "memory.max" if memory.version == 2 else "memory.limit_in_bytes"
        memory_max = _tightest_int(
            read_cgroup_int(os.path.join(d, max_name)) for d in memory.levels
        )
        if memory.version == 2:
            memory_high = _tightest_int(
                read_cgroup_int(os.path.join(d, "memory.high")) for d in memory.levels
            )
    memory_budget = _tightest_int((memory_max, memory_high))

    tasks_max: int | None = None
    if pids is not None:
        tasks_max = _tightest_int(read_cgroup_int(os.path.join(d, "pids.max")) for d in pids.levels)

    v1_sources = [sources[n] for n in _CONTROLLERS if n in sources and sources[n].version == 1]
    if v1_sources:
        cgroup_version = 1
        cgroup_path = (cpu if cpu is not None and cpu.version == 1 else v1_sources[0]).cgroup_path
    elif sources:
        cgroup_version = 2
        cgroup_path = next(iter(sources.values())).cgroup_path
    else:
        cgroup_version = 0
        cgroup_path = ""

    return Budget(
        host_cpus=host_cpus,
        affinity_cpus=affinity_cpus,
        quota_cpus=quota_cpus,
        cpus=cpus,
        allowed_cpus=allowed,
        memory_max=memory_max,
        memory_high=memory_high,
        memory_budget=memory_budget,
        tasks_max=tasks_max,
        cgroup_version=cgroup_version,
        cgroup_path=cgroup_path,
    )


# --------------------------------------------------------------------------- sizing


def _whole_cpus(cpus: float) -> int:
    """``ceil(cpus)``, at least 1; rounding first so 2.0000000001 stays 2."""
    return max(1, math.ceil(round(cpus, 6)))


def workers_for(
    budget: Budget,
    model: str,
    per_worker_memory: int | None = None,
    minimum: int = 1,
    maximum: int | None = None,
) -> int:
    """How many workers to run for ``model`` ("gunicorn", "aio" or "swoole").

    See the module docstring for the rules.  Raises :class:`ValueError` for an unknown
    model, a non-positive ``per_worker_memory`` or ``minimum``, or ``maximum < minimum``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: expected one of {', '.join(MODELS)}")
    if per_worker_memory is not None and per_worker_memory <= 0:
        raise ValueError(f"per_worker_memory must be positive, got {per_worker_memory}")
    if minimum < 1:
        raise ValueError(f"minimum must be at least 1, got {minimum}")
    if maximum is not None and maximum < minimum:
        raise ValueError(f"maximum ({maximum}) is below minimum ({minimum})")

    cpus = _whole_cpus(budget.cpus)
    workers = 2 * cpus + 1 if model == "gunicorn" else cpus

    if budget.memory_budget is not None and per_worker_memory:
        if model == "gunicorn":
            fit = (budget.memory_budget - per_worker_memory // 2) // per_worker_memory
        else:
            fit = budget.memory_budget // per_worker_memory
        workers = min(workers, max(1, fit))

    if budget.tasks_max is not None:
        workers = min(workers, max(1, budget.tasks_max - _TASKS_RESERVE))

    workers = max(workers, minimum)
    if maximum is not None:
        workers = min(workers, maximum)
    return workers


def memory_limit_per_worker(budget: Budget, workers: int, headroom: float = 0.9) -> int | None:
    """Memory each worker may reach before it should be recycled, or ``None`` if unlimited.

    ``floor(memory_budget * headroom / (workers + 1))``; the ``+ 1`` is the master.
    """
    if workers < 0:
        raise ValueError(f"workers must not be negative, got {workers}")
    if not headroom > 0:
        raise ValueError(f"headroom must be positive, got {headroom}")
    if budget.memory_budget is None:
        return None
    return math.floor(budget.memory_budget * headroom / (workers + 1))


def cpu_affinity_map(budget: Budget, workers: int) -> list[tuple[int, ...]]:
    """Worker ``i`` -> a one-CPU tuple, round-robin over the allowed CPUs.

    Uses ``range(host_cpus)`` when the allowed set is unknown.
    """
    cpus = budget.allowed_cpus or tuple(range(max(1, budget.host_cpus)))
    return [(cpus[index % len(cpus)],) for index in range(max(0, workers))]
