"""The figures of each procslice service: its cgroup (through the cgroup reader of
:mod:`procslice.limits`), processes, health and request rates; the host's document."""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import datetime
import http.client
import os
import socket
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from procslice.limits import CgroupMount, cgroup_relative, parse_mountinfo, read_cgroup_int
from procslice.status.systemd import (
    APPLIED_DIR,
    SHOW_PROPERTIES,
    UNIT_RE,
    Runner,
    current_link,
    detect_model,
    last_exit,
    last_recycle,
    list_units,
    parse_activate_args,
    parse_applied,
    parse_exec_argv,
    parse_show,
    parse_timespan_usec,
    podman_image,
    run_command,
    show_int,
    unit_slices,
)

# The version of the JSON document (``--json``); raised when a field changes meaning.
SCHEMA = 1


HEALTH_TIMEOUT = 2.0


# Processes in a podman unit's cgroup that are podman's, not the container's (counted
# out when the container's own cgroup, libpod-payload-<id> under --cgroups=split, is not
# found).
PODMAN_HELPERS = frozenset(
    {"conmon", "podman", "catatonit", "fuse-overlayfs", "slirp4netns", "pasta", "rootlessport"}
)


PODMAN_PAYLOAD_PREFIX = "libpod-payload-"


_MAX_READ = 65536


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


def parse_request_counts(text: str) -> RequestCounts | None:
    """The per-request counters of a runtime's exposition (procslice_http_requests_total
    by code class, procslice_http_request_duration_seconds' buckets), summed over their
    other labels, read with prometheus_client's parser; None when it has none (or the
    text is not the Prometheus format)."""
    total = errors = 0.0
    buckets: dict[float, float] = {}
    found = False
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    for family in families:
        for sample in family.samples:
            if sample.name == "procslice_http_requests_total":
                found = True
                total += sample.value
                if sample.labels.get("code") == "5xx":
                    errors += sample.value
            elif sample.name == "procslice_http_request_duration_seconds_bucket":
                found = True
                bound = float(sample.labels.get("le", "+Inf"))
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
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


def cgroup_dir(
    mounts: Sequence[CgroupMount], root: str, cgroup_path: str, controller: str
) -> str | None:
    """The directory of ``cgroup_path`` for a controller: its v1 hierarchy if one is
    mounted, else the cgroup2 tree.  ``controller`` "systemd" is where the processes are
    tracked: the cgroup2 tree (v2, and hybrid's ``unified``), else name=systemd.  A path
    outside a mount's root (:func:`procslice.limits.cgroup_relative`) is not looked for
    under it."""
    v1_option = "name=systemd" if controller == "systemd" else controller
    v1 = [m for m in mounts if m.version == 1 and v1_option in m.options]
    v2 = [m for m in mounts if m.version == 2]
    candidates = (v2 + v1) if controller == "systemd" else (v1 or v2)
    for mount in candidates:
        relative = cgroup_relative(cgroup_path, mount.mount_root)
        if relative is None:
            continue
        directory = os.path.join(root, mount.mountpoint.lstrip("/"), relative)
        if os.path.isdir(directory):
            return directory.rstrip("/")
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(_MAX_READ)
    except OSError:
        return None


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
        usage = read_cgroup_int(os.path.join(dirs.cpuacct, "cpuacct.usage"))
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


def _tightest(
    values: Iterable[tuple[int | None, str]],
) -> tuple[int | None, str | None]:
    known = [(value, unit) for value, unit in values if value is not None]
    if not known:
        return None, None
    return min(known, key=lambda pair: pair[0])


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
    main_pid = show_int(props.get("MainPID"))
    status.main_pid = main_pid or None
    status.restarts = show_int(props.get("NRestarts")) or 0
    status.result = props.get("Result", "")
    status.last_exit = last_exit(
        show_int(props.get("ExecMainCode")), show_int(props.get("ExecMainStatus"))
    )
    status.status_text = props.get("StatusText", "")
    status.last_recycle = last_recycle(status.status_text)
    status.memory_bytes = show_int(props.get("MemoryCurrent"))
    status.tasks = show_int(props.get("TasksCurrent"))

    chain = [(unit, props)] + [
        (name, slices[name]) for name in unit_slices(status.slice) if name in slices
    ]
    quota, status.cpu_quota_from = _tightest(
        (parse_timespan_usec(p.get("CPUQuotaPerSecUSec")), name) for name, p in chain
    )
    status.cpu_quota_percent = quota / 10_000 if quota is not None else None
    status.memory_max_bytes, status.memory_max_from = _tightest(
        (show_int(p.get("MemoryMax")), name) for name, p in chain
    )
    status.memory_high_bytes, status.memory_high_from = _tightest(
        (show_int(p.get("MemoryHigh")), name) for name, p in chain
    )
    status.tasks_max, status.tasks_max_from = _tightest(
        (show_int(p.get("TasksMax")), name) for name, p in chain
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

    show_usage = {p.get("Id", ""): show_int(p.get("CPUUsageNSec")) for p in services}
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
                p.get("Id", ""): show_int(p.get("CPUUsageNSec")) for p in parse_show(again)
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
            status.memory_bytes = read_cgroup_int(
                os.path.join(status.cgroup_dirs.memory, "memory.usage_in_bytes")
            ) or read_cgroup_int(os.path.join(status.cgroup_dirs.memory, "memory.current"))
        if status.tasks is None and status.cgroup_dirs and status.cgroup_dirs.pids:
            status.tasks = read_cgroup_int(os.path.join(status.cgroup_dirs.pids, "pids.current"))

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
