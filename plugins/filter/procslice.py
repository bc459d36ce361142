"""procslice filters: validate and normalise the procslice data (slices and services).

The logic lives in plain module-level functions so it can be imported and unit-tested
without Ansible; ``FilterModule`` only maps filter names onto them.

    procslice_size(value) -> int
        "512M", "1.5g", "64MiB", 1024 -> bytes (powers of 1024).
    procslice_normalize_slices(slices) -> list[dict]
        each slice with its unit name, systemd directives and parsed limits.
    procslice_normalize_services(services, slices=None) -> list[dict]
        each service with every default filled in, its directives and limits.
    procslice_errors(slices, services) -> list[str]
        every problem found, each message naming the variable path and the fix.
    procslice_layers(base, layers, kind) -> {"items": list[dict], "origins": dict}
        procslice_services (or _slices) and every procslice_services__* variable,
        merged by name in the order of the variables' names.
    procslice_errors_with_layers(messages, origins, kind) -> list[str]
        each message about a field a layer set names that layer.
    procslice_build_variants(services) -> list[dict]
        the services to build once each: one per distinct (name, package, model),
        each with its ``build_key``.
    procslice_build_pick(built, services) -> dict
        service name -> its wheelhouse, for the services one host runs.

The normalise filters raise ``ProcsliceDataError`` (a ``ValueError``) listing every
problem when the data is bad; ``procslice_errors`` returns them instead, which is what
the preflight role asserts on.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import ipaddress
import json
import os
import re
import shlex
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "FilterModule",
    "ProcsliceDataError",
    "procslice_build_key",
    "procslice_errors_with_layers",
    "procslice_layers",
    "procslice_layer_vars",
    "procslice_build_pick",
    "procslice_build_variants",
    "procslice_errors",
    "procslice_normalize_services",
    "procslice_normalize_slices",
    "procslice_size",
]


class ProcsliceDataError(ValueError):
    """The procslice data is invalid; the message says where and how to fix it."""


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CPUSET_RE = re.compile(r"^\d+(-\d+)?([ ,]\d+(-\d+)?)*$")
PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)%$")
SIZE_RE = re.compile(
    r"^(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?:(?P<unit>[kmgt])(?:i?b)?|b)?$", re.IGNORECASE
)
SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
SIZE_HINT = "write bytes or a number with K, M, G or T (e.g. 2G)"

MODELS = ("gunicorn", "aio", "swoole", "podman")
INTERFACES = ("wsgi", "asgi", "raw")
STATES = ("present", "absent")
WORKER_CLASSES = ("auto", "sync", "gthread", "uvicorn")
PACKAGE_KINDS = ("source", "wheel", "requirements")
HEALTH_KEYS = ("http", "tcp", "timeout")

# Tasks a service needs besides its workers' threads: the master (gunicorn arbiter,
# procslice supervisor) and the odd helper thread or ExecReload process.
TASKS_RESERVE = 4

# The resource keys a slice (at its top level) and a service (under `limits`) take, in
# the order their systemd directives are written.
RESOURCE_DIRECTIVES: dict[str, str] = {
    "cpu_quota": "CPUQuota",
    "cpu_weight": "CPUWeight",
    "memory_max": "MemoryMax",
    "memory_high": "MemoryHigh",
    "memory_low": "MemoryLow",
    "memory_swap_max": "MemorySwapMax",
    "tasks_max": "TasksMax",
    "io_read_bandwidth_max": "IOReadBandwidthMax",
    "io_write_bandwidth_max": "IOWriteBandwidthMax",
    "allowed_cpus": "AllowedCPUs",
}
# Process limits only a service (a unit with processes) has.
SERVICE_ONLY_DIRECTIVES: dict[str, str] = {
    "limit_nofile": "LimitNOFILE",
    "limit_as": "LimitAS",
}
# docker-compose spellings -> canonical key.
COMPOSE_ALIASES: dict[str, str] = {
    "cpus": "cpu_quota",
    "memory": "memory_max",
    "pids_limit": "tasks_max",
    "device_read_bps": "io_read_bandwidth_max",
    "device_write_bps": "io_write_bandwidth_max",
    "cpuset": "allowed_cpus",
}
# docker-compose `reservations:` keys -> canonical key.
RESERVATION_ALIASES: dict[str, str] = {"memory": "memory_low", "cpus": "cpu_weight"}
# Keys that look right but mean something else here: key -> the fix.
MISLEADING_KEYS: dict[str, str] = {
    "memswap_limit": (
        "compose's memswap_limit counts memory plus swap; procslice takes the swap alone: "
        "write memory_swap_max (e.g. memory_swap_max: 0 for no swap)"
    ),
}
LIMIT_KEYS = (
    "cpu_quota_percent",
    "memory_max",
    "memory_high",
    "memory_low",
    "memory_swap_max",
    "tasks_max",
    "cpu_weight",
    "allowed_cpus",
)
SERVICE_LIMIT_KEYS = (*LIMIT_KEYS, "limit_nofile", "limit_as")

SLICE_KEYS = frozenset({"name", "state", "reservations", *RESOURCE_DIRECTIVES, *COMPOSE_ALIASES})
SERVICE_LIMITS_KEYS = frozenset(
    {"reservations", *RESOURCE_DIRECTIVES, *SERVICE_ONLY_DIRECTIVES, *COMPOSE_ALIASES}
)

COMMON_SERVICE_KEYS = (
    "name",
    "model",
    "slice",
    "package",
    "app",
    "interface",
    "listen",
    "workers",
    "limits",
    "health",
    "env",
    "state",
    "directories",
    "purge",
    "socket_user",
    "socket_group",
    "socket_mode",
)
# The owner and mode of a unix socket in listen (SocketUser=/SocketGroup=/SocketMode=
# on the .socket unit); None for user and group: the service's own user and group.
SOCKET_DEFAULTS: dict[str, Any] = {"socket_user": None, "socket_group": None, "socket_mode": "0660"}
# sun_path is 108 bytes with the terminating NUL (unix(7)).
UNIX_PATH_MAX = 107
GUNICORN_KEYS = (
    "worker_class",
    "threads",
    "timeout",
    "graceful_timeout",
    "max_requests",
    "max_requests_jitter",
    "preload",
)
# The settings of the procslice supervisors, named as the TOML keys of
# src/procslice/config.py (the role writes them to /etc/procslice/<name>/procslice.toml).
# AIO_KEYS apply to both `procslice aio` and `procslice swoole`; SWOOLE_KEYS only to
# swoole (procslice aio refuses them: config.SWOOLE_ONLY). `threads` (the worker's
# to_thread pool) is shared with gunicorn's gthread threads. The runtime's rlimit_as and
# rlimit_nofile are not offered: limits.limit_as / limits.limit_nofile set them on the
# unit, and the aio unit's system call filter would refuse a worker's setrlimit.
AIO_KEYS = (
    "max_concurrency",
    "loop_lag_warn_ms",
    "tcp_nodelay",
    "max_wait_time",
    "keepalive_timeout",
    "forwarded_allow_ips",
    "log_level",
)
# Metrics and StatsD, for every model that runs Python: gunicorn (prometheus_client's
# multiprocess mode, procslice.gunicorn_metrics; gunicorn's own statsd_host) and the
# aio and swoole runtimes. metrics_listen "" is off: no endpoint unless the operator
# names an address (it has no authentication: use loopback); statsd "" is off too.
# statsd_prefix None: the service's name, or none with statsd_tags (the service is then
# a tag). request_metrics counts the per-request series (procslice_http_*).
METRICS_KEYS = ("metrics_listen", "request_metrics", "statsd", "statsd_prefix", "statsd_tags")
METRICS_DEFAULTS: dict[str, Any] = {
    "metrics_listen": "",
    "request_metrics": True,
    "statsd": "",
    "statsd_prefix": None,
    "statsd_tags": False,
}
STATSD_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
SWOOLE_KEYS = (
    "max_request",
    "max_request_grace",
    "memory_limit",
    "cpu_affinity",
    "task_worker_num",
    "task_max_request",
)
# The runtime's defaults (config.ServiceConfig), filled in so templates and
# cross-checks see every value.
AIO_DEFAULTS: dict[str, Any] = {
    "max_concurrency": 1024,
    "loop_lag_warn_ms": 100,
    "tcp_nodelay": True,
    "max_wait_time": 5,
    "keepalive_timeout": 5,
    "forwarded_allow_ips": [],
    "log_level": "info",
}
SWOOLE_DEFAULTS: dict[str, Any] = {
    "max_request": 0,
    "max_request_grace": 0,
    "memory_limit": "auto",
    "cpu_affinity": False,
    "task_worker_num": 0,
    "task_max_request": 0,
}
SUPERVISOR_THREADS = 8  # config.ServiceConfig.threads
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# A gunicorn key written on an aio or swoole service: what to write instead.
GUNICORN_KEY_HINTS: dict[str, str] = {
    "worker_class": "the supervisor runs its own workers: remove it",
    "timeout": "the supervisor has no request timeout (the unit's watchdog catches a hung "
    "master): remove it",
    "graceful_timeout": "the drain time is max_wait_time: write max_wait_time instead",
    "max_requests": "model swoole recycles with max_request (and max_request_grace): write "
    "that instead (aio does not recycle)",
    "max_requests_jitter": "model swoole's jitter is max_request_grace: write that instead",
    "preload": "the master never imports the app (so a reload runs new code): remove it",
}
PODMAN_KEYS = ("image", "image_archive", "ports", "command", "volumes", "pull", "podman_options")
# podman's pull policies; `pull: true` is missing (pull when the host lacks the image),
# `pull: false` is never (the image comes from image_archive or is on the hosts already).
PULL_POLICIES = ("never", "missing", "always", "newer")
# A podman unit's own cgroup holds conmon and, while it stops, `podman stop` and
# `podman rm` (a Go binary: tens of MiB and threads) besides the container's cgroup.
# The container gets the service's limits (--memory, --pids-limit); the unit gets them
# plus this headroom, so the app meets its container's limit first and podman can
# still stop a container that sits at its limit.
PODMAN_UNIT_MEMORY_HEADROOM = 64 * 1024**2
PODMAN_UNIT_TASKS_HEADROOM = 32
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SERVICE_KEYS = frozenset(
    {*COMMON_SERVICE_KEYS, *GUNICORN_KEYS, *AIO_KEYS, *SWOOLE_KEYS, *METRICS_KEYS, *PODMAN_KEYS}
)

GUNICORN_DEFAULTS: dict[str, Any] = {
    "timeout": 30,
    "graceful_timeout": 20,
    "max_requests": 1000,
    "max_requests_jitter": 100,
    "preload": False,
}
HEALTH_TIMEOUT = 10
HEALTH_PATH = "/healthz"


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Render a value the way the operator wrote it, strings quoted."""
    if isinstance(value, str):
        return json.dumps(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _human(size: int) -> str:
    """2147483648 -> "2G"; sizes that are not a whole K/M/G/T stay in bytes."""
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


def _format_percent(percent: Decimal) -> str:
    """Decimal percent -> the CPUQuota= value, at most two decimals ("33.33%")."""
    quantized = percent.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP).normalize()
    text = format(quantized, "f")
    return f"{text}%"


