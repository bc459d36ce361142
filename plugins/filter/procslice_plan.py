"""Filters of the plan phase: render lists, plan specs, activate arguments, the table."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

CLASSES = ("restart", "reload", "limits")


def _fill(text: str, service: Mapping[str, Any]) -> str:
    return (
        str(text)
        .replace("@UNIT@", str(service.get("unit", "")))
        .replace("@NAME@", str(service.get("name", "")))
        .replace("@USER@", str(service.get("user", "")))
        .replace("@MODEL@", str(service.get("model", "")))
    )


def procslice_unit_sources(
    services: list[Mapping[str, Any]], templates: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every (service, file) pair to render: dest, owner, group and mode filled in.

    A template entry with `only_if: KEY` applies to the services whose KEY is truthy
    (`!KEY`: falsy);
    one without `src` is not rendered but still counts in its class (a file another
    task writes, such as podman's image-id)."""
    out = []
    for service in services:
        for entry in templates:
            key = str(entry.get("only_if") or "")
            if key and bool(service.get(key.lstrip("!"))) == key.startswith("!"):
                continue
            out.append(
                {
                    "service": service,
                    "name": service["name"],
                    "src": _fill(entry["src"], service) if entry.get("src") else None,
                    "path": _fill(entry["dest"], service),
                    "owner": _fill(entry.get("owner", "root"), service),
                    "group": _fill(entry.get("group", "root"), service),
                    "mode": str(entry.get("mode", "0644")),
                    "class": entry["class"],
                }
            )
    return out


