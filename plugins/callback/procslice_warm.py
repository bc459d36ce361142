"""procslice_warm: make each task's worker process start warm on the controller.

ansible-playbook runs every task of every host in a worker process forked from its
main process, and a worker begins with what the main process had at the fork. Two
things the main process did not have made most of a no-op deploy's controller CPU:

- the Jinja filter and test plugins: the first filter a task's condition or argument
  uses makes the worker import every filter and test plugin (ansible's and
  procslice's), and the worker exits with them; the roles name procslice's filters
  by their full names (procslice.procslice.*), which the worker imports again from
  the collection;
- compiled templates: every task's conditions and arguments were compiled to Python
  again in every worker.

At start (this callback loads with every run, as CALLBACK_NEEDS_ENABLED is false) the
main process loads the Jinja plugins once, and keeps compiled templates in
~/.cache/procslice/jinja (procslice_render's compile cache, see there), so workers
inherit both. Nothing here changes what any template renders or what a task does.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import filter_loader, test_loader

DOCUMENTATION = """
name: procslice_warm
type: aggregate
short_description: load the Jinja plugins once and cache compiled templates on the controller
description:
  - Loads every Jinja filter and test plugin in ansible-playbook's main process, so the
    worker process of each task inherits them instead of importing them again.
  - Keeps the compiled code of every template in ~/.cache/procslice/jinja
    ($XDG_CACHE_HOME/procslice/jinja), shared by the workers of a run and by later runs.
"""

_RENDER = Path(__file__).resolve().parent.parent / "action" / "procslice_render.py"
# A filter of the collection (plugins/filter/procslice.py), by the name the roles use.
FULL_NAME_PROBE = "procslice.procslice.procslice_size"


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("procslice_render_for_warm", _RENDER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "procslice_warm"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for loader in (filter_loader, test_loader):
            for _plugin in loader.all():
                pass
        # One full name imports every filter file of the collection (ansible looks
        # through all of them); none when the run cannot find procslice.procslice.
        with contextlib.suppress(KeyError):
            filter_loader.get(FULL_NAME_PROBE)
        _render_module().install_compile_cache()