class _Errors:
    """Collects messages, each "<variable path>: <problem>; <fix>"."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")

    def unknown_keys(self, path: str, data: Mapping[str, Any], valid: Iterable[str]) -> None:
        valid = sorted(valid)
        for key in data:
            if key in valid:
                continue
            if key in MISLEADING_KEYS:
                self.add(f"{path}.{key}", MISLEADING_KEYS[key])
                continue
            self.add(
                f"{path}.{key}",
                f"unknown key; {_suggest(str(key), valid)}valid keys: {', '.join(valid)}",
            )


# --------------------------------------------------------------------------------------
# Sizes, quotas and other scalar parsers (each raises ProcsliceDataError)
# --------------------------------------------------------------------------------------


def procslice_size(value: Any) -> int:
    """A size in bytes: an int, or a number with K, M, G or T (powers of 1024).

    Case-insensitive, with an optional trailing B or iB: "512M", "2g", "1.5G", "64MiB",
    "100K", "1024". Fractions are rounded down to whole bytes.
    """
    if _is_int(value):
        if value < 0:
            raise ProcsliceDataError(f"{_show(value)} is not a size: it is negative; {SIZE_HINT}")
        return int(value)
    if isinstance(value, float) and not isinstance(value, bool):
        if value >= 0 and value.is_integer():
            return int(value)
        raise ProcsliceDataError(
            f"{_show(value)} is not a whole, positive number of bytes; {SIZE_HINT}"
        )
    if not isinstance(value, str):
        raise ProcsliceDataError(f"{_show(value)} is not a size; {SIZE_HINT}")
    text = str(value).strip()
    if text.startswith("-"):
        raise ProcsliceDataError(f"{_show(value)} is not a size: it is negative; {SIZE_HINT}")
    match = SIZE_RE.match(text)
    if not match:
        raise ProcsliceDataError(f"{_show(value)} is not a size; {SIZE_HINT}")
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation as exc:  # pragma: no cover - the regex only lets numbers in
        raise ProcsliceDataError(f"{_show(value)} is not a size; {SIZE_HINT}") from exc
    unit = match.group("unit")
    factor = SIZE_UNITS[unit.lower()] if unit else 1
    if unit is None and number != number.to_integral_value():
        raise ProcsliceDataError(f"{_show(value)} is not a whole number of bytes; {SIZE_HINT}")
    return int((number * factor).to_integral_value(rounding=ROUND_FLOOR))


def _size_or_infinity(value: Any) -> tuple[str, int | None]:
    """-> (directive value, bytes or None for infinity)."""
    if isinstance(value, str) and str(value).strip().lower() == "infinity":
        return "infinity", None
    size = procslice_size(value)
    return str(size), size


def _cpu_quota(value: Any) -> Decimal:
    """cpu_quota: "150%" -> Decimal(150)."""
    if isinstance(value, str):
        match = PERCENT_RE.match(str(value).strip())
        if match:
            percent = Decimal(match.group(1))
            if percent > 0:
                return percent
            raise ProcsliceDataError(f"{_show(value)} is not a CPU quota: it must be above 0%")
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        number = Decimal(str(value).strip())
        if number >= 10:  # "150" meant 150% far more often than 150 CPUs
            raise ProcsliceDataError(
                f'{_show(value)} is not a CPU quota; write "{value}%" ({value}% of one CPU), '
                f"or give a number of CPUs under cpus (cpus: {value} is {value} CPUs)"
            )
        raise ProcsliceDataError(
            f"{_show(value)} is not a CPU quota; write a percentage of one CPU "
            f'(e.g. "150%") or give a number of CPUs under cpus (e.g. cpus: {value})'
        )
    raise ProcsliceDataError(
        f'{_show(value)} is not a CPU quota; write a percentage of one CPU (e.g. "150%")'
    )


def _looks_numeric(text: str) -> bool:
    try:
        Decimal(str(text).strip())
    except InvalidOperation:
        return False
    return True


def _cpus(value: Any) -> Decimal:
    """compose cpus: 1.5 (or "1.5") -> Decimal(150) percent."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        cpus = Decimal(str(value).strip())
        if cpus > 0:
            return cpus * 100
    raise ProcsliceDataError(
        f"{_show(value)} is not a number of CPUs; write a number above 0 (e.g. 1.5)"
    )


def _cpu_weight(value: Any) -> int:
    if _is_int(value) or (isinstance(value, str) and str(value).strip().isdigit()):
        weight = int(value)
        if 1 <= weight <= 10000:
            return weight
    raise ProcsliceDataError(
        f"{_show(value)} is not a CPU weight; write an integer from 1 to 10000 (default 100)"
    )


def _reserved_cpus_weight(value: Any) -> int:
    """compose reservations.cpus: 0.5 -> CPUWeight 50 (x100, clamped to 1..10000)."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        cpus = Decimal(str(value).strip())
        if cpus > 0:
            weight = int((cpus * 100).to_integral_value(rounding=ROUND_HALF_UP))
            return max(1, min(10000, weight))
    raise ProcsliceDataError(
        f"{_show(value)} is not a number of CPUs; write a number above 0 (e.g. 0.5)"
    )


def _tasks_max(value: Any) -> tuple[str, int | None]:
    if isinstance(value, str) and str(value).strip().lower() == "infinity":
        return "infinity", None
    if _is_int(value) or (isinstance(value, str) and str(value).strip().isdigit()):
        tasks = int(value)
        if tasks >= 1:
            return str(tasks), tasks
    raise ProcsliceDataError(
        f"{_show(value)} is not a task limit; write a positive integer (e.g. 512) or infinity"
    )


def _limit_nofile(value: Any) -> tuple[str, int | None]:
    """LimitNOFILE: 65536, "1024:65536" (soft:hard) or infinity -> (directive, hard)."""
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if isinstance(value, bool):
        text = ""
    if text == "infinity":
        return "infinity", None
    parts = text.split(":")
    if text and len(parts) <= 2 and all(part.isdigit() and int(part) > 0 for part in parts):
        soft, hard = int(parts[0]), int(parts[-1])
        if soft <= hard:
            return text, hard
    raise ProcsliceDataError(
        f"{_show(value)} is not a file limit; write a positive integer (e.g. 65536), "
        "soft:hard (e.g. 1024:65536) or infinity"
    )


def _allowed_cpus(value: Any) -> str:
    text = str(value).strip() if _is_int(value) or isinstance(value, str) else ""
    if text and CPUSET_RE.match(text):
        ranges = [part for part in re.split(r"[ ,]", text) if part]
        if all(int(r.split("-")[0]) <= int(r.split("-")[-1]) for r in ranges):
            return text
    raise ProcsliceDataError(
        f'{_show(value)} is not a CPU list; write CPU numbers and ranges (e.g. "0-1" or "0,2-3")'
    )


def _bandwidth(value: Any, path: str, errors: _Errors) -> list[str]:
    """{dev: rate} or compose's [{path: dev, rate: rate}] -> ["<dev> <bytes>", ...]."""
    pairs: list[tuple[str, str, Any]] = []  # (path of the rate, device, rate)
    if isinstance(value, Mapping):
        pairs = [(f"{path}[{dev}]", dev, rate) for dev, rate in value.items()]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"path", "rate"}:
                errors.add(
                    f"{path}[{index}]",
                    f"{_show(item)} is not a device limit; write {{path: /dev/vda, rate: 50M}} "
                    '(or use the mapping form {"/dev/vda": 50M})',
                )
                continue
            pairs.append((f"{path}[{index}].rate", item["path"], item["rate"]))
    else:
        errors.add(
            path,
            f'{_show(value)} is not a device bandwidth map; write {{"/dev/vda": 50M}}',
        )
        return []
    lines: list[str] = []
    for rate_path, device, rate in pairs:
        if not isinstance(device, str) or not str(device).startswith("/"):
            errors.add(
                rate_path,
                f"{_show(device)} is not a device; write the absolute path of a block device "
                "or of a file on it (e.g. /dev/vda)",
            )
            continue
        try:
            text, size = _size_or_infinity(rate)
        except ProcsliceDataError as exc:
            errors.add(rate_path, str(exc))
            continue
        if size == 0:
            errors.add(
                rate_path, "0 would stop all IO; write a rate above 0 (e.g. 50M) or infinity"
            )
            continue
        lines.append(f"{device} {text}")
    return lines


# --------------------------------------------------------------------------------------
# Resources: a slice's top level, a service's `limits`
# --------------------------------------------------------------------------------------


