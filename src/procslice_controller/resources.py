"""Resources: a slice's top level, a service's `limits` -> directives, limits, paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procslice.data import keys
from procslice_controller.errors import _Errors, _human, _show
from procslice_controller.sizes import _bandwidth
from procslice_controller.vocabulary import (
    COMPOSE_ALIASES,
    LIMIT_KEYS,
    RESERVATION_ALIASES,
    RESOURCE_DIRECTIVES,
    SERVICE_LIMIT_KEYS,
    SERVICE_ONLY_DIRECTIVES,
)


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
    for name in order:
        if name not in chosen:
            continue
        key_path, value, form = chosen[name]
        spec = keys.LIMIT_KEYS[name]
        if spec.check is None:  # io_read_bandwidth_max, io_write_bandwidth_max: per device
            lines = _bandwidth(value, key_path, errors)
            if lines:
                directives[spec.directive] = lines
            continue
        # the table's check; a compose spelling that reads otherwise has its own
        check = spec.compose_check if form != "canonical" and spec.compose_check else spec.check
        try:
            text, limit = check(value)
        except ValueError as exc:
            errors.add(key_path, f"{_show(value)} {exc}")
            continue
        directives[spec.directive] = text
        limits["cpu_quota_percent" if name == "cpu_quota" else name] = limit

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
