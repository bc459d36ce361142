"""The repository as the collection procslice.procslice: its metadata agrees with the
runtime's and the controller's, the clone finds itself as the collection, and what runs
inside the collection names procslice's filters in full (molecule/collection deploys
with the built tarball)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            found[name.lower()] = version
    return found


def filter_names() -> set[str]:
    names: set[str] = set()
    for path in sorted((REPO / "plugins" / "filter").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"filters_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        names |= set(module.FilterModule().filters())
    return names


def test_the_collection_is_the_runtimes_version():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    project = (REPO / "pyproject.toml").read_text()
    assert f'version = "{galaxy["version"]}"' in project
    assert (galaxy["namespace"], galaxy["name"]) == ("procslice", "procslice")
    assert (REPO / galaxy["readme"]).is_file()


def test_its_python_requirements_are_the_controllers_pins():
    environment = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    requirements = REPO / environment["dependencies"]["python"]
    declared = pins(requirements)
    controller = pins(REPO / "requirements" / "controller.txt")
    assert declared
    assert {name: controller.get(name) for name in declared} == declared


def test_a_clone_finds_itself_as_the_collection():
    link = REPO / "collections" / "ansible_collections" / "procslice" / "procslice"
    assert link.is_symlink()
    assert link.resolve() == REPO.resolve()


def test_roles_and_playbooks_name_procslices_filters_in_full():
    # Inside a collection a filter has only its full name; a short one works from a
    # clone (ansible.cfg's filter_plugins) and fails from the installed collection.
    names = "|".join(sorted(filter_names(), key=len, reverse=True))
    short = re.compile(rf"(?:\|\s*|(?:map|select|reject)\(\s*['\"])({names})\b")
    files = [REPO / "deploy.yml", *REPO.glob("playbooks/*.yml"), *REPO.glob("roles/*/*/*.yml")]
    found = [
        f"{path.relative_to(REPO)}:{number}: {match.group(1)}"
        for path in files
        if "/molecule/" not in str(path)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in short.finditer(line)
    ]
    assert found == []