def _resources(
    data: Mapping[str, Any], path: str, errors: _Errors, *, service: bool
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Parse resource keys (canonical and compose) -> (directives, limits, paths).

    ``paths`` maps each limit to the variable path the operator wrote it under (an alias
    such as ``limits.cpus`` for cpu_quota_percent), for the cross-check messages.
    """
    # canonical key -> (path of the key the operator wrote, value, which form)
    chosen: dict[str, tuple[str, Any, str]] = {}
    for key, value in data.items():
        if key in RESOURCE_DIRECTIVES or (service and key in SERVICE_ONLY_DIRECTIVES):
            chosen[key] = (f"{path}.{key}", value, "canonical")
        elif key in COMPOSE_ALIASES:
            canonical = COMPOSE_ALIASES[key]
            if canonical in data:
                _both(errors, f"{path}.{key}", canonical, path)
                continue
            chosen[canonical] = (f"{path}.{key}", value, key)
        elif key == "reservations":
            if not isinstance(value, Mapping):
                errors.add(
                    f"{path}.reservations",
                    f"{_show(value)} is not a mapping; write {{memory: 256M, cpus: 0.5}}",
                )
                continue
            errors.unknown_keys(f"{path}.reservations", value, RESERVATION_ALIASES)
            for sub, canonical in RESERVATION_ALIASES.items():
                if sub not in value:
                    continue
                if canonical in data:
                    _both(errors, f"{path}.reservations.{sub}", canonical, path)
                    continue
                chosen[canonical] = (
                    f"{path}.reservations.{sub}",
                    value[sub],
                    f"reservations.{sub}",
                )

    directives: dict[str, Any] = {}
    limits: dict[str, Any] = dict.fromkeys(SERVICE_LIMIT_KEYS if service else LIMIT_KEYS)
    order = [*RESOURCE_DIRECTIVES, *(SERVICE_ONLY_DIRECTIVES if service else ())]
    names = {**RESOURCE_DIRECTIVES, **SERVICE_ONLY_DIRECTIVES}
    for key in order:
        if key not in chosen:
            continue
        key_path, value, form = chosen[key]
        directive = names[key]
        try:
            if key == "cpu_quota":
                percent = _cpus(value) if form == "cpus" else _cpu_quota(value)
                directives[directive] = _format_percent(percent)
                limits["cpu_quota_percent"] = float(
                    percent.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
                )
            elif key == "cpu_weight":
                if form == "reservations.cpus":
                    weight = _reserved_cpus_weight(value)
                else:
                    weight = _cpu_weight(value)
                directives[directive] = str(weight)
                limits["cpu_weight"] = weight
            elif key in ("memory_max", "memory_high", "memory_low", "memory_swap_max", "limit_as"):
                text, size = _size_or_infinity(value)
                directives[directive] = text
                limits[key] = size
            elif key == "tasks_max":
                directives[directive], limits["tasks_max"] = _tasks_max(value)
            elif key == "limit_nofile":
                directives[directive], limits["limit_nofile"] = _limit_nofile(value)
            elif key == "allowed_cpus":
                directives[directive] = limits["allowed_cpus"] = _allowed_cpus(value)
            else:  # io_read_bandwidth_max, io_write_bandwidth_max
                lines = _bandwidth(value, key_path, errors)
                if lines:
                    directives[directive] = lines
        except ProcsliceDataError as exc:
            errors.add(key_path, str(exc))

    for lower, upper in (("memory_high", "memory_max"), ("memory_low", "memory_max")):
        low, high = limits.get(lower), limits.get(upper)
        if low is not None and high is not None and low > high:
            errors.add(
                chosen[lower][0],
                f"{_human(low)} is above {chosen[upper][0]} ({_human(high)}); "
                f"{lower} must be at most {upper}: lower it or raise {upper}",
            )
    limit_names = {"cpu_quota": "cpu_quota_percent"}
    paths = {limit_names.get(key, key): chosen[key][0] for key in chosen}
    return directives, limits, paths


def _both(errors: _Errors, alias_path: str, canonical: str, parent: str) -> None:
    alias = alias_path.rsplit(".", 1)[-1]
    if alias_path.endswith(f"reservations.{alias}"):
        alias = f"reservations.{alias}"
    errors.add(
        alias_path,
        f"{alias} is the compose spelling of {canonical}, and {parent}.{canonical} is set too; "
        "keep only one of them",
    )


# --------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------


def _entry_path(var: str, index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if isinstance(name, str) and name and re.match(r"^[\w.-]+$", str(name)):
        return f"{var}[{name}]"
    return f"{var}[{index}]"


def _as_list(value: Any, var: str, errors: _Errors) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    errors.add(var, f"{_show(value)} is not a list; write a list of mappings (- name: ...)")
    return []


def _check_name(entry: Mapping[str, Any], path: str, errors: _Errors) -> str | None:
    name = entry.get("name")
    if name is None:
        errors.add(f"{path}.name", "missing; every entry needs a name (e.g. name: web)")
        return None
    if not isinstance(name, str) or not NAME_RE.match(str(name)):
        errors.add(
            f"{path}.name",
            f"{_show(name)} is not a valid name; use 1 to 41 lower-case letters, digits and "
            "'-', starting with a letter (e.g. api)",
        )
        return None
    return str(name)


def _check_state(entry: Mapping[str, Any], path: str, errors: _Errors) -> str:
    state = entry.get("state", "present")
    if state not in STATES:
        errors.add(f"{path}.state", f"{_show(state)} is not a state; use present or absent")
        return "present"
    return str(state)


def _slices(slices: Any, errors: _Errors) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(_as_list(slices, "procslice_slices", errors)):
        path = _entry_path("procslice_slices", index, entry)
        if not isinstance(entry, Mapping):
            errors.add(path, f"{_show(entry)} is not a mapping; write name: web and its limits")
            continue
        errors.unknown_keys(path, entry, SLICE_KEYS)
        name = _check_name(entry, path, errors)
        state = _check_state(entry, path, errors)
        resources = {k: v for k, v in entry.items() if k not in ("name", "state")}
        directives, limits, paths = _resources(resources, path, errors, service=False)
        if name == "procslice":
            errors.add(
                f"{path}.name",
                "'procslice' is the parent slice itself (procslice.slice, set with "
                "procslice_slices_parent_directives); name the slice after what runs in it "
                "(e.g. web)",
            )
            continue
        if name is None:
            continue
        if name in seen:
            errors.add(
                f"{path}.name",
                f"{_show(name)} is defined twice (entries {seen[name]} and {index}); "
                "slice names must be unique: merge or rename one",
            )
            continue
        seen[name] = index
        result.append(
            {
                "name": name,
                "unit": f"procslice-{name}.slice",
                "state": state,
                "directives": directives,
                "limits": limits,
                "_paths": paths,
            }
        )
    # systemd reads '-' in a slice name as a level: procslice-web-api.slice is a child of
    # procslice-web.slice, so a slice "web-api" would silently sit inside slice "web".
    names = {s["name"] for s in result}
    for sl in result:
        parts = sl["name"].split("-")
        for cut in range(1, len(parts)):
            parent = "-".join(parts[:cut])
            if parent in names:
                errors.add(
                    f"procslice_slices[{sl['name']}].name",
                    f"{_show(sl['name'])} would nest inside slice {parent} (systemd reads '-' "
                    f"in a slice name as a level: {sl['unit']} is a child of "
                    f"procslice-{parent}.slice); rename it without that prefix "
                    f"(e.g. {sl['name'].replace('-', '')})",
                )
                break
    return result


# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------


def _parse_unix_listen(value: str) -> str:
    """ "unix:/run/procslice/api/http.sock" -> "/run/procslice/api/http.sock"."""
    socket_path = value[len("unix:") :]
    hint = 'write an absolute path (e.g. "unix:/run/procslice/api/http.sock")'
    if not socket_path:
        raise ProcsliceDataError(f"{_show(value)} has no path after unix:; {hint}")
    if not socket_path.startswith("/"):
        raise ProcsliceDataError(
            f"{_show(value)}: {_show(socket_path)} is a relative path (systemd binds it "
            f"before the service has a working directory); {hint}"
        )
    size = len(socket_path.encode())
    if size > UNIX_PATH_MAX:
        raise ProcsliceDataError(
            f"{_show(value)}: the path is {size} bytes, over the {UNIX_PATH_MAX} a unix socket "
            "address holds; use a shorter path (e.g. under /run/procslice/)"
        )
    if any(part in (".", "..") for part in socket_path.split("/")) or socket_path.endswith("/"):
        raise ProcsliceDataError(
            f"{_show(value)}: {_show(socket_path)} is not a normalized file path; {hint}"
        )
    return socket_path


def _parse_listen(value: Any) -> tuple[str, int]:
    """ "0.0.0.0:8000" / "[::1]:8000" -> (host, port)."""
    hint = 'write an IP address and a port (e.g. "0.0.0.0:8000" or "[::]:8000")'
    if not isinstance(value, str) or ":" not in value:
        raise ProcsliceDataError(f"{_show(value)} is not host:port; {hint}")
    host, _, port_text = str(value).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise ProcsliceDataError(
                f"{_show(value)}: {host} is not an IPv6 address; {hint}"
            ) from exc
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise ProcsliceDataError(
                f"{_show(value)}: {_show(host)} is not an IPv4 address (socket activation binds "
                f"addresses, not names; IPv6 goes in brackets); {hint}"
            ) from exc
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ProcsliceDataError(f"{_show(value)}: the port must be 1 to 65535; {hint}")
    return host, int(port_text)


def _parse_publish(value: Any) -> tuple[str, int, str] | None:
    """podman/compose ports: "8080:80", "127.0.0.1:8080:80/tcp", "80" -> (host ip, host port,
    protocol), or None when no host port is published."""
    hint = 'write "HOST_PORT:CONTAINER_PORT" or "IP:HOST_PORT:CONTAINER_PORT" (e.g. "8080:80")'
    if _is_int(value):
        if 1 <= value <= 65535:
            return None  # a container port only: podman picks a random host port
        raise ProcsliceDataError(
            f"{_show(value)} is not a port mapping; {hint}; quote it: YAML reads unquoted "
            "a:b as a base-60 number"
        )
    if not isinstance(value, str):
        raise ProcsliceDataError(f"{_show(value)} is not a port mapping; {hint}")
    text, _, proto = str(value).partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ProcsliceDataError(f"{_show(value)}: unknown protocol {proto}; {hint}")
    if text.startswith("["):  # [::1]:8080:80
        close = text.find("]")
        ip, rest = text[1:close], text[close + 2 :]
        parts = rest.split(":")
    else:
        parts = text.split(":")
        ip = parts.pop(0) if len(parts) == 3 else "0.0.0.0"
    if len(parts) == 1:
        host_port, container_port = None, parts[0]
    elif len(parts) == 2:
        host_port, container_port = parts
    else:
        raise ProcsliceDataError(f"{_show(value)} is not a port mapping; {hint}")
    try:
        ipaddress.ip_address(ip or "0.0.0.0")
    except ValueError as exc:
        raise ProcsliceDataError(f"{_show(value)}: {ip} is not an IP address; {hint}") from exc
    for port in (host_port, container_port):
        if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise ProcsliceDataError(f"{_show(value)}: ports must be 1 to 65535; {hint}")
    if host_port is None:
        return None
    host = f"[{ip}]" if ":" in (ip or "") else (ip or "0.0.0.0")
    return host, int(host_port), proto


def _positive_int(value: Any) -> int | None:
    if _is_int(value) and value > 0:
        return int(value)
    if isinstance(value, str) and str(value).strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def _env(value: Any, path: str, errors: _Errors) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{LOG_LEVEL: info}}")
        return {}
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.match(str(key)):
            errors.add(
                f"{path}.{key}",
                f"{_show(key)} is not an environment variable name; use letters, digits and _, "
                "not starting with a digit (e.g. LOG_LEVEL)",
            )
            continue
        if isinstance(item, (Mapping, list)):
            errors.add(f"{path}.{key}", f"{_show(item)} is not a scalar; write a string")
            continue
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif item is None:
            text = ""
        else:
            text = str(item)
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            errors.add(
                f"{path}.{key}",
                "contains a control character (newline, tab, NUL...); write a single-line "
                "value of printable characters",
            )
            continue
        env[str(key)] = text
    return env


def _service(entry: Mapping[str, Any], path: str, errors: _Errors) -> dict[str, Any] | None:
    """Normalise one service; per-service checks only (cross-checks come later)."""
    errors.unknown_keys(path, entry, SERVICE_KEYS)
    name = _check_name(entry, path, errors)
    state = _check_state(entry, path, errors)
    present = state == "present"

    model = entry.get("model")
    if model not in MODELS:
        if model is None:
            errors.add(f"{path}.model", f"missing; set one of: {', '.join(MODELS)}")
        else:
            errors.add(
                f"{path}.model",
                f"{_show(model)} is not a model; use one of: {', '.join(MODELS)}",
            )
        model = None

    # slice
    slice_name = entry.get("slice")
    if slice_name is not None and not isinstance(slice_name, str):
        errors.add(f"{path}.slice", f"{_show(slice_name)} is not a slice name")
        slice_name = None

    # interface
    interface = entry.get("interface")
    if interface is not None and interface not in INTERFACES:
        errors.add(
            f"{path}.interface",
            f"{_show(interface)} is not an interface; use one of: {', '.join(INTERFACES)}",
        )
        interface = None
    if interface is None and "interface" not in entry:
        interface = {"gunicorn": "wsgi", "aio": "asgi", "swoole": "asgi"}.get(model or "")
    if model == "gunicorn" and interface == "raw":
        errors.add(
            f"{path}.interface",
            "gunicorn serves wsgi or asgi apps; a raw asyncio protocol needs model aio or swoole",
        )
    if model in ("aio", "swoole") and interface == "wsgi":
        errors.add(
            f"{path}.interface",
            f"procslice {model} serves asgi apps and raw asyncio protocols, not wsgi; "
            "use model gunicorn for a wsgi app, or set interface: asgi for an ASGI app",
        )

    # package, app, image
    package = entry.get("package")
    if present and model in ("gunicorn", "aio", "swoole"):
        _check_package(package, f"{path}.package", errors)
        app = entry.get("app")
        if not app:
            errors.add(
                f"{path}.app",
                f"missing; model {model} needs the app to load as module:attribute "
                '(e.g. app: "api.main:app")',
            )
        elif not isinstance(app, str) or _app_problem(app):
            errors.add(
                f"{path}.app",
                f"{_show(app)} is not module:attribute or module:factory(...) "
                f"({_app_problem(app) if isinstance(app, str) else 'not a string'}); write "
                'e.g. "api.main:app", or "api.main:create_app()" for an app factory',
            )
    elif package is not None and present:
        _check_package(package, f"{path}.package", errors)
    if present and model == "podman":
        image = entry.get("image")
        if not image or not isinstance(image, str):
            errors.add(
                f"{path}.image",
                "missing; model podman runs an image: set image (e.g. "
                "image: docker.io/library/nginx:1.27, plus image_archive to load it from a file)",
            )

    # listen / ports
    listen_raw = entry.get("listen", [])
    if isinstance(listen_raw, str):
        listen_raw = [listen_raw]
    if not isinstance(listen_raw, list):
        errors.add(f"{path}.listen", f'{_show(listen_raw)} is not a list; write ["0.0.0.0:8000"]')
        listen_raw = []
    listen: list[str] = []
    ports: list[int] = []
    binds: list[tuple[str, int, str, str]] = []  # (host, port, proto, key path)
    # unix sockets in listen: (path, key path), checked across services in _cross_checks
    unix_binds: list[tuple[str, str]] = []
    for index, item in enumerate(listen_raw):
        if isinstance(item, str) and item.strip().startswith("unix:"):
            if model == "podman":
                errors.add(
                    f"{path}.listen[{index}]",
                    f"{_show(item)}: a podman service cannot listen on a unix socket (its "
                    "ports are published by podman); publish a port with ports (e.g. "
                    '"127.0.0.1:8080:80") or run the app under gunicorn, aio or swoole',
                )
                continue
            try:
                socket_path = _parse_unix_listen(item.strip())
            except ProcsliceDataError as exc:
                errors.add(f"{path}.listen[{index}]", str(exc))
                continue
            if f"unix:{socket_path}" in listen:
                errors.add(f"{path}.listen[{index}]", f"{item} is listed twice; remove one")
                continue
            listen.append(f"unix:{socket_path}")
            unix_binds.append((socket_path, f"{path}.listen[{index}]"))
            continue
        try:
            host, port = _parse_listen(item)
        except ProcsliceDataError as exc:
            errors.add(f"{path}.listen[{index}]", str(exc))
            continue
        listen.append(f"{host}:{port}")
        ports.append(port)
        binds.append((host, port, "tcp", f"{path}.listen"))
    if "ports" in entry:
        if model == "podman":
            publish = entry["ports"]
            if not isinstance(publish, list):
                errors.add(f"{path}.ports", f'{_show(publish)} is not a list; write ["8080:80"]')
                publish = []
            for index, item in enumerate(publish):
                try:
                    parsed = _parse_publish(item)
                except ProcsliceDataError as exc:
                    errors.add(f"{path}.ports[{index}]", str(exc))
                    continue
                if parsed:
                    host, port, proto = parsed
                    binds.append((host, port, proto, f"{path}.ports"))
                    if proto == "tcp" and f"{host}:{port}" not in listen:
                        listen.append(f"{host}:{port}")
                        ports.append(port)
        elif model is not None:
            errors.add(
                f"{path}.ports",
                "ports is podman's list of published ports; a "
                f'{model} service listens through listen (e.g. listen: ["0.0.0.0:8000"])',
            )

    # workers
    workers: Any = entry.get("workers", "auto")
    if workers != "auto":
        number = _positive_int(workers)
        if number is None:
            errors.add(
                f"{path}.workers",
                f"{_show(workers)} is not a worker count; write auto or a positive integer",
            )
            workers = "auto"
        else:
            workers = number

    # gunicorn settings (accepted and ignored on other models)
    worker_class = entry.get("worker_class", "auto")
    if worker_class not in WORKER_CLASSES:
        errors.add(
            f"{path}.worker_class",
            f"{_show(worker_class)} is not a worker class; use one of: {', '.join(WORKER_CLASSES)}",
        )
        worker_class = "auto"
    if model == "gunicorn":
        if worker_class == "auto":
            worker_class = "uvicorn" if interface == "asgi" else "sync"
        elif interface == "asgi" and worker_class != "uvicorn":
            errors.add(
                f"{path}.worker_class",
                f"{worker_class} workers cannot serve an asgi app; use uvicorn (or auto)",
            )
        elif interface == "wsgi" and worker_class == "uvicorn":
            errors.add(
                f"{path}.worker_class",
                "uvicorn workers serve asgi apps; use sync or gthread for wsgi (or auto), "
                "or set interface: asgi",
            )
    else:
        worker_class = None
    if model in ("aio", "swoole"):
        threads_default = SUPERVISOR_THREADS
    else:
        threads_default = 4 if worker_class == "gthread" else 1
    threads: Any = entry.get("threads", threads_default)
    if _positive_int(threads) is None:
        errors.add(
            f"{path}.threads", f"{_show(threads)} is not a thread count; write a positive integer"
        )
        threads = threads_default
    threads = int(threads)
    if model == "gunicorn" and "threads" in entry and worker_class in ("sync", "uvicorn"):
        errors.add(
            f"{path}.threads",
            f"threads only applies to worker_class gthread (this service resolves to "
            f"{worker_class}); set worker_class: gthread or remove threads",
        )
    settings: dict[str, Any] = {}
    for key, default in GUNICORN_DEFAULTS.items():
        value = entry.get(key, default)
        if key == "preload":
            ok = isinstance(value, bool)
            want = "true or false"
        elif key == "timeout":
            ok = _is_int(value) and value > 0
            want = "a positive number of seconds"
        else:
            ok = _is_int(value) and value >= 0
            want = "a number, 0 or more"
        if not ok:
            errors.add(f"{path}.{key}", f"{_show(value)} is not valid; write {want}")
            value = default
        settings[key] = value

    # limits
    limits_raw = entry.get("limits") or {}
    if not isinstance(limits_raw, Mapping):
        errors.add(
            f"{path}.limits", f"{_show(limits_raw)} is not a mapping; write {{memory_max: 1G}}"
        )
        limits_raw = {}
    errors.unknown_keys(f"{path}.limits", limits_raw, SERVICE_LIMITS_KEYS)
    directives, limits, limit_paths = _resources(limits_raw, f"{path}.limits", errors, service=True)

    # health
    health = _health(entry.get("health"), f"{path}.health", errors, model, interface, listen)

    # the aio and swoole supervisors' settings (refused on the models that ignore them)
    supervisor = _supervisor_settings(entry, path, errors, model)
    metrics = _metrics_settings(entry, path, errors, model, name)
    # podman: the image, its source and the run flags derived from `limits`
    podman = _podman_settings(entry, path, errors, model, directives, limits, limit_paths)
    if model == "podman":
        directives = _podman_unit_directives(directives, limits)

    env = _env(entry.get("env"), f"{path}.env", errors)
    directories = _directories(entry.get("directories"), f"{path}.directories", errors, model, name)
    purge = entry.get("purge", False)
    if not isinstance(purge, bool):
        errors.add(f"{path}.purge", f"{_show(purge)} is not true or false")
        purge = False
    sockets = _socket_settings(entry, path, errors, model)
    if name is None:
        return None
    sockets["socket_user"] = sockets["socket_user"] or f"procslice-{name}"
    sockets["socket_group"] = sockets["socket_group"] or f"procslice-{name}"
    service: dict[str, Any] = {
        "name": name,
        "model": model,
        "unit": f"procslice-{name}",
        "user": f"procslice-{name}",
        "slice": slice_name,
        "slice_unit": f"procslice-{slice_name}.slice" if slice_name else "procslice.slice",
        "state": state,
        "package": package,
        "app": entry.get("app"),
        "interface": interface,
        "listen": listen,
        "workers": workers,
        "worker_class": worker_class,
        "threads": threads,
        **settings,
        "health": health,
        "env": env,
        "directories": directories,
        "purge": purge,
        "directives": directives,
        "limits": limits,
        # the host ports the service answers on (podman: its published tcp ports; the
        # publish list itself is `publish`)
        "ports": ports,
        "_binds": binds,
        "_unix_binds": unix_binds,
        # the unix socket paths of listen (for the .socket unit's SocketUser= and co.)
        "unix_listen": [socket_path for socket_path, _ in unix_binds],
        "_paths": limit_paths,
        **sockets,
        **supervisor,
        **metrics,
        **podman,
    }
    # every other key (model-specific settings for the later roles) passes through unchanged
    for key, value in entry.items():
        service.setdefault(key, value)
    return service


# directories: KIND -> (systemd's directive, the root of /PATH/procslice/NAME)
DIRECTORY_KINDS = {
    "state": ("StateDirectory", "/var/lib"),
    "cache": ("CacheDirectory", "/var/cache"),
    "logs": ("LogsDirectory", "/var/log"),
}
_SUBDIR_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")


# procslice's own files in those roots: a service of that name gets no directories
RESERVED_DIRECTORY_NAMES = frozenset(
    {"applied", "base", "drained", "front", "images", "wheelhouse"}
)


def _directories(
    value: Any, path: str, errors: _Errors, model: str | None, name: str | None = None
) -> dict[str, list[str]]:
    """directories: {state: true | [subdir, ...], cache: ..., logs: ...} -> kind ->
    the subdirectories to create ([] for the directory alone); kinds not asked for are
    left out. systemd creates /var/lib/procslice/NAME etc. for the service's user and
    keeps them across releases, restarts and rollbacks."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{state: [uploads]}}")
        return {}
    if model == "podman":
        errors.add(
            path,
            "a podman service keeps its data in volumes; write volumes: "
            '["/var/lib/procslice/NAME:/data"] or a named volume instead',
        )
        return {}
    errors.unknown_keys(path, value, tuple(DIRECTORY_KINDS))
    if name in RESERVED_DIRECTORY_NAMES:
        errors.add(
            path,
            f"procslice keeps its own files in /var/lib/procslice/{name} or "
            f"/var/cache/procslice/{name}; rename the service to give it directories",
        )
        return {}
    result: dict[str, list[str]] = {}
    for kind in DIRECTORY_KINDS:
        if kind not in value or value[kind] is False:
            continue
        wanted = value[kind]
        if wanted is True:
            result[kind] = []
            continue
        if not isinstance(wanted, list) or not all(isinstance(sub, str) for sub in wanted):
            errors.add(
                f"{path}.{kind}",
                f"{_show(wanted)} is not true or a list of subdirectories; write "
                f"{kind}: true, or {kind}: [uploads, tmp]",
            )
            continue
        for sub in wanted:
            if not _SUBDIR_RE.match(sub) or ".." in sub.split("/"):
                errors.add(
                    f"{path}.{kind}",
                    f"{_show(sub)} is not a relative subdirectory; write a path below the "
                    f"service's directory, e.g. uploads or media/thumbs",
                )
        result[kind] = sorted(set(wanted))
    return result


