"""The vocabulary of the procslice data: names, models, keys and their defaults."""

from __future__ import annotations

import re
from typing import Any

from procslice.data import keys
from procslice.data.keys import INTERFACES, MODELS, STATES, WORKER_CLASSES

__all__ = ["INTERFACES", "MODELS", "STATES", "WORKER_CLASSES"]

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PACKAGE_KINDS = ("source", "wheel", "requirements")
HEALTH_KEYS = ("http", "tcp", "timeout")

# Tasks a service needs besides its workers' threads: the master (gunicorn arbiter,
# procslice supervisor) and the odd helper thread or ExecReload process.
TASKS_RESERVE = 4

# The resource keys a slice (at its top level) and a service (under `limits`) take, in
# the order their systemd directives are written.
RESOURCE_DIRECTIVES: dict[str, str] = {key.name: key.directive for key in keys.RESOURCES}
# Process limits only a service (a unit with processes) has.
SERVICE_ONLY_DIRECTIVES: dict[str, str] = {
    key.name: key.directive for key in keys.SERVICE_ONLY_RESOURCES
}
# docker-compose spellings -> canonical key.
COMPOSE_ALIASES: dict[str, str] = {key.alias: key.name for key in keys.RESOURCES if key.alias}
# docker-compose `reservations:` keys -> canonical key.
RESERVATION_ALIASES: dict[str, str] = {
    key.reservation: key.name for key in keys.RESOURCES if key.reservation
}
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

SLICE_KEYS = frozenset({*keys.SLICE_KEYS, "reservations", *COMPOSE_ALIASES})
SERVICE_LIMITS_KEYS = frozenset({*keys.LIMIT_KEYS, "reservations", *COMPOSE_ALIASES})


def _named(*, models: tuple[str, ...] | None = None, group: str = "") -> tuple[str, ...]:
    """The service keys of the table that the models read (exactly), or of a group."""
    return tuple(
        key.name
        for key in keys.SERVICE
        if key.group == group and (models is None or key.models == models)
    )


COMMON_SERVICE_KEYS = _named(models=keys.MODELS)
# The owner and mode of a unix socket in listen (SocketUser=/SocketGroup=/SocketMode=
# on the .socket unit); None for user and group: the service's own user and group.
SOCKET_DEFAULTS: dict[str, Any] = {"socket_user": None, "socket_group": None, "socket_mode": "0660"}
# sun_path is 108 bytes with the terminating NUL (unix(7)).
UNIX_PATH_MAX = 107
GUNICORN_KEYS = tuple(
    key.name
    for key in keys.SERVICE
    if "gunicorn" in key.models and not key.applies_to("aio") and key.models != keys.MODELS
)
# The settings of the procslice supervisors, the procslice.toml keys of the table
# (procslice.config reads them). AIO_KEYS apply to both `procslice aio` and `procslice
# swoole`; SWOOLE_KEYS only to swoole (procslice aio refuses them: config.SWOOLE_ONLY).
# `threads` (the worker's to_thread pool) is shared with gunicorn's gthread threads.
# The runtime's rlimit_as and rlimit_nofile are not offered: limits.limit_as /
# limits.limit_nofile set them on the unit, and the aio unit's system call filter would
# refuse a worker's setrlimit.
AIO_KEYS = _named(models=keys.SUPERVISOR)
SWOOLE_KEYS = _named(models=("swoole",))
# Metrics and StatsD, for every model that runs Python: gunicorn (prometheus_client's
# multiprocess mode, procslice.gunicorn_metrics; gunicorn's own statsd_host) and the
# aio and swoole runtimes; metrics_listen on podman too. statsd_prefix None: the
# service's name, or none with statsd_tags (the service is then a tag).
METRICS_KEYS = _named(group="metrics")
METRICS_DEFAULTS: dict[str, Any] = keys.defaults(tuple(keys.SERVICE_KEYS[k] for k in METRICS_KEYS))
# The runtime's defaults, filled in so templates and cross-checks see every value.
AIO_DEFAULTS: dict[str, Any] = keys.defaults(tuple(keys.SERVICE_KEYS[k] for k in AIO_KEYS))
SWOOLE_DEFAULTS: dict[str, Any] = keys.defaults(tuple(keys.SERVICE_KEYS[k] for k in SWOOLE_KEYS))
GUNICORN_DEFAULTS: dict[str, Any] = {
    name: keys.SERVICE_KEYS[name].default
    for name in GUNICORN_KEYS
    if keys.SERVICE_KEYS[name].check is not None
}
SUPERVISOR_THREADS: int = keys.runtime_default("threads")
LOG_LEVELS = keys.LOG_LEVELS
PODMAN_KEYS = _named(models=("podman",))
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
SERVICE_KEYS = frozenset(key.name for key in keys.SERVICE if key.data)

HEALTH_TIMEOUT = 10
HEALTH_PATH = "/healthz"
