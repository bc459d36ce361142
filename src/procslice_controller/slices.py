"""Slices, and what every entry of procslice_slices and procslice_services is checked for
(its path in the messages, its name, its state)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from procslice_controller.errors import _Errors, _show
from procslice_controller.resources import _resources
from procslice_controller.vocabulary import NAME_RE, SLICE_KEYS, STATES


def _entry_path(var: str, index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    if isinstance(name, str) and name and re.match(r"^[\w.-]+$", str(name)):
        return f"{var}[{name}]"
    return f"{var}[{index}]"


def _as_list(value: Any, var: str, errors: _Errors) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    errors.add(var, f"{_show(value)} is not a list; write a list of mappings (- name: ...)")
    return []


def _entries(
    value: Any, var: str, example: str, errors: _Errors
) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """The entries of the list `var` that are mappings, each with its index and path; an
    entry of another type is reported (write `example`)."""
    for index, entry in enumerate(_as_list(value, var, errors)):
        path = _entry_path(var, index, entry)
        if isinstance(entry, Mapping):
            yield index, path, entry
        else:
            errors.add(path, f"{_show(entry)} is not a mapping; write {example}")


def _first(
    name: str, index: int, seen: dict[str, int], path: str, kind: str, errors: _Errors
) -> bool:
    """Whether `name` is seen for the first time (recorded in `seen`); a second entry of
    that name is reported."""
    if name in seen:
        errors.add(
            f"{path}.name",
            f"{_show(name)} is defined twice (entries {seen[name]} and {index}); "
            f"{kind} names must be unique: merge or rename one",
        )
        return False
    seen[name] = index
    return True


def _check_name(entry: Mapping[str, Any], path: str, errors: _Errors) -> str | None:
    name = entry.get("name")
    if name is None:
        errors.add(f"{path}.name", "missing; every entry needs a name (e.g. name: web)")
        return None
    if not isinstance(name, str) or not NAME_RE.match(str(name)):
        errors.add(
            f"{path}.name",
            f"{_show(name)} is not a valid name; use 1 to 41 lower-case letters, digits and "
            "'-', starting with a letter (e.g. api)",
        )
        return None
    return str(name)


def _check_state(entry: Mapping[str, Any], path: str, errors: _Errors) -> str:
    state = entry.get("state", "present")
    if state not in STATES:
        errors.add(f"{path}.state", f"{_show(state)} is not a state; use present or absent")
        return "present"
    return str(state)


def _slices(slices: Any, errors: _Errors) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, path, entry in _entries(
        slices, "procslice_slices", "name: web and its limits", errors
    ):
        errors.unknown_keys(path, entry, SLICE_KEYS)
        name = _check_name(entry, path, errors)
        state = _check_state(entry, path, errors)
        resources = {k: v for k, v in entry.items() if k not in ("name", "state")}
        directives, limits, paths = _resources(resources, path, errors, service=False)
        if name == "procslice":
            errors.add(
                f"{path}.name",
                "'procslice' is the parent slice itself (procslice.slice, set with "
                "procslice_slices_parent_directives); name the slice after what runs in it "
                "(e.g. web)",
            )
            continue
        if name is None or not _first(name, index, seen, path, "slice", errors):
            continue
        result.append(
            {
                "name": name,
                "unit": f"procslice-{name}.slice",
                "state": state,
                "directives": directives,
                "limits": limits,
                "_paths": paths,
            }
        )
    # systemd reads '-' in a slice name as a level: procslice-web-api.slice is a child of
    # procslice-web.slice, so a slice "web-api" would silently sit inside slice "web".
    names = {s["name"] for s in result}
    for sl in result:
        parts = sl["name"].split("-")
        for cut in range(1, len(parts)):
            parent = "-".join(parts[:cut])
            if parent in names:
                errors.add(
                    f"procslice_slices[{sl['name']}].name",
                    f"{_show(sl['name'])} would nest inside slice {parent} (systemd reads '-' "
                    f"in a slice name as a level: {sl['unit']} is a child of "
                    f"procslice-{parent}.slice); rename it without that prefix "
                    f"(e.g. {sl['name'].replace('-', '')})",
                )
                break
    return result