def _supervisor_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None
) -> dict[str, Any]:
    """The aio/swoole settings with their defaults; errors for keys on the wrong model.

    The checks mirror src/procslice/config.py, so a value that passes here starts.
    ``memory_limit`` stays as written (``"auto"``, ``"200M"``); ``memory_limit_bytes`` is
    its value in bytes (None for auto, 0 for off).
    """
    if model is None or model == "podman":
        return {}
    supervisor = model in ("aio", "swoole")
    for key in SWOOLE_KEYS:
        if key not in entry or model == "swoole":
            continue
        if model == "aio":
            fix = (
                "procslice aio does not recycle, pin or run task workers; "
                "use model: swoole, or remove it"
            )
        elif key == "task_worker_num":
            fix = "gunicorn has no task workers; use model: swoole for them, or remove it"
        elif key == "max_request":
            fix = "gunicorn's setting is max_requests (with max_requests_jitter); write that"
        else:
            fix = "gunicorn does not read it; use model: swoole, or remove it"
        errors.add(f"{path}.{key}", f"is a swoole setting; {fix}")
    for key in AIO_KEYS:
        if key in entry and not supervisor:
            fix = (
                "gunicorn's drain time is graceful_timeout: write that instead"
                if key == "max_wait_time"
                else "gunicorn does not read it; use model aio or swoole, or remove it"
            )
            errors.add(f"{path}.{key}", f"is a setting of the aio and swoole supervisors; {fix}")
    if not supervisor:
        return {}
    for key, hint in GUNICORN_KEY_HINTS.items():
        if key in entry:
            errors.add(f"{path}.{key}", f"is a gunicorn setting; {hint}")

    defaults = {**AIO_DEFAULTS, **(SWOOLE_DEFAULTS if model == "swoole" else {})}
    settings = _checked(entry, path, errors, defaults, _supervisor_problem)
    if model == "swoole":
        limit = settings["memory_limit"]
        settings["memory_limit_bytes"] = None if limit == "auto" else procslice_size(limit)
        if settings["max_request_grace"] and not settings["max_request"]:
            errors.add(
                f"{path}.max_request_grace",
                "only spreads max_request, which is 0 (off); set max_request too "
                "(e.g. max_request: 10000), or remove max_request_grace",
            )
    return settings


