"""Layers: procslice_services__* and procslice_slices__* variables merged by name."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from procslice_controller.errors import _show


def _merge(base: Any, over: Any) -> Any:
    """A later layer's value over an earlier one's: mappings key by key, the rest replaced."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


_LAYERED = ("procslice_services", "procslice_slices")


def procslice_layers(
    base: Any, layers: Mapping[str, Any] | None, kind: str = "procslice_services"
) -> dict[str, Any]:
    """``kind`` (the base list) and its layers (``kind__*`` variables: name -> list),
    merged: entries by ``name``, the layers in the order of their variable names (e.g.
    procslice_services__10_common, procslice_services__50_web, procslice_services__90_host),
    a later layer's fields over an earlier one's (mappings such as env and limits key by
    key). An entry of a new name is added at the end. ``origins``: entry name -> field ->
    the variable that set it last (for the preflight's messages). Entries that are not
    mappings with a name are kept as they are, for the checks to report."""
    items: list[Any] = []
    index: dict[str, int] = {}
    origins: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    sources = [(kind, base)] + sorted((layers or {}).items())
    for variable, entries in sources:
        if entries is None:
            continue
        if not isinstance(entries, list):
            errors.append(
                f"{variable}: {_show(entries)} is not a list; write a list of entries, "
                "each with its name (merged by name into the others)"
            )
            continue
        for entry in entries:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str):
                items.append(entry)
                continue
            fields = origins.setdefault(name, {})
            for key in entry:
                fields[key] = variable
            if name in index:
                items[index[name]] = _merge(items[index[name]], entry)
            else:
                index[name] = len(items)
                items.append(dict(entry))
    return {"items": items, "origins": origins, "errors": errors}


def procslice_layer_vars(
    hosts: Iterable[str], hostvars: Mapping[str, Any], kinds: Iterable[str] = _LAYERED
) -> list[dict[str, Any]]:
    """The hosts that have inventory layers, each with its layer variables' names by kind:
    ``[{"host": h, "procslice_services": [...], "procslice_slices": [...]}]``; hosts
    without any ``procslice_services__*`` or ``procslice_slices__*`` variable are left
    out (preflight merges nothing there)."""
    out = []
    for host in hosts:
        names = list(hostvars[host].keys())
        found = {
            kind: sorted(
                name for name in names if name.startswith(f"{kind}__") and name != f"{kind}__"
            )
            for kind in kinds
        }
        if any(found.values()):
            out.append({"host": host, **found})
    return out


def procslice_errors_with_layers(
    messages: Iterable[str], origins: Mapping[str, Mapping[str, str]], kind: str
) -> list[str]:
    """Each message about ``kind[NAME].FIELD`` set by a layer (not by ``kind`` itself)
    names the variable it came from: ``... (set in procslice_services__web)``."""
    pattern = re.compile(rf"^{re.escape(kind)}\[([^\]]+)\]\.(\w+)")
    out = []
    for message in messages:
        match = pattern.match(message)
        layer = (origins.get(match.group(1)) or {}).get(match.group(2)) if match else None
        if layer and layer != kind:
            message = f"{message} (set in {layer})"
        out.append(message)
    return out
