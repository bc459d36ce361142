"""procslice_build: build (or find) every service's wheelhouse, in the controller's process.

Runs procslice_build's ``files/wheelhouse.py`` (``run(spec)``) inside the action,
instead of a ``command`` task on localhost: a no-op deploy only hashes the inputs, and
the module wrapper and the two Python starts around that cost most of its time. pip and
uv still run as their own processes when something must be built. The result is the
script's output (changed, wheelhouses, image_ids); a service that cannot be built fails
the task with the script's message, which names the service and the fix.

With ``tools`` (files) and ``uv`` (a path) it also fingerprints procslice's own host
tools once for the run (``tools``: sha256 of the files' contents, ``uv --version`` and
the host runtime's wheelhouse hash), which the plan compares on every host instead of
reading the files again per host: a changed runtime re-installs it, an unchanged one
costs nothing on a host.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def _wheelhouse(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("procslice_build_wheelhouse", path)
    if spec is None or spec.loader is None:
        raise AnsibleActionFail(f"procslice_build: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tools_fingerprint(files: list[str], uv: str | None, runtime: str | None = None) -> str:
    """sha256 over the files' contents (in order), the output of ``uv --version`` and
    the host runtime's hash (``runtime``)."""
    digest = hashlib.sha256()
    for name in files:
        path = Path(name)
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise AnsibleActionFail(f"procslice_build: tools: cannot read {path}: {exc}") from exc
        digest.update(b"\0")
    version = ""
    if uv:
        try:
            version = subprocess.run(
                [uv, "--version"], capture_output=True, text=True, check=False, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            version = ""  # no uv on the controller: the hosts build with pip
    digest.update(version.encode())
    if runtime:
        digest.update(b"\0runtime " + runtime.encode())
    return digest.hexdigest()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        spec = self._task.args.get("spec")
        if not isinstance(spec, dict):
            raise AnsibleActionFail(
                "procslice_build: spec must be a mapping (wheelhouse.py's input)"
            )
        script = self._task.args.get("script")
        if not script:
            raise AnsibleActionFail("procslice_build: script (files/wheelhouse.py) is required")
        try:
            output = _wheelhouse(Path(script)).run(spec)
        except SystemExit as exc:
            # the script's own message: the service, what is wrong, the fix
            result.update(failed=True, msg=str(exc.code))
            return result
        result.update(
            changed=bool(output["changed"]),
            wheelhouses=output["wheelhouses"],
            image_ids=output["image_ids"],
            runtime=output.get("runtime"),
        )
        runtime = output.get("runtime") or {}
        tools = self._task.args.get("tools")
        if tools:
            result["tools"] = tools_fingerprint(
                list(tools), self._task.args.get("uv"), runtime.get("hash")
            )
        return result
