#!/usr/bin/python
"""procslice_plan: what one host must do to run what the inventory says (read-only)."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: procslice_plan
short_description: Compare what a host should run with what it runs, and say what to do
description:
  - The plan phase of a deploy. It reads the host and changes nothing.
  - For each service it predicts the action procslice-activate will take after the
    apply writes the rendered files (the same fingerprints of the same files, compared
    with /var/lib/procslice/applied/UNIT), and adds what activate cannot see, a
    release that must be built, a removed service, files edited by hand on the host.
  - Actions, per service - C(install) (a new release is built, then activate runs),
    C(start), C(restart), C(reload), C(limits) (applied live), C(remove), C(nothing).
    Per slice - C(limits), C(remove), C(nothing). For the host's own tools - C(install),
    C(nothing).
options:
  services:
    description: >-
      One entry per service - name, unit, state, user, files (path to sha256 of the
      rendered content), restart_on, reload_on, limits_on (the lists procslice-activate
      gets), link (the current link or null), release (the wheelhouse hash or null),
      releases (the releases directory), lock (name to version of the release's
      requirements lock, or null; compared with the current release's procslice.lock),
      remove_paths.
    type: list
    elements: dict
    default: []
  slices:
    description: One entry per slice - unit, state, path, sha256.
    type: list
    elements: dict
    default: []
  base:
    description: The host's tools - marker (a path) and fingerprint (what it must hold).
    type: dict
    default: {}
  drained_marker:
    description: >-
      A file deploy.yml writes while the host is out of the front's rotation; still
      there, an earlier run failed and left the host drained (the plan says ready).
    type: str
    default: ""
  state_dir:
    description: Where procslice-activate records what it applied.
    type: str
    default: /var/lib/procslice/applied
author: procslice
"""

RETURN = r"""
plan:
  description: >-
    services, slices and base, each with action and reasons; actions counts what is to do.
  type: dict
  returned: always
"""


# procslice-activate's answer for each planned action, and the order of strength.
ACTIVATE_WORD = {
    "start": "started",
    "restart": "restarted",
    "reload": "reloaded",
    "limits": "limits",
}
RANK = {"nothing": 0, "limits": 1, "reload": 2, "restart": 3, "start": 4}
NEW = object()
# A release's copy of its requirements lock (procslice_build), and how many of its
# changes a plan reason names.
RELEASE_LOCK = "procslice.lock"
LOCK_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
LOCK_SHOWN = 8


