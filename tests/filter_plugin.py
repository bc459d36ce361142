"""The filter plugin (plugins/filter/procslice.py) loaded once as a module for the tests.

It lives outside any Python package (Ansible loads it by path), so the tests load it
by path too: `from filter_plugin import ps`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "filter" / "procslice.py"


def load_file(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` loaded as the module ``name`` (plugins and scripts live
    outside any package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ps = sys.modules.get("procslice_filter") or load_file("procslice_filter", PLUGIN)
