"""Builds: one wheelhouse per distinct (name, package, model), picked per host."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


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
