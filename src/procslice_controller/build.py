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


def procslice_releases(
    services: Iterable[Mapping[str, Any]],
    built: Mapping[str, Any],
    plan: Mapping[str, Any] | None,
    root: str,
    etc: str,
    keep: int,
) -> dict[str, list[dict[str, Any]]]:
    """What roles/procslice_service needs to install one host's releases at once:

    - ``jobs``: one per service for files/procslice-release.py (its directory, unit,
      wheelhouse archive, hash and install arguments, the releases to keep);
    - ``dirs``: every directory of every service for procslice_files (owner, mode);
    - ``new_users``: the services whose user the plan found missing (all without one).
    """
    services = list(services)
    picked = procslice_build_pick(built, services)
    planned = (plan or {}).get("services") or {}
    jobs: list[dict[str, Any]] = []
    dirs: list[dict[str, Any]] = []
    new_users: list[dict[str, Any]] = []
    for service in services:
        name, user = service["name"], service["user"]
        base = f"{root}/{name}"
        wheelhouse = picked[name]
        jobs.append(
            {
                "name": name,
                "unit": service["unit"],
                "dir": base,
                "archive": wheelhouse["archive"],
                "hash": wheelhouse["hash"],
                "install": list(wheelhouse["install"]),
                "keep": int(keep),
            }
        )
        dirs += [
            {"path": base, "owner": "root", "group": user, "mode": "0755"},
            {"path": f"{base}/releases", "owner": "root", "group": user, "mode": "0755"},
            {"path": f"{base}/wheelhouse", "owner": "root", "group": user, "mode": "0750"},
            {"path": f"{base}/shared", "owner": user, "group": user, "mode": "0750"},
            {"path": f"{etc}/{name}", "owner": "root", "group": user, "mode": "0750"},
        ]
        if (planned.get(name) or {}).get("user_missing", True):
            new_users.append(dict(service))
    return {"jobs": jobs, "dirs": dirs, "new_users": new_users}