def procslice_unit_specs(
    services: list[Mapping[str, Any]],
    rendered: list[Mapping[str, Any]],
    root: str | None = None,
    wheelhouses: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One plan spec per service: the files by class, the release, the gate.

    The lists restart_on, reload_on and limits_on are the ones procslice-activate
    gets, so the plan and the apply fingerprint the same files in the same order."""
    specs = []
    for service in services:
        mine = [entry for entry in rendered if entry["name"] == service["name"]]
        link = f"{root}/{service['name']}/current" if root else None
        lists: dict[str, list[str]] = {
            cls: [entry["path"] for entry in mine if entry["class"] == cls] for cls in CLASSES
        }
        if link:
            lists["reload"].insert(0, link)
        health = service.get("health") or {}
        wheel = (wheelhouses or {}).get(service["name"]) if root else None
        specs.append(
            {
                "name": service["name"],
                "unit": service["unit"],
                "model": service.get("model"),
                "user": service.get("user") if root else None,
                "state": service.get("state", "present"),
                "files": {
                    entry["path"]: hashlib.sha256(entry["content"].encode()).hexdigest()
                    for entry in mine
                    if entry.get("content") is not None
                },
                "restart_on": lists["restart"],
                "reload_on": lists["reload"],
                "limits_on": lists["limits"],
                "link": link,
                "release": wheel["hash"] if wheel else None,
                # a requirements package's lock, name -> version (the plan's "lock:")
                "lock": wheel.get("lock") if wheel else None,
                "releases": f"{root}/{service['name']}/releases" if root else None,
                "health_url": health.get("url"),
                "health_timeout": health.get("timeout", 30),
                "health_default": bool(health.get("default")) and bool(health.get("url")),
            }
        )
    return specs


def procslice_plan_merge(
    specs: list[Mapping[str, Any]], rendered: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Adds to each spec the files another role renders (procslice_service's env)."""
    shas = {
        entry["path"]: hashlib.sha256(entry["content"].encode()).hexdigest()
        for entry in rendered
        if entry.get("content") is not None
    }
    out = []
    for spec in specs:
        paths = [*spec["restart_on"], *spec["reload_on"], *spec["limits_on"]]
        files = {path: shas[path] for path in paths if path in shas}
        out.append({**spec, "files": {**files, **spec["files"]}})
    return out


def procslice_plan_absent(
    services: list[Mapping[str, Any]], root: str, etc: str
) -> list[dict[str, Any]]:
    """Plan specs of the absent services: what is on a host while one is not removed."""
    return [
        {
            "name": service["name"],
            "unit": service["unit"],
            "model": service.get("model"),
            "state": "absent",
            "remove_paths": [
                f"/etc/systemd/system/{service['unit']}.service",
                f"/etc/systemd/system/{service['unit']}.socket",
                f"/etc/containers/systemd/{service['unit']}.container",
                f"{root}/{service['name']}",
                f"{etc}/{service['name']}",
                # its data directories only with purge: true (kept otherwise)
                *(
                    f"{base}/procslice/{service['name']}"
                    for base in ("/var/lib", "/var/cache", "/var/log")
                    if service.get("purge")
                ),
            ],
        }
        for service in services
    ]


def procslice_plan_slices(
    files: list[Mapping[str, Any]], slices: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Plan specs of the slices: the rendered ones, and the absent ones to remove."""
    specs = [
        {
            "unit": entry["unit"],
            "state": "present",
            "path": entry["path"],
            "sha256": hashlib.sha256(entry["content"].encode()).hexdigest(),
        }
        for entry in files
    ]
    specs += [
        {"unit": entry["unit"], "state": "absent", "path": f"/etc/systemd/system/{entry['unit']}"}
        for entry in slices
        if entry.get("state") == "absent"
    ]
    return specs


def procslice_plan_todo(plan: Mapping[str, Any] | None) -> list[str]:
    """What a host's plan needs of the apply: the models of the services with an
    action, "services" when any has one, "slices" and "base" (its tools)."""
    if not plan:
        return []
    todo = {
        entry.get("model") or "services"
        for entry in (plan.get("services") or {}).values()
        if entry.get("action") != "nothing"
    }
    if todo:
        todo.add("services")
    if any(entry.get("action") != "nothing" for entry in (plan.get("slices") or {}).values()):
        todo.add("slices")
    if (plan.get("base") or {}).get("action", "nothing") != "nothing":
        todo.add("base")
    return sorted(todo)


def procslice_plan_live_limits(plan: Mapping[str, Any] | None) -> bool:
    """Whether a host's plan is only live limit changes of slices that exist.

    Such a host is applied by deploy.yml's "Apply live slice limits" play in one module
    call (the deploy lock, the slice units, daemon-reload): no service is touched, none
    is drained, and no new or removed slice needs starting or stopping."""
    if not plan or plan.get("drained") or plan.get("disrupts"):
        return False
    slices = [entry.get("action") for entry in (plan.get("slices") or {}).values()]
    changed = [action for action in slices if action != "nothing"]
    return procslice_plan_todo(plan) == ["slices"] and all(a == "limits" for a in changed)


def procslice_activate_argv(spec: Mapping[str, Any]) -> list[str]:
    """procslice-activate's arguments for one plan spec."""
    argv = ["/usr/local/lib/procslice/activate", spec["unit"]]
    argv += ["--restart-on", *spec["restart_on"]]
    argv += ["--reload-on", *spec["reload_on"]]
    argv += ["--limits-on", *spec["limits_on"]]
    if spec.get("health_url"):
        argv += [
            "--health-url",
            spec["health_url"],
            "--health-timeout",
            str(spec["health_timeout"]),
        ]
        if spec.get("link"):
            argv += ["--link", spec["link"]]
    return argv


def procslice_activate_jobs(
    specs: list[Mapping[str, Any]], plan: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """procslice-activate --each's input for the specs: each service's arguments, and
    the action its plan entry asks at least (drift the apply put back), or empty."""
    entries = (plan or {}).get("services") or {}
    return [
        {
            "name": spec["name"],
            "argv": procslice_activate_argv(spec),
            "at_least": (entries.get(spec["name"]) or {}).get("at_least") or "",
        }
        for spec in specs
    ]


def procslice_planned(
    items: list[Mapping[str, Any]],
    plan: Mapping[str, Any] | None,
    kind: str = "services",
    need: str | None = None,
) -> list[Any]:
    """The items the plan has an action for (all of them without a plan: a role run alone).

    need: only those whose plan entry also says so (release: the release steps are
    needed; new: a slice not on the host yet)."""
    if not plan:
        return list(items)
    entries = plan.get(kind) or {}
    key = "unit" if kind == "slices" else "name"
    out = []
    for item in items:
        entry = entries.get(item[key])
        # not in the plan (do it), or an action the need asks for
        if entry is None or (
            entry.get("action") != "nothing" and (need is None or entry.get(need))
        ):
            out.append(item)
    return out


def procslice_plan_table(hosts: list[str], hostvars: Mapping[str, Any]) -> list[str]:
    """The fleet's plan, one line per host and item with something to do."""
    rows = [("HOST", "WHAT", "ACTION", "REASON")]
    quiet = []
    for host in sorted(hosts):
        plan = (hostvars.get(host) or {}).get("procslice_plan_host")
        if not plan:
            rows.append((host, "-", "unknown", "no plan (host unreachable or preflight failed)"))
            continue
        if not plan.get("actions"):
            quiet.append(host)
            continue
        if plan.get("drained"):
            rows.append(
                (host, "front rotation", "ready", "left drained by an earlier run that failed")
            )
        if plan["base"]["action"] != "nothing":
            rows.append(
                (host, "host tools", plan["base"]["action"], "; ".join(plan["base"]["reasons"]))
            )
        for unit, entry in sorted(plan["slices"].items()):
            if entry["action"] != "nothing":
                rows.append((host, unit, entry["action"], "; ".join(entry["reasons"])))
        for name, entry in sorted(plan["services"].items()):
            if entry["action"] != "nothing":
                rows.append((host, name, entry["action"], "; ".join(entry["reasons"])))
    notes = [
        f"note: {host} {name}: its health gate is the default {entry['health_default']}, which "
        "it has never passed on this host; an app that does not serve it fails its first "
        "gate: set health.http to a path it serves, or health.tcp: true"
        for host in sorted(hosts)
        for name, entry in sorted(
            ((hostvars.get(host) or {}).get("procslice_plan_host") or {})
            .get("services", {})
            .items()
        )
        if entry.get("health_default")
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]
    if len(rows) == 1:
        lines = []
    changed = len({row[0] for row in rows[1:]})
    lines.append(
        f"{changed} host(s) to change, {len(quiet)} with nothing to do"
        + (f": {', '.join(quiet)}" if quiet else "")
    )
    return lines + notes


def procslice_plan_groups(hosts: list[str], hostvars: Mapping[str, Any]) -> list[dict[str, str]]:
    """The hosts with something to do and the play that applies them: {name, group}.

    procslice_limits_apply: only live limits of existing slices (one module call);
    procslice_apply: anything else (the rolling play). Hosts with nothing to do are left
    out; so is a host without a plan."""
    out = []
    for host in hosts:
        plan = (hostvars.get(host) or {}).get("procslice_plan_host")
        if not plan or not plan.get("actions"):
            continue
        live = procslice_plan_live_limits(plan)
        out.append({"name": host, "group": "procslice_limits_apply" if live else "procslice_apply"})
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "procslice_plan_groups": procslice_plan_groups,
            "procslice_unit_sources": procslice_unit_sources,
            "procslice_unit_specs": procslice_unit_specs,
            "procslice_activate_argv": procslice_activate_argv,
            "procslice_activate_jobs": procslice_activate_jobs,
            "procslice_planned": procslice_planned,
            "procslice_plan_todo": procslice_plan_todo,
            "procslice_plan_live_limits": procslice_plan_live_limits,
            "procslice_plan_merge": procslice_plan_merge,
            "procslice_plan_absent": procslice_plan_absent,
            "procslice_plan_slices": procslice_plan_slices,
            "procslice_plan_table": procslice_plan_table,
        }
