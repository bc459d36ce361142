"""The settings of the aio and swoole supervisors and the metrics and StatsD settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procslice_controller.addresses import _parse_listen
from procslice_controller.errors import _checked, _Errors
from procslice_controller.sizes import procslice_size
from procslice_controller.vocabulary import AIO_DEFAULTS, METRICS_DEFAULTS, SWOOLE_DEFAULTS


def _supervisor_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None
) -> dict[str, Any]:
    """The aio/swoole settings with their defaults, checked with the table's checks, the
    runtime's own (procslice.config), so a value that passes here starts. A key on a
    model that does not read it is refused by the services module (``_wrong_model``).

    ``memory_limit`` stays as written (``"auto"``, ``"200M"``); ``memory_limit_bytes`` is
    its value in bytes (None for auto, 0 for off).
    """
    if model not in ("aio", "swoole"):
        return {}
    defaults = {**AIO_DEFAULTS, **(SWOOLE_DEFAULTS if model == "swoole" else {})}
    settings = _checked(entry, path, errors, defaults)
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


def _metrics_settings(
    entry: Mapping[str, Any], path: str, errors: _Errors, model: str | None, name: str | None
) -> dict[str, Any]:
    """metrics_listen, request_metrics and the StatsD keys with their defaults (gunicorn,
    aio and swoole; podman only metrics_listen). ``statsd_prefix`` comes out resolved
    (the service's name unless set, or "" with statsd_tags) and ``_metrics_bind`` is the
    parsed ``metrics_listen`` for the port cross-check."""
    if model is None:
        return {}
    if model == "podman":
        # Where the image's app serves its own Prometheus text (/metrics), as the host
        # reaches it: one of its published ports, so no bind of its own to cross-check.
        return _checked(entry, path, errors, {"metrics_listen": ""})
    settings = _checked(entry, path, errors, METRICS_DEFAULTS)
    if settings["metrics_listen"]:
        host, port = _parse_listen(settings["metrics_listen"])
        settings["_metrics_bind"] = (host, port, "tcp", f"{path}.metrics_listen")
    if settings["statsd_prefix"] is None:
        settings["statsd_prefix"] = "" if settings["statsd_tags"] else (name or "")
    return settings