def file_sha(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def fingerprint_line(path: str, files: dict[str, str], link: str | None, target: Any) -> str | None:
    """One line of procslice-activate's fingerprint, for the state after the apply.

    None when the line cannot be known before the apply (a release not built yet)."""
    if link is not None and path == link:
        return None if target is NEW else f"{path} -> {target}"
    if path in files:
        return f"{path} {files[path]}"
    if os.path.islink(path):
        return f"{path} -> {os.readlink(path)}"
    sha = file_sha(path)
    return f"{path} {sha}" if sha is not None else f"{path} missing"


def fingerprint(
    paths: list[str], files: dict[str, str], link: str | None, target: Any
) -> str | None:
    """sha256 of the lines, exactly as procslice-activate's fingerprint()."""
    lines = []
    for path in paths:
        line = fingerprint_line(path, files, link, target)
        if line is None:
            return None
        lines.append(line + "\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def applied(state_dir: str, unit: str) -> list[str]:
    try:
        with open(os.path.join(state_dir, unit)) as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return ["", "", "", ""]
    return (lines + ["", "", "", ""])[:4]


def active_units(units: list[str]) -> dict[str, bool]:
    if not units:
        return {}
    run = subprocess.run(
        ["systemctl", "is-active", *units], capture_output=True, text=True, check=False
    )
    states = run.stdout.split("\n")
    return {
        unit: (states[i] if i < len(states) else "") == "active" for i, unit in enumerate(units)
    }


def release_target(releases: str, release: str) -> tuple[Any, bool]:
    """The link target the apply will set, and whether that release is built."""
    found = sorted(glob.glob(os.path.join(releases, f"*-{release}")))
    found = [path for path in found if os.path.isdir(path)]
    if not found:
        return NEW, False
    last = found[-1]
    return f"releases/{os.path.basename(last)}", os.path.exists(os.path.join(last, ".complete"))


def lock_versions(path: str) -> dict[str, str] | None:
    """name -> version of a lock file (None: no readable lock there)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    found = {}
    for line in text.splitlines():
        match = LOCK_PIN.match(line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def lock_change(old: dict[str, str], new: dict[str, str]) -> str | None:
    """The packages whose versions differ between two locks, as one reason."""
    parts = [
        f"{name} {old[name]} -> {new[name]}"
        for name in sorted(old)
        if name in new and old[name] != new[name]
    ]
    parts += [f"+{name} {new[name]}" for name in sorted(new) if name not in old]
    parts += [f"-{name}" for name in sorted(old) if name not in new]
    if not parts:
        return None
    more = f", and {len(parts) - LOCK_SHOWN} more" if len(parts) > LOCK_SHOWN else ""
    return "lock: " + ", ".join(parts[:LOCK_SHOWN]) + more


def user_exists(name: str | None) -> bool:
    if not name:
        return True
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def plan_service(spec: dict[str, Any], state_dir: str, active: bool) -> dict[str, Any]:
    entry = decide_service(spec, state_dir, active)
    entry["model"] = spec.get("model")
    # The default health URL (/healthz, not set in the data) with no healthy release
    # recorded by procslice-activate yet: the plan table names it.
    never_passed = not applied(state_dir, spec["unit"])[3]
    entry["health_default"] = (
        urlsplit(spec["health_url"]).path
        if spec.get("health_default")
        and spec.get("health_url")
        and never_passed
        and spec.get("state", "present") == "present"
        else None
    )
    return entry


def decide_service(spec: dict[str, Any], state_dir: str, active: bool) -> dict[str, Any]:
    unit = spec["unit"]
    if spec.get("state", "present") == "absent":
        left = [path for path in spec.get("remove_paths") or [] if os.path.lexists(path)]
        if left:
            return {
                "action": "remove",
                "activate": None,
                "release": False,
                "reasons": [f"state: absent, {left[0]} is there"],
            }
        return {"action": "nothing", "activate": None, "release": False, "reasons": []}

    files: dict[str, str] = spec.get("files") or {}
    link = spec.get("link")
    reasons: list[str] = []
    install = False
    target: Any = None
    if spec.get("release"):
        target, built = release_target(spec["releases"], spec["release"])
        if not built:
            install = True
            reasons.append(f"release {spec['release'][:12]} to build")
        # another release with a requirements lock: what changed since the current's
        switching = target is NEW or not os.path.islink(link or "") or os.readlink(link) != target
        if link and spec.get("lock") is not None and switching:
            current = lock_versions(os.path.join(link, RELEASE_LOCK))
            change = lock_change(current, spec["lock"]) if current is not None else None
            if change:
                reasons.append(change)
    user_missing = not user_exists(spec.get("user"))
    if user_missing:
        install = True
        reasons.append(f"user {spec['user']} missing")

    have = applied(state_dir, unit)
    classes = (("restart", "restart_on"), ("reload", "reload_on"), ("limits", "limits_on"))
    want = {cls: fingerprint(spec.get(key) or [], files, link, target) for cls, key in classes}
    activate = "nothing"
    if not active:
        activate = "start"
        reasons.append(f"{unit}.service not running")
    else:
        for index, (cls, key) in enumerate(classes):
            if want[cls] is None or want[cls] != have[index]:
                activate = cls
                changed = [
                    path
                    for path in spec.get(key) or []
                    if fingerprint([path], files, link, target) is None
                    or (path in files and files[path] != file_sha(path))
                    or (path == link and os.path.islink(path) and os.readlink(path) != target)
                ]
                what = ", ".join(changed) if changed else "what was last applied"
                reasons.append(
                    f"{cls}: {what} differs"
                    if changed
                    else f"{cls}: {what} differs (an unfinished run)"
                )
                break

    # Files edited by hand on the host while the data stayed the same: the apply puts
    # them back, and activate is told to do at least what their class needs.
    drift = "nothing"
    for index, (cls, key) in enumerate(classes):
        if want[cls] != have[index]:
            continue
        for path in spec.get(key) or []:
            edited = path in files and file_sha(path) not in (None, files[path])
            relinked = path == link and os.path.islink(path) and os.readlink(path) != target
            if edited or relinked:
                reasons.append(
                    f"drift: {path} was {'edited' if edited else 'switched'} on the host"
                )
                if RANK[cls] > RANK[drift]:
                    drift = cls
    if RANK[drift] > RANK[activate]:
        activate = drift

    action = "install" if install else activate
    # The release steps (user, venv, current link) are needed for a new release, a
    # missing user, or a current link that points elsewhere.
    relink = (
        bool(link)
        and target is not None
        and (target is NEW or not os.path.islink(link) or os.readlink(link) != target)
    )
    return {
        "action": action,
        "activate": ACTIVATE_WORD.get(activate, "unchanged") if action != "nothing" else None,
        "at_least": drift if drift != "nothing" else None,
        "release": install or relink,
        "reasons": reasons,
        # the apply creates the service's user and group only then
        "user_missing": user_missing,
    }


def plan_slice(spec: dict[str, Any]) -> dict[str, Any]:
    path = spec["path"]
    if spec.get("state", "present") == "absent":
        if os.path.lexists(path):
            return {"action": "remove", "reasons": ["state: absent"]}
        return {"action": "nothing", "reasons": []}
    sha = file_sha(path)
    if sha is None:
        return {"action": "limits", "new": True, "reasons": [f"new: {path}"]}
    if sha != spec["sha256"]:
        return {"action": "limits", "new": False, "reasons": [f"{path} differs"]}
    return {"action": "nothing", "new": False, "reasons": []}


def plan_base(spec: dict[str, Any]) -> dict[str, Any]:
    if not spec:
        return {"action": "nothing", "reasons": []}
    try:
        with open(spec["marker"]) as handle:
            have = handle.read().strip()
    except FileNotFoundError:
        return {"action": "install", "reasons": ["procslice's host tools not installed"]}
    if have != spec["fingerprint"]:
        return {"action": "install", "reasons": ["procslice's host tools changed"]}
    return {"action": "nothing", "reasons": []}


def make_plan(params: dict[str, Any]) -> dict[str, Any]:
    present = [s for s in params["services"] if s.get("state", "present") != "absent"]
    active = active_units([f"{s['unit']}.service" for s in present])
    services = {
        spec["name"]: plan_service(
            spec, params["state_dir"], active.get(f"{spec['unit']}.service", False)
        )
        for spec in params["services"]
    }
    slices = {spec["unit"]: plan_slice(spec) for spec in params["slices"]}
    base = plan_base(params["base"])
    todo = sum(
        1 for entry in [*services.values(), *slices.values(), base] if entry["action"] != "nothing"
    )
    # A host an earlier run drained from the front and did not put back (it failed):
    # the apply puts it back once its services pass.
    drained = bool(params.get("drained_marker")) and os.path.exists(params["drained_marker"])
    todo += int(drained)
    # A host whose processes change is drained from the front first; one whose plan
    # is limits only (or its tools) keeps serving.
    disrupts = any(entry["action"] not in ("nothing", "limits") for entry in services.values())
    # (the tools' fingerprint as given: the play records it without computing it again)
    base["fingerprint"] = (params.get("base") or {}).get("fingerprint")
    return {
        "services": services,
        "slices": slices,
        "base": base,
        "actions": todo,
        "disrupts": disrupts,
        "drained": drained,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "services": {"type": "list", "elements": "dict", "default": []},
            "slices": {"type": "list", "elements": "dict", "default": []},
            "base": {"type": "dict", "default": {}},
            "state_dir": {"type": "str", "default": "/var/lib/procslice/applied"},
            "drained_marker": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, plan=make_plan(module.params))


if __name__ == "__main__":
    main()
