"""The checks across slices and services: slices exist, limits within their slice's,
memory_limit below the unit's memory, workers within tasks_max, sockets and ports."""

from __future__ import annotations

from typing import Any

from procslice_controller.errors import _Errors, _human, _is_int, _show
from procslice_controller.vocabulary import TASKS_RESERVE


def _bounds(key: str, svc: dict[str, Any], sl: dict[str, Any] | None) -> list[tuple[int, str]]:
    """The limits `key` bounds the service by: its own and its slice's, each with the
    path that set it."""
    return [
        (owner["limits"][key], owner["_paths"][key])
        for owner in (svc, sl)
        if owner is not None and owner["limits"][key] is not None
    ]


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
        memory_limit = svc.get("memory_limit_bytes")
        if not memory_limit:
            continue
        sl = by_name.get(svc["slice"] or "")
        bounds = _bounds("memory_max", svc, sl)
        if not bounds:
            continue
        bound, where = min(bounds)
        if memory_limit >= bound:
            errors.add(
                f"{svc['_path']}.memory_limit",
                f"{_human(memory_limit)} is not below {where} ({_human(bound)}): the kernel would "
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
        bounds = _bounds("tasks_max", svc, sl)
        if sl is not None and sl["limits"]["tasks_max"] is not None:
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
