#!/usr/bin/env python3
"""Write the files that come from the table of keys (src/procslice/data/keys.py), or
check they are current.

    python scripts/keys.py            # rewrite the generated blocks (then the role docs)
    python scripts/keys.py --check    # exit 1 naming every file that drifted (make lint)

The generated blocks, between ``BEGIN KEYS`` and ``END KEYS`` markers; the text around
them is kept byte for byte:
- roles/procslice_preflight/meta/argument_specs.yml: the entry point preflight's
  procslice_slices and procslice_services, key by key (types, defaults, choices, the
  compose spellings, mutually exclusive with their keys);
- docs/data-model.md: the key reference (a table per kind of key).

Writing also runs scripts/role-docs.py, since procslice_preflight's README is rendered
from its argument specs.

Exit codes: 0 up to date (or rewritten), 1 drift found by --check, 2 a file whose
markers are missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from procslice.data import keys as table  # noqa: E402
from procslice.data.keys import MISSING, Key  # noqa: E402

SPECS = REPO / "roles" / "procslice_preflight" / "meta" / "argument_specs.yml"
DOCS = REPO / "docs" / "data-model.md"
FIX = "python scripts/keys.py"
ROLE_DOCS = REPO / "scripts" / "role-docs.py"


# ------------------------------------------------------------------ argument specs


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key (yamllint's indent-sequences)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _spec(key: Key) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": key.type}
    if key.required:
        spec["required"] = True
    if key.choices:
        spec["choices"] = list(key.choices)
    if key.elements:
        spec["elements"] = key.elements
    if key.default is not MISSING and key.default is not None:
        spec["default"] = key.default
    description = key.described()
    if key.default_doc:
        description += f" Default: {key.default_doc}."
    spec["description"] = description
    if key.options:
        spec.update(_options(key.options))
    return spec


def _options(keys: Iterable[Key]) -> dict[str, Any]:
    """The options of a mapping, each compose spelling beside its key (mutually
    exclusive with it), and the compose ``reservations`` when a key has one."""
    keys = list(keys)
    options: dict[str, Any] = {}
    exclusive: list[list[str]] = []
    reservations: dict[str, Any] = {}
    for key in keys:
        options[key.name] = _spec(key)
        if key.alias:
            options[key.alias] = {
                "type": "raw",
                "description": f"The compose spelling of {key.name}.",
            }
            exclusive.append([key.name, key.alias])
        if key.reservation:
            reservations[key.reservation] = {
                "type": "raw",
                "description": f"The compose reservations.{key.reservation}; becomes "
                f"{key.name} ({key.directive}=).",
            }
    if reservations:
        options["reservations"] = {
            "type": "dict",
            "description": "The compose reservations.",
            "options": reservations,
        }
    result: dict[str, Any] = {}
    if exclusive:
        result["mutually_exclusive"] = exclusive
    result["options"] = options
    return result


def render_specs() -> str:
    data = {
        "procslice_slices": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "description": "The slices, each procslice-<name>.slice inside procslice.slice.",
            **_options(table.SLICE),
        },
        "procslice_services": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "description": "The services, each unit procslice-<name>.service run by the user "
            "procslice-<name>.",
            **_options(key for key in table.SERVICE if key.data),
        },
    }
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=88, allow_unicode=True)
    return "".join(f"      {line}\n" if line else "\n" for line in text.splitlines())


# ------------------------------------------------------------------------- docs


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(key: Key) -> str:
    if key.default_doc:
        return key.default_doc
    if key.default is MISSING or key.default is None:
        return "required" if key.required else ""
    if isinstance(key.default, bool):
        return f"`{str(key.default).lower()}`"
    if key.default == "":
        return '`""`'
    return f"`{key.default}`"


def _rows(keys: Iterable[Key], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for key in keys:
        models = "all" if key.models == table.MODELS else table.models_phrase(key.models)
        extra = []
        if key.directive:
            extra.append(f"`{key.directive}=`")
        if key.alias:
            extra.append(f"compose `{key.alias}`")
        if key.reservation:
            extra.append(f"compose `reservations.{key.reservation}`")
        if key.choices:
            extra.append("one of " + ", ".join(f"`{c}`" for c in key.choices))
        if key.toml:
            extra.append("procslice.toml")
        help_text = key.help + (f" ({'; '.join(extra)})" if extra else "")
        rows.append(
            f"| `{prefix}{key.name}` | {key.type} | {_cell(_default(key))} | {models} "
            f"| {_cell(help_text)} |"
        )
        if key.options and key.name != "limits":
            rows += _rows(key.options, f"{prefix}{key.name}.")
    return rows


def render_docs() -> str:
    head = ["| key | type | default | models | what it is |", "|---|---|---|---|---|"]
    parts = [
        "### Slices (`procslice_slices`)",
        "",
        *head,
        *(row.replace("| all |", "|  |") for row in _rows(table.SLICE)),
        "",
        "### Services (`procslice_services`)",
        "",
        *head,
        *_rows(key for key in table.SERVICE if key.data),
        "",
        "### A service's `limits`",
        "",
        "The resource keys of a slice, plus the process limits only a service has.",
        "",
        *head,
        *(row.replace("| all |", "|  |") for row in _rows(table.LIMIT_KEYS.values())),
        "",
        "### The runtime's own procslice.toml keys",
        "",
        "Not keys of `procslice_services`: the unit or another key sets them "
        "(`procslice aio --help` and `procslice swoole --help` list every key).",
        "",
        *head,
        *_rows(key for key in table.KEYS.values() if not key.data),
    ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------ blocks

BLOCKS = (
    (SPECS, "      # BEGIN KEYS", "      # END KEYS", render_specs),
    (DOCS, "<!-- BEGIN KEYS", "<!-- END KEYS", render_docs),
)


def _replace(text: str, begin: str, end: str, body: str, path: Path) -> str:
    start = text.find(begin)
    stop = text.find(end)
    if start < 0 or stop < start:
        raise SystemExit(
            f"keys: {path.relative_to(REPO)} lacks the markers {begin.strip()!r} and "
            f"{end.strip()!r} in that order; put them back around the generated block"
        )
    after_begin = text.index("\n", start) + 1
    return text[:after_begin] + body + text[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every file that differs from the table of keys",
    )
    args = parser.parse_args(argv)
    drifted: list[str] = []
    for path, begin, end, render in BLOCKS:
        current = path.read_text(encoding="utf-8")
        try:
            expected = _replace(current, begin, end, render(), path)
        except SystemExit as exc:
            print(exc, file=sys.stderr)
            return 2
        if current == expected:
            continue
        if args.check:
            drifted.append(str(path.relative_to(REPO)))
        else:
            path.write_text(expected, encoding="utf-8")
            print(f"keys: wrote {path.relative_to(REPO)}")
    if drifted:
        for name in drifted:
            print(
                f"keys: {name} differs from src/procslice/data/keys.py (the table changed or "
                f"the generated block was edited); run {FIX}",
                file=sys.stderr,
            )
        return 1
    if not args.check:
        return subprocess.call([sys.executable, str(ROLE_DOCS)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