def _checked(
    entry: Mapping[str, Any],
    path: str,
    errors: _Errors,
    defaults: Mapping[str, Any],
    problem_of: Callable[[str, Any], str | None],
) -> dict[str, Any]:
    """Each key of ``defaults`` from the entry, or its default; a value ``problem_of``
    refuses is reported under ``path.key`` and replaced by the default."""
    settings: dict[str, Any] = {}
    for key, default in defaults.items():
        value = entry.get(key, default)
        problem = problem_of(key, value)
        if problem:
            errors.add(f"{path}.{key}", f"{_show(value)} {problem}")
            value = default
        settings[key] = value
    return settings


def _metrics_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None, name: str | None
) -> dict[str, Any]:
    """metrics_listen, request_metrics and the StatsD keys with their defaults (gunicorn,
    aio and swoole); errors for them on podman. ``statsd_prefix`` comes out resolved
    (the service's name unless set, or "" with statsd_tags) and ``_metrics_bind`` is the
    parsed ``metrics_listen`` for the port cross-check."""
    if model is None:
        return {}
    if model == "podman":
        for key in METRICS_KEYS:
            if key in entry and key != "metrics_listen":
                errors.add(
                    f"{path}.{key}",
                    "a podman service's app runs in its image: procslice cannot count its "
                    "requests or send its figures (the host's exporter reports the unit's "
                    "CPU, memory, tasks and IO, and with metrics_listen the app's own "
                    "/metrics); remove it",
                )
        # Where the image's app serves its own Prometheus text (/metrics), as the host
        # reaches it: one of its published ports, so no bind of its own to cross-check.
        return _checked(entry, path, errors, {"metrics_listen": ""}, _metrics_problem)
    settings = _checked(entry, path, errors, METRICS_DEFAULTS, _metrics_problem)
    if settings["metrics_listen"]:
        host, port = _parse_listen(settings["metrics_listen"])
        settings["_metrics_bind"] = (host, port, "tcp", f"{path}.metrics_listen")
    if settings["statsd_prefix"] is None:
        settings["statsd_prefix"] = "" if settings["statsd_tags"] else (name or "")
    return settings


def _metrics_problem(key: str, value: Any) -> str | None:
    """What is wrong with one metrics or StatsD setting, or None."""
    if key in ("request_metrics", "statsd_tags"):
        return None if isinstance(value, bool) else "is not true or false"
    if key == "metrics_listen":
        if value == "":
            return None
        try:
            _parse_listen(value)
        except ProcsliceDataError as exc:
            return f'is not an address ({exc}); or write "" for no metrics endpoint'
        return None
    if key == "statsd":
        return _statsd_problem(value)
    # statsd_prefix
    if value is None or (isinstance(value, str) and (value == "" or STATSD_PREFIX_RE.match(value))):
        return None
    return (
        'is not a StatsD prefix; write dot-separated parts of letters, digits, "_" and "-" '
        '(e.g. "api" or "prod.api"), or "" for none'
    )


def _statsd_problem(value: Any) -> str | None:
    """What is wrong with a statsd address, or None ("" is off)."""
    if value == "":
        return None
    fix = (
        "write the IP address and UDP port of the StatsD server (or the Datadog agent), "
        'e.g. statsd: "127.0.0.1:8125", or "" for none'
    )
    if not isinstance(value, str) or ":" not in value:
        return f"is not IP:port; {fix}"
    host, _, port = value.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return (
            f"is not IP:port: {_show(host)} is not an IP address (the runtimes look no name "
            f"up; IPv6 goes in brackets); {fix}"
        )
    if address.version == 6 and not bracketed:
        return f"is not IP:port: write an IPv6 address in brackets ([{host}]:PORT); {fix}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"is not IP:port: the port must be 1 to 65535; {fix}"
    return None


def _forwarded_problem(value: Any) -> str | None:
    """What is wrong with a forwarded_allow_ips list, or None."""
    fix = (
        'write a list of the proxies\' IP addresses or networks (e.g. ["10.0.0.5"]), '
        '["*"] to trust any peer, or [] to ignore X-Forwarded-* headers'
    )
    if not isinstance(value, list):
        return f"is not a list; {fix}"
    for item in value:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item if isinstance(item, str) else "", strict=False)
        except ValueError:
            return f"has {_show(item)}, which is not an IP address or network; {fix}"
    return None


