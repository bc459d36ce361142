"""Resources: a slice's top level, a service's `limits` -> directives, limits, paths."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from procslice.data.errors import ProcsliceDataError, _Errors, _format_percent, _human, _show
from procslice.data.sizes import (
    _allowed_cpus,
    _bandwidth,
    _cpu_quota,
    _cpu_weight,
    _cpus,
    _limit_nofile,
    _reserved_cpus_weight,
    _size_or_infinity,
    _tasks_max,
)
from procslice.data.vocabulary import (
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
