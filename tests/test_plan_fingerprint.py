"""The plan's base fingerprint: what it is computed from stays in step with what the
host tools' install renders.

procslice_plan does not render the exporter's unit on every host; it fingerprints what
the unit is rendered from (roles/procslice_plan/vars/main.yml): the template's text
(in procslice_build_tools), the exporter's address and the name and metrics address
of every service it serves onwards. A template that starts to read anything else
would change on a host without the plan seeing it: these tests fail first.
The tools' fingerprint itself (procslice_build's ``tools``) changes with any tool file
and with the uv that is shipped.
"""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import jinja2
import jinja2.meta
import jinja2.nodes
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPORTER = REPO / "roles/procslice_service/templates/prometheus-procslice-exporter.service.j2"
PLAN_VARS = REPO / "roles/procslice_plan/vars/main.yml"
BUILD_TASKS = REPO / "roles/procslice_build/tasks/build.yml"

# What the plan's fingerprint covers of the exporter's inputs.
FINGERPRINTED = {
    "ansible_managed",
    "procslice_service_exporter_listen",
    # (the present services of every model, podman's too: the plan's
    # __procslice_plan_exported takes the same ones)
    "__procslice_service_all_services",
}
SERVICE_FIELDS = {"name", "metrics_listen", "model", "state"}


def _env() -> jinja2.Environment:
    env = jinja2.Environment()
    env.filters["comment"] = lambda text: text  # ansible's; only its name matters here
    return env


def _ast() -> jinja2.nodes.Template:
    return _env().parse(EXPORTER.read_text())


def test_the_exporter_template_reads_only_what_the_plan_fingerprints() -> None:
    used = jinja2.meta.find_undeclared_variables(_ast())
    assert used <= FINGERPRINTED, (
        f"{EXPORTER.name} now reads {sorted(used - FINGERPRINTED)}: add it to "
        "__procslice_plan_base_fingerprint (roles/procslice_plan/vars/main.yml) and here"
    )


def test_the_exporter_template_reads_only_fingerprinted_service_fields() -> None:
    tree = _ast()
    fields = {node.attr for node in tree.find_all(jinja2.nodes.Getattr)}
    fields |= {
        str(node.args[0].value)
        for node in tree.find_all(jinja2.nodes.Filter)
        if node.name in {"selectattr", "rejectattr", "map"}
        and node.args
        and isinstance(node.args[0], jinja2.nodes.Const)
        and str(node.args[0].value) not in {"in", "eq", "attribute", "present"}
    }
    # selectattr('model', 'in', [...]) and selectattr('metrics_listen'): the first argument
    assert fields <= SERVICE_FIELDS, sorted(fields - SERVICE_FIELDS)
    plan = PLAN_VARS.read_text()
    for field in ("name", "metrics_listen"):
        assert f"map(attribute='{field}')" in plan, field
    for text in (plan, EXPORTER.read_text()):
        assert "selectattr('state', 'eq', 'present')" in text
        assert "selectattr('model', 'in', ['gunicorn', 'aio', 'swoole', 'podman'])" in text


def test_the_build_fingerprints_every_tool_the_hosts_get() -> None:
    task = yaml.safe_load(BUILD_TASKS.read_text())[0]["procslice_build"]
    tools = [
        item.replace("{{ role_path }}", str(REPO / "roles/procslice_build"))
        for item in task["tools"]
    ]
    names = {Path(item).name for item in tools}
    assert EXPORTER.name in names
    assert {"procslice-activate", "procslice", "procslice-lock", "procslice-audit"} <= names
    for item in tools:
        assert Path(item).resolve().is_file(), item
    assert "procslice_build_tools" in PLAN_VARS.read_text()


def _build_action() -> ModuleType:
    path = REPO / "plugins/action/procslice_build.py"
    spec = importlib.util.spec_from_file_location("procslice_build_action", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tools(tmp_path: Path) -> tuple[list[str], Path]:
    files = []
    for name in ("procslice-activate", "status.py"):
        path = tmp_path / name
        path.write_text(f"# {name} v1\n")
        files.append(str(path))
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\necho 'uv 0.9.1'\n")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    return files, uv


def test_the_tools_fingerprint_follows_each_file_and_the_uv_version(
    tools: tuple[list[str], Path],
) -> None:
    action = _build_action()
    files, uv = tools
    first = action.tools_fingerprint(files, str(uv))
    assert first == action.tools_fingerprint(files, str(uv))
    Path(files[1]).write_text("# status.py v2\n")
    second = action.tools_fingerprint(files, str(uv))
    assert second != first
    uv.write_text("#!/bin/sh\necho 'uv 0.9.2'\n")
    assert action.tools_fingerprint(files, str(uv)) != second
    # no uv on the controller: still a fingerprint (the hosts build with pip)
    assert action.tools_fingerprint(files, str(uv.parent / "missing")) not in {first, second}


def test_the_tools_fingerprint_follows_the_host_runtime(tools: tuple[list[str], Path]) -> None:
    """A changed runtime wheelhouse re-installs the host's tools; the same one does not."""
    action = _build_action()
    files, uv = tools
    first = action.tools_fingerprint(files, str(uv), "a1b2c3d4e5f6")
    assert action.tools_fingerprint(files, str(uv), "a1b2c3d4e5f6") == first
    assert action.tools_fingerprint(files, str(uv), "0f9e8d7c6b5a") != first
    assert action.tools_fingerprint(files, str(uv)) != first


def test_a_missing_tool_file_fails_naming_it(tools: tuple[list[str], Path]) -> None:
    action = _build_action()
    files, uv = tools
    missing = str(Path(files[0]).parent / "gone")
    with pytest.raises(Exception, match="gone"):
        action.tools_fingerprint([*files, missing], str(uv))