def _supervisor_problem(key: str, value: Any) -> str | None:
    """What is wrong with one aio/swoole setting, or None."""
    if key in ("tcp_nodelay", "cpu_affinity"):
        if isinstance(value, bool):
            return None
        if key == "cpu_affinity":
            return (
                "is not true or false; true pins worker i to the i-th CPU the service may "
                "use (its slice's or its own allowed_cpus); choose the CPUs with allowed_cpus"
            )
        return "is not true or false"
    if key == "max_wait_time":
        if _is_number(value) and 0 <= value < float("inf"):
            return None
        return "is not a number of seconds; write a number, 0 or more (e.g. 10)"
    if key == "keepalive_timeout":
        if _is_number(value) and 0 < value < float("inf"):
            return None
        return "is not a number of seconds above 0; write e.g. 5 (uvicorn's default) or 75"
    if key == "forwarded_allow_ips":
        return _forwarded_problem(value)
    if key == "memory_limit":
        if value == "auto":
            return None
        try:
            procslice_size(value)
        except ProcsliceDataError:
            return (
                "is not a memory limit; write auto (a share of the memory budget), a size "
                "such as 200M, or 0 to turn recycling on memory off"
            )
        return None
    if key == "log_level":
        if value in LOG_LEVELS:
            return None
        return f"is not a log level; use one of: {', '.join(LOG_LEVELS)}"
    # the counts: max_concurrency, loop_lag_warn_ms, max_request, max_request_grace,
    # task_worker_num, task_max_request
    if _is_int(value) and value >= 0:
        return None
    return "is not valid; write an integer, 0 or more"


def _podman_settings(
    entry: Mapping[str, Any],
    path: str,
    errors: _Errors,
    model: str | None,
    directives: Mapping[str, Any],
    limits: Mapping[str, Any],
    limit_paths: Mapping[str, str],
) -> dict[str, Any]:
    """A podman service's image, source, command, volumes and run flags.

    -> ``image``, ``image_archive`` (as written, or None), ``pull`` (one of
    PULL_POLICIES), ``command`` and ``volumes`` (lists of strings), ``publish`` (the
    `ports` list as podman --publish takes it) and ``podman_args``: podman run's
    resource flags derived from the same ``limits`` as the unit's directives (the unit
    keeps those too, so the slice-level cgroup caps podman's own processes as well).
    Limits podman cannot express at the container are errors naming the limit.
    """
    if model != "podman":
        return {}
    image = entry.get("image")
    archive = entry.get("image_archive")
    if archive is not None and (not isinstance(archive, str) or not str(archive).strip()):
        errors.add(
            f"{path}.image_archive",
            f"{_show(archive)} is not a path; write the path of an image archive on the "
            "controller (made by podman save), e.g. files/api-image.tar.gz",
        )
        archive = None
    pullable = isinstance(image, str) and _pullable_name(str(image))

    pull_raw = entry.get("pull")
    if pull_raw is None:
        # podman's own default (missing), except for what no registry serves: an image
        # from an archive, a localhost/ image, a short name (no search registries here)
        pull = "missing" if pullable and not archive else "never"
    elif isinstance(pull_raw, bool):
        pull = "missing" if pull_raw else "never"
    elif pull_raw in PULL_POLICIES:
        pull = str(pull_raw)
    else:
        errors.add(
            f"{path}.pull",
            f"{_show(pull_raw)} is not a pull policy; write true (pull when the host lacks "
            "the image), false (never: it comes from image_archive or is on the hosts "
            "already), always or newer",
        )
        pull = "never"
    if archive and pull != "never":
        errors.add(
            f"{path}.pull",
            f"{pull} pulls the image that image_archive loads; remove pull (an archive is "
            "never pulled) or remove image_archive",
        )
    elif pull != "never" and isinstance(image, str) and not pullable:
        if str(image).startswith("localhost/"):
            why = "a localhost/ image is built locally: no registry serves it"
        else:
            why = (
                "podman resolves no short names here (no unqualified-search registries); "
                "write the registry too (e.g. docker.io/library/nginx:1.27)"
            )
        errors.add(
            f"{path}.image",
            f"{_show(image)} cannot be pulled: {why}; or ship it with image_archive "
            "(podman save), or set pull: false if it is on the hosts already",
        )

    command_raw = entry.get("command")
    command: list[str] = []
    if isinstance(command_raw, str):
        try:
            command = shlex.split(str(command_raw))
        except ValueError as exc:
            errors.add(f"{path}.command", f"{_show(command_raw)} does not parse ({exc})")
    elif isinstance(command_raw, list) and all(
        isinstance(arg, (str, int, float)) and not isinstance(arg, bool) for arg in command_raw
    ):
        command = [str(arg) for arg in command_raw]
    elif command_raw is not None:
        errors.add(
            f"{path}.command",
            f'{_show(command_raw)} is not a command; write a list (["serve", "--port", "80"]) '
            "or a string",
        )

    volumes: list[str] = []
    volumes_raw = entry.get("volumes") or []
    if not isinstance(volumes_raw, list):
        errors.add(
            f"{path}.volumes", f'{_show(volumes_raw)} is not a list; write ["/srv/data:/data"]'
        )
        volumes_raw = []
    for index, volume in enumerate(volumes_raw):
        parts = str(volume).split(":") if isinstance(volume, str) else []
        ok = 2 <= len(parts) <= 3 and parts[1].startswith("/")
        ok = ok and (parts[0].startswith("/") or bool(VOLUME_NAME_RE.match(parts[0])))
        if not ok:
            errors.add(
                f"{path}.volumes[{index}]",
                f"{_show(volume)} is not a volume; write SOURCE:DESTINATION[:OPTIONS] with an "
                'absolute host path or a volume name as the source (e.g. "/srv/data:/data:ro")',
            )
            continue
        volumes.append(str(volume))

    # The service's own podman run options, after the host's procslice_podman_run_options
    # (e.g. --cap-add=NET_BIND_SERVICE, --read-only=false, --userns=host).
    options_raw = entry.get("podman_options") or []
    options: list[str] = []
    if not isinstance(options_raw, list):
        errors.add(
            f"{path}.podman_options",
            f'{_show(options_raw)} is not a list; write ["--cap-add=NET_BIND_SERVICE"]',
        )
        options_raw = []
    for index, option in enumerate(options_raw):
        if not isinstance(option, str) or not option.startswith("--") or "\n" in option:
            errors.add(
                f"{path}.podman_options[{index}]",
                f"{_show(option)} is not a podman run option; write one option with its "
                'value, e.g. "--cap-add=NET_BIND_SERVICE" or "--read-only=false"',
            )
            continue
        options.append(option)

    ports_raw = entry.get("ports") or []
    publish = [str(item) for item in ports_raw] if isinstance(ports_raw, list) else []
    return {
        "image": image,
        "image_archive": archive,
        "pull": pull,
        "command": command,
        "volumes": volumes,
        "publish": publish,
        "podman_args": _podman_limit_args(path, errors, directives, limits, limit_paths),
        "podman_options": options,
    }


def _podman_unit_directives(
    directives: Mapping[str, Any], limits: Mapping[str, Any]
) -> dict[str, Any]:
    """A podman unit's directives: the container's memory and task limits plus the
    headroom of podman's own processes (PODMAN_UNIT_MEMORY_HEADROOM, _TASKS_)."""
    unit = dict(directives)
    if limits.get("memory_max") is not None and "MemoryMax" in unit:
        unit["MemoryMax"] = str(limits["memory_max"] + PODMAN_UNIT_MEMORY_HEADROOM)
    if limits.get("tasks_max") is not None and "TasksMax" in unit:
        unit["TasksMax"] = str(limits["tasks_max"] + PODMAN_UNIT_TASKS_HEADROOM)
    return unit


def _pullable_name(image: str) -> bool:
    """A fully qualified name from a registry (docker.io/library/nginx:1.27)."""
    first, slash, _ = image.partition("/")
    return bool(slash) and first != "localhost" and ("." in first or ":" in first)


def _podman_limit_args(
    path: str,
    errors: _Errors,
    directives: Mapping[str, Any],
    limits: Mapping[str, Any],
    limit_paths: Mapping[str, str],
) -> list[str]:
    """podman run's flags for the service's limits (the unit's directives stay as well)."""

    def where(limit: str) -> str:
        return limit_paths.get(limit, f"{path}.limits.{limit}")

    args: list[str] = []
    if limits["cpu_quota_percent"] is not None:
        cpus = (Decimal(str(limits["cpu_quota_percent"])) / 100).normalize()
        args.append(f"--cpus={format(cpus, 'f')}")
    if limits["cpu_weight"] is not None:
        # systemd's own CPUWeight -> cpu.shares mapping (weight 100 = 1024 shares)
        args.append(f"--cpu-shares={max(2, limits['cpu_weight'] * 1024 // 100)}")
    memory = limits["memory_max"]
    if memory is not None:
        args.append(f"--memory={memory}")
    if "MemorySwapMax" in directives:
        if memory is None:
            errors.add(
                where("memory_swap_max"),
                "podman sets swap with --memory-swap (memory plus swap), which needs a "
                "memory limit; set memory_max too, or remove memory_swap_max",
            )
        else:
            swap = limits["memory_swap_max"]
            args.append(f"--memory-swap={-1 if swap is None else memory + swap}")
    if limits["memory_low"] is not None:
        args.append(f"--memory-reservation={limits['memory_low']}")
    if "TasksMax" in directives:
        tasks = limits["tasks_max"]
        args.append(f"--pids-limit={-1 if tasks is None else tasks}")
    for key, directive, flag in (
        ("io_read_bandwidth_max", "IOReadBandwidthMax", "--device-read-bps"),
        ("io_write_bandwidth_max", "IOWriteBandwidthMax", "--device-write-bps"),
    ):
        for line in directives.get(directive, []):
            device, _, rate = str(line).rpartition(" ")
            if rate == "infinity":
                errors.add(
                    where(key),
                    f"podman's {flag} takes a rate, not infinity ({device}); give a rate "
                    "or leave the device out",
                )
                continue
            args.append(f"{flag}={device}:{rate}")
    if limits["allowed_cpus"] is not None:
        args.append(f"--cpuset-cpus={','.join(re.split(r'[ ,]+', limits['allowed_cpus']))}")
    if "LimitNOFILE" in directives:
        nofile = str(directives["LimitNOFILE"])
        if nofile == "infinity":
            errors.add(
                where("limit_nofile"),
                "podman's --ulimit cannot set an unlimited nofile; write a number "
                "(e.g. 65536) or soft:hard",
            )
        else:
            soft, _, hard = nofile.partition(":")
            args.append(f"--ulimit=nofile={soft}:{hard or soft}")
    if "LimitAS" in directives:
        errors.add(
            where("limit_as"),
            "podman cannot set an address-space limit on a container (its --ulimit has no "
            "'as'), and LimitAS= on the unit would bind podman itself; remove limit_as "
            "(memory_max caps the container's memory)",
        )
    return args


