"""The settings of the aio and swoole supervisors and the metrics and StatsD settings."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from procslice.data.addresses import _parse_listen
from procslice.data.errors import ProcsliceDataError, _Errors, _is_int, _is_number, _show
from procslice.data.sizes import procslice_size
from procslice.data.vocabulary import (
    AIO_DEFAULTS,
    AIO_KEYS,
    GUNICORN_KEY_HINTS,
    LOG_LEVELS,
    METRICS_DEFAULTS,
    METRICS_KEYS,
    STATSD_PREFIX_RE,
    SWOOLE_DEFAULTS,
    SWOOLE_KEYS,
)


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
