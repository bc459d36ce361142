"""ProcsliceDataError, the collector of messages and the small helpers that word them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from procslice.data.checks import show
from procslice.data.keys import KEYS, models_phrase
from procslice_controller.vocabulary import MISLEADING_KEYS


class ProcsliceDataError(ValueError):
    """The procslice data is invalid; the message says where and how to fix it."""


#: Render a value the way the operator wrote it, strings quoted.
_show = show


def _human(size: int) -> str:
    """2147483648 -> "2G"; sizes that are not a whole K/M/G/T stay in bytes."""
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> int | None:
    if _is_int(value) and value > 0:
        return int(value)
    if isinstance(value, str) and str(value).strip().isdigit() and int(value) > 0:
        return int(value)
    return None


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]}? " if close else ""


class _Errors:
    """Collects messages, each "<variable path>: <problem>; <fix>"."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{path}: {message}")

    def unknown_keys(self, path: str, data: Mapping[str, Any], valid: Iterable[str]) -> None:
        valid = sorted(valid)
        for key in data:
            if key in valid:
                continue
            if key in MISLEADING_KEYS:
                self.add(f"{path}.{key}", MISLEADING_KEYS[key])
                continue
            self.add(
                f"{path}.{key}",
                f"unknown key; {_suggest(str(key), valid)}valid keys: {', '.join(valid)}",
            )


def _checked(
    entry: Mapping[str, Any], path: str, errors: _Errors, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Each key of ``defaults`` from the entry, or its default, checked with the table's
    check (procslice.data.keys); a refused value is reported under ``path.key`` and
    replaced by the default. The values stay as written (the runtime reads them)."""
    settings: dict[str, Any] = {}
    for key, default in defaults.items():
        value = entry.get(key, default)
        check = KEYS[key].check
        assert check is not None, key
        try:
            check(value)
        except ValueError as exc:
            errors.add(f"{path}.{key}", f"{_show(value)} {exc}")
            value = default
        settings[key] = value
    return settings


def _wrong_model(entry: Mapping[str, Any], path: str, errors: _Errors, model: str) -> None:
    """A key of the table set on a model that does not read it: refused, with the key's
    own fix for that model (its ``elsewhere``) when it has one."""
    for name in entry:
        key = KEYS.get(str(name))
        if key is None or not key.data or key.applies_to(model):
            continue
        fix = key.elsewhere.get(model, f"model {model} does not read it; remove it")
        owner = models_phrase(key.models)
        article = "an" if owner.startswith("aio") else "a"
        errors.add(f"{path}.{name}", f"is {article} {owner} setting; {fix}")