def _check_package(package: Any, path: str, errors: _Errors) -> None:
    fix = (
        "set exactly one of source (a directory with a pyproject.toml), wheel (a .whl file) "
        "or requirements (a requirements.txt)"
    )
    if package is None:
        errors.add(path, f"missing; {fix}")
        return
    if not isinstance(package, Mapping):
        errors.add(path, f"{_show(package)} is not a mapping; {fix}")
        return
    errors.unknown_keys(path, package, PACKAGE_KINDS)
    given = [kind for kind in PACKAGE_KINDS if package.get(kind)]
    if len(given) != 1:
        if not given:
            what = "none of them is set"
        elif len(given) == 2:
            what = f"both {given[0]} and {given[1]} are set"
        else:
            what = "source, wheel and requirements are all set"
        errors.add(path, f"{what}; {fix}")
        return
    if not isinstance(package[given[0]], str):
        errors.add(f"{path}.{given[0]}", f"{_show(package[given[0]])} is not a path")


def _socket_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None
) -> dict[str, Any]:
    """socket_user, socket_group and socket_mode: the unix sockets' owner and mode."""
    settings = dict(SOCKET_DEFAULTS)
    for key in ("socket_user", "socket_group"):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]*[$]?", value):
            errors.add(
                f"{path}.{key}",
                f"{_show(value)} is not a user or group name; write e.g. www-data, or leave it "
                "out for the service's own",
            )
            continue
        settings[key] = value
    mode = entry.get("socket_mode", SOCKET_DEFAULTS["socket_mode"])
    if not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3}", mode):
        errors.add(
            f"{path}.socket_mode",
            f'{_show(mode)} is not an octal mode; write it quoted, e.g. "0660"',
        )
    else:
        settings["socket_mode"] = mode.zfill(4)
    if model == "podman":
        for key in SOCKET_DEFAULTS:
            if key in entry:
                errors.add(
                    f"{path}.{key}",
                    "a podman service has no unix socket in listen; remove it",
                )
    return settings


def _health_url(http: Any, listen: list[str], tcp: bool = False) -> str | None:
    """The URL a host probes for its own health check: the first listen address, a
    wildcard (0.0.0.0, [::]) probed on loopback; tcp://HOST:PORT for a TCP check (a
    connection accepted is healthy). A unix socket gives http+unix://PATH/HTTP_PATH
    (unix://PATH for a TCP-style check) with the socket path percent-encoded, /
    included: http+unix://%2Frun%2Fprocslice%2Fapi%2Fhttp.sock/healthz."""
    if not listen or not (isinstance(http, str) or tcp is True):
        return None
    if str(listen[0]).startswith("unix:"):
        quoted = urllib.parse.quote(str(listen[0])[len("unix:") :], safe="")
        return f"http+unix://{quoted}{http}" if isinstance(http, str) else f"unix://{quoted}"
    host, _, port = str(listen[0]).rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    if isinstance(http, str):
        return f"http://{host}:{port}{http}"
    return f"tcp://{host}:{port}"


def _health(
    value: Any,
    path: str,
    errors: _Errors,
    model: str | None,
    interface: str | None,
    listen: list[str],
) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{http: /healthz, timeout: 10}}")
        value = {}
    errors.unknown_keys(path, value, HEALTH_KEYS)
    speaks_http = bool(listen) and model != "podman" and interface in ("wsgi", "asgi")
    http = value.get("http", HEALTH_PATH if speaks_http and "tcp" not in value else None)
    if http is False:
        http = None
    if http is not None and (not isinstance(http, str) or not str(http).startswith("/")):
        errors.add(f"{path}.http", f"{_show(http)} is not a URL path; write e.g. /healthz")
        http = None
    if http is not None and not listen:
        errors.add(f"{path}.http", "the service does not listen; add listen or remove health.http")
    tcp = value.get("tcp", bool(listen) and http is None)
    if not isinstance(tcp, bool):
        errors.add(f"{path}.tcp", f"{_show(tcp)} is not true or false")
        tcp = False
    if tcp and not listen:
        errors.add(f"{path}.tcp", "the service does not listen; add listen or remove health.tcp")
    timeout = value.get("timeout", HEALTH_TIMEOUT)
    if not _is_number(timeout) or timeout <= 0:
        errors.add(
            f"{path}.timeout",
            f"{_show(timeout)} is not a timeout; write a positive number of seconds",
        )
        timeout = HEALTH_TIMEOUT
    return {
        "http": http,
        "tcp": tcp,
        "timeout": timeout,
        "url": _health_url(http, listen, tcp),
        # /healthz by default, not set by the data: the plan names such a service until
        # its gate has passed once (few apps serve /healthz)
        "default": http is not None and "http" not in value,
    }


def _app_problem(ref: str) -> str | None:
    """What is wrong with an app reference, or None: "module:attr.sub", or
    "module:factory(literal args)" (what the runtime's config.parse_app accepts, and
    gunicorn too; the runtime is not importable here)."""
    module, sep, expr = ref.partition(":")
    if not sep or not module or not expr.strip():
        return "no colon between the module and the attribute"
    if not all(part.isidentifier() for part in module.split(".")):
        return f"{module!r} is not a module path"
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return f"{expr!r} is not an attribute or a call of one"
    if isinstance(node, ast.Call):
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return "a factory takes literal arguments, not *args or **kwargs"
        try:
            for value in [*node.args, *(k.value for k in node.keywords)]:
                ast.literal_eval(value)
        except ValueError:
            return "a factory's arguments must be literals (numbers, strings, lists, dicts)"
        node = node.func
    while isinstance(node, ast.Attribute):
        node = node.value
    if not isinstance(node, ast.Name):
        return f"{expr!r} is not an attribute or a call of one"
    return None


def _services(services: Any, errors: _Errors) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(_as_list(services, "procslice_services", errors)):
        path = _entry_path("procslice_services", index, entry)
        if not isinstance(entry, Mapping):
            errors.add(path, f"{_show(entry)} is not a mapping; write name: api, model: ... ")
            continue
        service = _service(entry, path, errors)
        if service is None:
            continue
        name = service["name"]
        if name in seen:
            errors.add(
                f"{path}.name",
                f"{_show(name)} is defined twice (entries {seen[name]} and {index}); "
                "service names must be unique: merge or rename one",
            )
            continue
        seen[name] = index
        service["_path"] = path
        result.append(service)
    return result


# --------------------------------------------------------------------------------------
# Cross-checks
# --------------------------------------------------------------------------------------


