"""The plan phase renders what the apply renders.

roles/procslice_plan renders every role's files in one task (procslice_render with
sets); the apply renders each role's own tasks/render.yml. Each set must name the same
services, templates and loop variable as that role's render.yml, and the plan play
must import each role (tasks/variables.yml: its variables, no task) for them to mean
the same thing; otherwise a plan would compare files the apply does not write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "roles/procslice_plan/tasks/main.yml"
ROLES = {
    "service": "procslice_service",
    "gunicorn": "procslice_gunicorn",
    "supervisor": "procslice_supervisor",
    "podman": "procslice_podman",
    "slices": "procslice_slices",
}


def _plan_block() -> list[dict[str, Any]]:
    tasks = yaml.safe_load(PLAN.read_text())
    (block,) = [task for task in tasks if task.get("name") == "Plan a fleet host"]
    return block["block"]  # type: ignore[no-any-return]


def _plan_sets() -> dict[str, Any]:
    (render,) = [task for task in _plan_block() if "procslice_render" in task]
    return render["procslice_render"]["sets"]  # type: ignore[no-any-return]


def _role_render(role: str) -> dict[str, Any]:
    (task,) = yaml.safe_load((REPO / "roles" / role / "tasks/render.yml").read_text())
    return task["procslice_render"]  # type: ignore[no-any-return]


def test_the_plan_renders_every_model_role_and_the_slices() -> None:
    assert set(_plan_sets()) == set(ROLES)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_each_set_renders_what_the_role_renders(name: str) -> None:
    role = _role_render(ROLES[name])
    mine = _plan_sets()[name]
    for key in ("services", "templates", "loop_var"):
        assert mine.get(key) == role.get(key), (name, key)
    # root and wheelhouses: the set's own, else the task's, as procslice_render reads them
    # (the slices' render passes neither: their specs are not read, only their files)
    render = [task for task in _plan_block() if "procslice_render" in task][0]["procslice_render"]
    for key in ("root", "wheelhouses"):
        if key not in role:
            continue
        planned = mine[key] if key in mine else render.get(key)
        assert planned == role.get(key), (name, key)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_the_plan_loads_each_role_without_running_a_task(name: str) -> None:
    imports = [
        task["ansible.builtin.import_role"]
        for task in _plan_block()
        if "ansible.builtin.import_role" in task
    ]
    assert {"name": ROLES[name], "tasks_from": "variables.yml"} in imports
    entry = REPO / "roles" / ROLES[name] / "tasks/variables.yml"
    assert yaml.safe_load(entry.read_text()) == []


def test_no_role_variable_the_plan_reads_depends_on_the_role_it_is_read_from() -> None:
    # the plan evaluates the roles' variables in its own role: role_path is procslice_plan's
    for role in ROLES.values():
        for part in ("vars", "defaults"):
            path = REPO / "roles" / role / part / "main.yml"
            if not path.is_file():
                continue
            for line in path.read_text().splitlines():
                if "role_path" in line:
                    assert "role_path }}/../" in line, f"{path}: {line.strip()}"
