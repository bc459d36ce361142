"""scripts/role-docs.py: role READMEs generated from meta/argument_specs.yml, and --check.

Every test but the first works on copies of roles under tmp_path (--roles-dir), so the
real roles are never written.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "role-docs.py"
ROLE = "procslice_gunicorn"
BLOCK = re.compile(
    r"<!-- BEGIN GENERATED (?P<name>[A-Z]+) -->.*?<!-- END GENERATED (?P=name) -->", re.S
)


def role_docs(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def copy_role(tmp_path: Path, role: str = ROLE) -> Path:
    """A copy of a real role under tmp_path/roles; its path."""
    copy = tmp_path / "roles" / role
    shutil.copytree(REPO / "roles" / role, copy)
    return copy


def outside_blocks(text: str) -> list[str]:
    """The hand-written text: everything but the generated blocks, in order."""
    return BLOCK.split(text)[::3]


def test_checked_in_readmes_are_in_sync_with_their_argument_specs():
    result = role_docs("--check")
    assert result.returncode == 0, result.stderr


def test_every_role_with_argument_specs_has_a_generated_readme():
    for specs in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        readme = specs.parent.parent / "README.md"
        assert readme.is_file(), readme
        blocks = [m["name"] for m in BLOCK.finditer(readme.read_text(encoding="utf-8"))]
        assert blocks == ["DESCRIPTION", "VARIABLES"], readme


def test_changed_default_is_reported_by_check_naming_the_role(tmp_path):
    role = copy_role(tmp_path)
    specs = role / "meta" / "argument_specs.yml"
    text = specs.read_text(encoding="utf-8")
    assert "default: 64M" in text
    specs.write_text(text.replace("default: 64M", "default: 96M"), encoding="utf-8")
    readme_before = (role / "README.md").read_text(encoding="utf-8")

    result = role_docs("--check", "--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"roles/{ROLE}/README.md" in result.stderr
    assert "python scripts/role-docs.py" in result.stderr
    assert (role / "README.md").read_text(encoding="utf-8") == readme_before, "--check wrote"


def test_unchanged_copy_passes_check(tmp_path):
    copy_role(tmp_path)
    result = role_docs("--check", "--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_regenerating_keeps_hand_written_text_and_updates_the_table(tmp_path):
    role = copy_role(tmp_path)
    readme = role / "README.md"
    text = readme.read_text(encoding="utf-8")
    # Hand-written text before, between and after the blocks, with a look-alike table row.
    text = "<!-- a note above the title -->\n" + text.replace(
        "## Example\n", "## Example\n\nA hand-written | `64M` | line.\n", 1
    )
    text += "\n## Appendix\n\nKept after the variables too.\n"
    readme.write_text(text, encoding="utf-8")
    specs = role / "meta" / "argument_specs.yml"
    specs.write_text(
        specs.read_text(encoding="utf-8").replace("default: 64M", "default: 96M"),
        encoding="utf-8",
    )

    result = role_docs("--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    after = readme.read_text(encoding="utf-8")
    assert outside_blocks(after) == outside_blocks(text)
    assert "| `procslice_gunicorn_worker_memory_estimate` | str | `96M` |" in after
    assert "| `procslice_gunicorn_worker_memory_estimate` | str | `64M` |" not in after
    check = role_docs("--check", "--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)
    assert check.returncode == 0, check.stderr


def test_edited_generated_block_is_drift(tmp_path):
    role = copy_role(tmp_path)
    readme = role / "README.md"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace("| `64M` |", "| `128M` |"), encoding="utf-8")
    result = role_docs("--check", "--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)
    assert result.returncode == 1
    assert ROLE in result.stderr


def write_role(roles: Path, name: str, specs: str) -> Path:
    role = roles / name
    (role / "meta").mkdir(parents=True)
    (role / "meta" / "argument_specs.yml").write_text(specs, encoding="utf-8")
    return role


NESTED_SPECS = """\
argument_specs:
  main:
    short_description: A role for the test
    description:
      - Renders <name>.conf for `a | b`.
    options:
      demo_items:
        type: list
        elements: dict
        default: [{key: a, value: "x|y"}]
        description: The items.
        mutually_exclusive: [[key, other]]
        options:
          key:
            type: str
            required: true
            choices: [a, b]
            description: The key of one item.
          other:
            type: str
            description: Another spelling of key.
      demo_flag:
        type: str
        default: "true"
        description: A string that reads like a bool.
"""


def test_new_role_gets_a_readme_with_suboptions_and_escaped_cells(tmp_path):
    roles = tmp_path / "roles"
    role = write_role(roles, "demo", NESTED_SPECS)

    check = role_docs("--check", "--roles-dir", str(roles), cwd=tmp_path)
    assert check.returncode == 1
    assert "roles/demo/README.md (role demo) is missing" in check.stderr

    result = role_docs("--roles-dir", str(roles), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (role / "README.md").read_text(encoding="utf-8")
    assert text.startswith("<!-- BEGIN GENERATED DESCRIPTION -->\n")
    assert "# demo\n\nA role for the test.\n\nRenders \\<name>.conf for `a | b`.\n" in text
    assert "cd roles/demo && molecule test" in text
    assert (
        "| `demo_items` | list of dict | `[{key: a, value: x\\|y}]` | no |  | The items. |" in text
    )
    assert "| `demo_items.key` | str |  | yes | `a`, `b` | The key of one item. |" in text
    assert '| `demo_flag` | str | `"true"` | no |' in text
    assert "- `demo_items`: mutually exclusive: `key` / `other`" in text
    assert role_docs("--check", "--roles-dir", str(roles), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace("<!-- END GENERATED VARIABLES -->\n", ""),
        lambda text: text + "<!-- BEGIN GENERATED DESCRIPTION -->\n",
    ],
    ids=["marker-missing", "marker-twice"],
)
def test_readme_with_broken_markers_is_refused_not_overwritten(tmp_path, damage):
    role = copy_role(tmp_path)
    readme = role / "README.md"
    broken = damage(readme.read_text(encoding="utf-8"))
    readme.write_text(broken, encoding="utf-8")
    result = role_docs("--roles-dir", str(tmp_path / "roles"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"roles/{ROLE}/README.md" in result.stderr
    assert readme.read_text(encoding="utf-8") == broken
