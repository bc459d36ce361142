"""The vocabulary of the procslice data: names, models, keys and their defaults."""

from __future__ import annotations

import re
from typing import Any

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
