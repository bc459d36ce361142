#!/usr/bin/python
"""procslice_files: write a set of rendered files to a host in one module call."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: procslice_files
short_description: Write many rendered files (and their directories) in one transfer
description:
  - The files a service needs (units, drop-ins, model configuration, environment)
    are rendered on the controller and reach the host together, in one module call,
    instead of one template task (and one round trip) per file.
  - A file is written only when its content, owner, group or mode differ; the write
    is atomic (a temporary file in the same directory, then rename).
  - Supports check mode and diff mode.
options:
  files:
    description: The files, each with path, content, owner, group and mode.
    type: list
    elements: dict
    default: []
  directories:
    description: Directories to create first, each with path, owner, group and mode.
    type: list
    elements: dict
    default: []
  existing_parents_only:
    description: >-
      Write a file only where its directory exists already (a drop-in of a unit
      deployed on this host); the others are skipped and listed in skipped_paths.
    type: bool
    default: false
  daemon_reload:
    description: >-
      Run C(systemctl daemon-reload) after the writes when any file changed: a changed
      slice unit's limits then apply live (deploy.yml's live limit change).
    type: bool
    default: false
  lock_holder:
    description: >-
      Take the host's deploy lock with this holder (procslice_lock_holder) before
      writing, and release it after, in the same call (procslice-lock acquire
      --wait 0, then release; both audited). When another run holds the lock nothing
      is written and the holder is returned in C(held), for the caller's wait or
      take-over (roles/procslice_lock).
    type: dict
  lock_tool:
    description: The lock tool the procslice_lock role installs.
    type: str
    default: /usr/local/lib/procslice/lock
author: procslice
"""

RETURN = r"""
changed_paths:
  description: The paths that were (or in check mode would be) written or adjusted.
  type: list
  returned: always
skipped_paths:
  description: With existing_parents_only, the files whose directory is not there.
  type: list
  returned: always
held:
  description: With lock_holder, the holder of the lock when another run holds it (nothing written).
  type: dict
  returned: when the lock is held by another run
"""


MAX_DIFF = 16384


def _ids(owner: str, group: str) -> tuple[int, int]:
    return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ensure_directory(spec: dict[str, Any], check: bool) -> bool:
    path = spec["path"]
    uid, gid = _ids(spec.get("owner", "root"), spec.get("group", "root"))
    mode = int(str(spec.get("mode", "0755")), 8)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check:
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode):
        return False
    if not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True


def ensure_file(spec: dict[str, Any], check: bool) -> tuple[bool, str | None]:
    """Returns (changed, the old content for a diff)."""
    path = spec["path"]
    data = spec["content"].encode()
    uid, gid = _ids(spec.get("owner", "root"), spec.get("group", "root"))
    mode = int(str(spec.get("mode", "0644")), 8)
    old: bytes | None = None
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:
                old = handle.read()
    except FileNotFoundError:
        st = None
    same_content = old is not None and _sha(old) == _sha(data)
    same_meta = st is not None and (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        uid,
        gid,
        mode,
    )
    if same_content and same_meta:
        return False, None
    if not check:
        if same_content:
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        else:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".procslice.")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.chown(tmp, uid, gid)
                os.chmod(tmp, mode)
                os.rename(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    return True, (old.decode(errors="replace") if old is not None else "")


def _lock(module: AnsibleModule, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [module.params["lock_tool"], *args], capture_output=True, text=True, check=False
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": []},
            "directories": {"type": "list", "elements": "dict", "default": []},
            "existing_parents_only": {"type": "bool", "default": False},
            "daemon_reload": {"type": "bool", "default": False},
            "lock_holder": {"type": "dict"},
            "lock_tool": {"type": "str", "default": "/usr/local/lib/procslice/lock"},
        },
        supports_check_mode=True,
    )
    check = module.check_mode
    holder = module.params["lock_holder"]
    if holder and not check:
        taken = _lock(module, "acquire", "--holder", json.dumps(holder), "--wait", "0")
        if taken.returncode == 75:
            try:
                held = json.loads(taken.stdout)
            except ValueError:
                held = {"run": "unknown"}
            module.exit_json(changed=False, changed_paths=[], skipped_paths=[], held=held)
        if taken.returncode != 0:
            module.fail_json(
                msg=f"procslice_files: taking the deploy lock failed: {taken.stderr.strip()}",
                changed_paths=[],
            )
    try:
        result = write(module, check)
    finally:
        if holder and not check:
            released = _lock(module, "release", "--run", str(holder.get("run", "")))
            if released.returncode != 0:
                module.warn(f"releasing the deploy lock failed: {released.stderr.strip()}")
    module.exit_json(**result)


def write(module: AnsibleModule, check: bool) -> dict[str, Any]:
    """Write the directories and files; daemon-reload after a change if asked."""
    changed_paths: list[str] = []
    skipped_paths: list[str] = []
    diffs: list[dict[str, str]] = []
    try:
        for spec in module.params["directories"]:
            if ensure_directory(spec, check):
                changed_paths.append(spec["path"])
        for spec in module.params["files"]:
            if module.params["existing_parents_only"] and not os.path.isdir(
                os.path.dirname(spec["path"])
            ):
                skipped_paths.append(spec["path"])
                continue
            changed, old = ensure_file(spec, check)
            if changed:
                changed_paths.append(spec["path"])
                if module._diff and old is not None and old != spec["content"]:
                    diffs.append(
                        {
                            "before_header": spec["path"],
                            "after_header": spec["path"],
                            "before": old[:MAX_DIFF],
                            "after": spec["content"][:MAX_DIFF],
                        }
                    )
    except KeyError as exc:
        module.fail_json(
            msg=f"procslice_files: unknown user or group {exc}", changed_paths=changed_paths
        )
    except OSError as exc:
        module.fail_json(msg=f"procslice_files: {exc}", changed_paths=changed_paths)
    if changed_paths and module.params["daemon_reload"] and not check:
        reload = subprocess.run(
            ["systemctl", "daemon-reload"], capture_output=True, text=True, check=False
        )
        if reload.returncode != 0:
            module.fail_json(
                msg=f"procslice_files: systemctl daemon-reload failed: {reload.stderr.strip()}",
                changed_paths=changed_paths,
            )
    result: dict[str, Any] = {
        "changed": bool(changed_paths),
        "changed_paths": changed_paths,
        "skipped_paths": skipped_paths,
    }
    if diffs:
        result["diff"] = diffs
    return result


if __name__ == "__main__":
    main()
