"""procslice.toml, written from the table of keys.

The aio and swoole roles write /etc/procslice/<name>/procslice.toml with
:func:`procslice_toml` (the filter of the same name): one line per ``toml`` key of
:mod:`procslice.data.keys` the service's model reads, in the table's order, each under
its help as a comment. A key whose ``toml_value`` gives None is left out (the runtime's
default applies). The runtime reads the file back with the same table
(procslice.config), so a key added to the table is written and read without a change
here or in the template.

Standard library only.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from typing import Any

from procslice.data.keys import runtime_keys

__all__ = ["procslice_toml", "toml_value"]


def toml_value(value: Any) -> str:
    """A TOML value: a string (JSON's escapes are TOML's), a bool, a number or a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML value for {value!r}")


def procslice_toml(service: Mapping[str, Any]) -> str:
    """The keys of a normalised aio or swoole service (procslice_normalize_services) as
    the body of its procslice.toml."""
    model = service.get("model")
    if model not in ("aio", "swoole"):
        raise ValueError(f"procslice.toml is for models aio and swoole, not {model!r}")
    lines: list[str] = []
    for key in runtime_keys(model):
        value = key.toml_value(service) if key.toml_value else service.get(key.name)
        if value is None:
            continue
        lines += textwrap.wrap(key.help, 86, initial_indent="# ", subsequent_indent="# ")
        lines.append(f"{key.name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