def _cross_check(
    slices: list[dict[str, Any]], services: list[dict[str, Any]], errors: _Errors
) -> None:
    by_name = {s["name"]: s for s in slices}
    present = [s for s in services if s["state"] == "present"]

    # every slice exists (and is not being removed)
    for svc in present:
        name = svc["slice"]
        if name is None:
            continue
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none defined yet"
            errors.add(
                f"{svc['_path']}.slice",
                f"{_show(name)} is not a slice; define it in procslice_slices "
                f"or use one of: {known}",
            )
        elif by_name[name]["state"] == "absent":
            errors.add(
                f"procslice_slices[{name}].state",
                f"absent, but service {svc['name']} still uses it; move or remove "
                f"{svc['_path']} first",
            )

    # a service's limit is not above its slice's
    for svc in present:
        sl = by_name.get(svc["slice"] or "")
        if sl is None:
            continue
        for limit in ("cpu_quota_percent", "memory_max", "memory_high", "tasks_max"):
            own, theirs = svc["limits"][limit], sl["limits"][limit]
            if own is None or theirs is None or own <= theirs:
                continue
            mine_text, theirs_text = _show_limit(limit, own), _show_limit(limit, theirs)
            errors.add(
                svc["_paths"][limit],
                f"{mine_text} is above its slice's {sl['_paths'][limit]} "
                f"({theirs_text}); lower it to at most {theirs_text} or raise the slice's",
            )

    # swoole's memory_limit (the RSS at which a worker is recycled) is below the memory
    # the unit may have at all: above it the kernel OOM-kills before any recycling
    for svc in present:
        limit = svc.get("memory_limit_bytes")
        if not limit:
            continue
        sl = by_name.get(svc["slice"] or "")
        bounds = []
        if svc["limits"]["memory_max"] is not None:
            bounds.append((svc["limits"]["memory_max"], svc["_paths"]["memory_max"]))
        if sl is not None and sl["limits"]["memory_max"] is not None:
            bounds.append((sl["limits"]["memory_max"], sl["_paths"]["memory_max"]))
        if not bounds:
            continue
        bound, where = min(bounds)
        if limit >= bound:
            errors.add(
                f"{svc['_path']}.memory_limit",
                f"{_human(limit)} is not below {where} ({_human(bound)}): the kernel would "
                "OOM-kill a worker before it is recycled; write auto (a share of the budget "
                f"per worker) or a size well below {_human(bound)}",
            )

    # workers fit in tasks_max
    needs: dict[str, list[tuple[str, int]]] = {}
    for svc in present:
        if not _is_int(svc["workers"]) or svc["model"] == "podman":
            continue
        threads = svc["threads"]
        per_worker = threads + 1 if threads > 1 else 1
        # a swoole task worker is one more process (one task) beside the workers
        need = svc["workers"] * per_worker + svc.get("task_worker_num", 0) + TASKS_RESERVE
        sl = by_name.get(svc["slice"] or "")
        bounds = []
        if svc["limits"]["tasks_max"] is not None:
            bounds.append((svc["limits"]["tasks_max"], svc["_paths"]["tasks_max"]))
        if sl is not None and sl["limits"]["tasks_max"] is not None:
            bounds.append((sl["limits"]["tasks_max"], sl["_paths"]["tasks_max"]))
            needs.setdefault(sl["name"], []).append((svc["name"], need))
        if not bounds:
            continue
        bound, where = min(bounds)
        if need > bound:
            each = f"{per_worker} tasks" if per_worker > 1 else "1 task"
            errors.add(
                f"{svc['_path']}.workers",
                f"{svc['workers']} workers need {need} tasks ({each} each + {TASKS_RESERVE} for "
                f"the master) but {where} is {bound}; lower workers (at most "
                f"{max(0, (bound - TASKS_RESERVE) // per_worker)}), use auto, or raise tasks_max",
            )
    for slice_name, items in needs.items():
        total = sum(n for _, n in items)
        bound = by_name[slice_name]["limits"]["tasks_max"]
        if len(items) > 1 and total > bound:
            detail = " + ".join(f"{name} {n}" for name, n in items)
            errors.add(
                by_name[slice_name]["_paths"]["tasks_max"],
                f"{bound} is below the {total} tasks its services' workers need together "
                f"({detail}); raise it or lower their workers",
            )

    # no two services on one unix socket
    socket_owners: dict[str, str] = {}
    for svc in present:
        for socket_path, key_path in svc.get("_unix_binds", []):
            if socket_path in socket_owners:
                errors.add(
                    key_path,
                    f"unix:{socket_path} is also {socket_owners[socket_path]}; give each "
                    f"service a socket of its own (e.g. unix:/run/procslice/{svc['name']}/"
                    "http.sock)",
                )
            else:
                socket_owners[socket_path] = key_path

    # no two services on one port of one address
    owners: list[tuple[str, int, str, str, str]] = []  # host, port, proto, owner path, key path
    for svc in present:
        mine: dict[tuple[str, int, str], str] = {}
        binds = list(svc["_binds"])
        metrics = svc.get("_metrics_bind")
        if metrics is not None:
            m_host, m_port, _, m_path = metrics
            own = [b for b in binds if b[1] == m_port]
            if any(b[0] == m_host or _wildcard(b[0]) or _wildcard(m_host) for b in own):
                errors.add(
                    m_path,
                    f"{m_host}:{m_port} is one of this service's listen addresses; give the "
                    f"metrics endpoint its own port (e.g. 127.0.0.1:{m_port + 1000})",
                )
            else:
                binds.append(metrics)
        for host, port, proto, key_path in binds:
            if (host, port, proto) in mine:
                # podman may name a published port in listen too: that is one socket
                if mine[(host, port, proto)] == key_path:
                    errors.add(key_path, f"{host}:{port} is listed twice; remove one")
                continue
            mine[(host, port, proto)] = key_path
            for o_host, o_port, o_proto, o_owner, _ in owners:
                if o_port != port or o_proto != proto or o_owner == svc["_path"]:
                    continue
                if host == o_host or _wildcard(host) or _wildcard(o_host):
                    errors.add(
                        key_path,
                        f"{host}:{port} collides with {o_owner} ({o_host}:{o_port}); "
                        "give one of them another port or a distinct address",
                    )
                    break
            owners.append((host, port, proto, svc["_path"], key_path))


def _show_limit(limit: str, value: float) -> str:
    if limit == "cpu_quota_percent":
        return f"{value:g}%"
    if limit == "tasks_max":
        return str(value)
    return _human(int(value))


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "[::]")


def _check(
    slices: Any, services: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], _Errors]:
    errors = _Errors()
    norm_slices = _slices(slices, errors)
    norm_services = _services(services, errors)
    _cross_check(norm_slices, norm_services, errors)
    return norm_slices, norm_services, errors


def _raise(errors: _Errors) -> None:
    if errors.messages:
        lines = "\n".join(f"- {message}" for message in errors.messages)
        raise ProcsliceDataError(f"invalid procslice data:\n{lines}")


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop the internal bookkeeping keys (they start with _)."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------


def procslice_normalize_slices(slices: Any) -> list[dict[str, Any]]:
    """Each slice -> {name, unit, state, directives, limits}; raises on invalid data."""
    errors = _Errors()
    result = _slices(slices, errors)
    _raise(errors)
    return [_public(sl) for sl in result]


def procslice_normalize_services(services: Any, slices: Any | None = None) -> list[dict[str, Any]]:
    """Each service with its defaults filled; raises on invalid data.

    With ``slices`` given, the cross-checks (slices exist, limits within the slice's,
    ports, workers against tasks_max) run too.
    """
    errors = _Errors()
    if slices is None:
        result = _services(services, errors)
    else:
        _, result, errors = _check(slices, services)
    _raise(errors)
    return [_public(service) for service in result]


def procslice_errors(slices: Any, services: Any, base_dir: str | None = None) -> list[str]:
    """Every problem in the data, each "<variable path>: <problem>; <fix>".

    Besides the data it checks the controller's files the deploy ships: every podman
    ``image_archive`` exists (a relative path from ``base_dir``, by default the
    current directory: where ansible-playbook runs, the playbook's directory).
    """
    _, norm_services, errors = _check(slices, services)
    _check_image_archives(norm_services, errors, base_dir)
    return errors.messages


def _check_image_archives(
    services: list[dict[str, Any]], errors: _Errors, base_dir: str | None
) -> None:
    for svc in services:
        archive = svc.get("image_archive")
        if svc["state"] != "present" or svc["model"] != "podman" or not archive:
            continue
        full = os.path.join(base_dir or os.getcwd(), os.path.expanduser(str(archive)))
        if not os.path.isfile(full):
            errors.add(
                f"{svc['_path']}.image_archive",
                f"{_show(archive)} is not a file on the controller (looked for {full}); "
                f"save the image there first (podman save IMAGE | gzip > {archive}) "
                "or fix the path",
            )


def _merge(base: Any, over: Any) -> Any:
    """A later layer's value over an earlier one's: mappings key by key, the rest replaced."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


_LAYERED = ("procslice_services", "procslice_slices")


def procslice_layers(
    base: Any, layers: Mapping[str, Any] | None, kind: str = "procslice_services"
) -> dict[str, Any]:
    """``kind`` (the base list) and its layers (``kind__*`` variables: name -> list),
    merged: entries by ``name``, the layers in the order of their variable names (e.g.
    procslice_services__10_common, procslice_services__50_web, procslice_services__90_host),
    a later layer's fields over an earlier one's (mappings such as env and limits key by
    key). An entry of a new name is added at the end. ``origins``: entry name -> field ->
    the variable that set it last (for the preflight's messages). Entries that are not
    mappings with a name are kept as they are, for the checks to report."""
    items: list[Any] = []
    index: dict[str, int] = {}
    origins: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    sources = [(kind, base)] + sorted((layers or {}).items())
    for variable, entries in sources:
        if entries is None:
            continue
        if not isinstance(entries, list):
            errors.append(
                f"{variable}: {_show(entries)} is not a list; write a list of entries, "
                "each with its name (merged by name into the others)"
            )
            continue
        for entry in entries:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str):
                items.append(entry)
                continue
            fields = origins.setdefault(name, {})
            for key in entry:
                fields[key] = variable
            if name in index:
                items[index[name]] = _merge(items[index[name]], entry)
            else:
                index[name] = len(items)
                items.append(dict(entry))
    return {"items": items, "origins": origins, "errors": errors}


def procslice_layer_vars(
    hosts: Iterable[str], hostvars: Mapping[str, Any], kinds: Iterable[str] = _LAYERED
) -> list[dict[str, Any]]:
    """The hosts that have inventory layers, each with its layer variables' names by kind:
    ``[{"host": h, "procslice_services": [...], "procslice_slices": [...]}]``; hosts
    without any ``procslice_services__*`` or ``procslice_slices__*`` variable are left
    out (preflight merges nothing there)."""
    out = []
    for host in hosts:
        names = list(hostvars[host].keys())
        found = {
            kind: sorted(
                name for name in names if name.startswith(f"{kind}__") and name != f"{kind}__"
            )
            for kind in kinds
        }
        if any(found.values()):
            out.append({"host": host, **found})
    return out


def procslice_errors_with_layers(
    messages: Iterable[str], origins: Mapping[str, Mapping[str, str]], kind: str
) -> list[str]:
    """Each message about ``kind[NAME].FIELD`` set by a layer (not by ``kind`` itself)
    names the variable it came from: ``... (set in procslice_services__web)``."""
    pattern = re.compile(rf"^{re.escape(kind)}\[([^\]]+)\]\.(\w+)")
    out = []
    for message in messages:
        match = pattern.match(message)
        layer = (origins.get(match.group(1)) or {}).get(match.group(2)) if match else None
        if layer and layer != kind:
            message = f"{message} (set in {layer})"
        out.append(message)
    return out


def procslice_build_key(service: Mapping[str, Any]) -> str:
    """What a wheelhouse is built from, as a key: the name, the package and the model.

    Two hosts may run one service name from different packages (a new version on a
    canary host first): each gets its own wheelhouse."""
    what = json.dumps(
        {"package": service.get("package"), "model": service.get("model")},
        sort_keys=True,
        default=str,
    )
    return f"{service['name']}@{hashlib.sha256(what.encode()).hexdigest()[:10]}"


def procslice_build_variants(services: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every distinct build of the services (normalised), each once, with its key."""
    seen: dict[str, dict[str, Any]] = {}
    for service in services:
        key = procslice_build_key(service)
        seen.setdefault(key, dict(service, build_key=key))
    return list(seen.values())


def procslice_build_pick(
    built: Mapping[str, Any], services: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The wheelhouses of one host's services, by service name."""
    picked: dict[str, Any] = {}
    for service in services:
        key = procslice_build_key(service)
        if key in built:
            picked[service["name"]] = built[key]
    return picked


class FilterModule:
    """procslice filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "procslice_size": procslice_size,
            "procslice_normalize_slices": procslice_normalize_slices,
            "procslice_normalize_services": procslice_normalize_services,
            "procslice_errors": procslice_errors,
            "procslice_layers": procslice_layers,
            "procslice_layer_vars": procslice_layer_vars,
            "procslice_errors_with_layers": procslice_errors_with_layers,
            "procslice_build_variants": procslice_build_variants,
            "procslice_build_pick": procslice_build_pick,
        }
