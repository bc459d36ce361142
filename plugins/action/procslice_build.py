"""procslice_build: build (or find) every service's wheelhouse, in the controller's process.

Runs procslice_build's ``files/wheelhouse.py`` (``run(spec)``) inside the action,
instead of a ``command`` task on localhost: a no-op deploy only hashes the inputs, and
the module wrapper and the two Python starts around that cost most of its time. pip and
uv still run as their own processes when something must be built. The result is the
script's output (changed, wheelhouses, image_ids); a service that cannot be built fails
the task with the script's message, which names the service and the fix.
"""

from __future__ import annotations

import importlib.util
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
        )
        return result
