"""procslice_build's wheelhouse.py: a build that fails says pip's own verdict first, and
a requirements file is resolved once into a lock that every later build uses."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "roles" / "procslice_build" / "files" / "wheelhouse.py"
SERVICE_VARS = REPO / "roles" / "procslice_service" / "vars" / "main.yml"
_spec = importlib.util.spec_from_file_location(
    "procslice_plan_module_for_build", REPO / "plugins/modules/procslice_plan.py"
)
assert _spec and _spec.loader
plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plan)


def build_spec(base: Path, package: dict[str, str], runtime: Path, constraints: Path) -> dict:
    """wheelhouse.py's input for one aio service "api" with this package."""
    return {
        "services": [{"name": "api", "model": "aio", "state": "present", "package": package}],
        "base_dir": str(base),
        "runtime_source": str(runtime),
        "constraints": str(constraints),
        "cache_dir": str(base / "cache"),
    }


def test_a_wheel_pip_cannot_read_fails_with_pips_error_first(tmp_path: Path) -> None:
    # Not a wheel at all: pip refuses it without asking any index.
    (tmp_path / "api-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    spec = build_spec(
        tmp_path,
        {"wheel": "api-1.0-py3-none-any.whl"},
        REPO,
        REPO / "requirements" / "service.txt",
    )
    run = subprocess.run(
        [sys.executable, str(WHEELHOUSE)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout
    first = run.stderr.splitlines()[0]
    assert first.startswith("procslice_services[api]: building the wheelhouse failed: ERROR:"), (
        run.stderr[-3000:]
    )
    assert not list((tmp_path / "cache").glob("api/*/.complete")), "a failed build was kept"


# ---- Requirements resolved once into a lock ----
#
# No index at all: tinypkg's wheels are made here into a find-links directory, and the
# runtime is a stand-in project named procslice whose build backend is in its own tree
# (nothing to download to build it). uv runs offline with a cache of its own.

WHEEL_TAG = (
    "Wheel-Version: 1.0\nGenerator: procslice-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
)


def wheel_bytes(name: str, version: str) -> bytes:
    """A minimal valid pure-Python wheel (METADATA, WHEEL, RECORD)."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": WHEEL_TAG,
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return out.getvalue()


BACKEND = f'''
"""An in-tree PEP 517 backend: the stand-in runtime builds with nothing downloaded."""
import base64, hashlib, io, os, zipfile

WHEEL_TAG = {WHEEL_TAG!r}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if os.environ.get("TINY_BACKEND_BUILDS"):  # a line per build, for the tests to count
        with open(os.environ["TINY_BACKEND_BUILDS"], "a") as log:
            log.write("built\\n")
    name, version = "procslice", "0.1.0"
    info = f"{{name}}-{{version}}.dist-info"
    files = {{
        "procslice/__init__.py": open(os.path.join("src", "procslice", "__init__.py")).read(),
        f"{{info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{name}}\\nVersion: {{version}}\\n",
        f"{{info}}/WHEEL": WHEEL_TAG,
    }}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{{path}},sha256={{digest.decode()}},{{len(text.encode())}}")
    files[f"{{info}}/RECORD"] = "\\n".join([*record, f"{{info}}/RECORD,,"]) + "\\n"
    filename = f"{{name}}-{{version}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return filename
'''


@pytest.fixture
def locked(tmp_path: Path) -> dict[str, Any]:
    """A requirements service (tinypkg>=1.0), tinypkg 1.0 in the find-links directory."""
    links = tmp_path / "links"
    links.mkdir()
    (links / "tinypkg-1.0-py3-none-any.whl").write_bytes(wheel_bytes("tinypkg", "1.0"))
    runtime = tmp_path / "runtime"
    (runtime / "src" / "procslice").mkdir(parents=True)
    (runtime / "src" / "procslice" / "__init__.py").write_text("")
    # (the backend inside the package: the runtime's build copy holds only RUNTIME_FILES)
    (runtime / "src" / "procslice" / "tinybackend.py").write_text(BACKEND)
    (runtime / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\n'
        'backend-path = ["src/procslice"]\n'
    )
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("tinypkg>=1.0\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# nothing pinned\n")
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(links),
        "PIP_CONSTRAINT": "",
        "PIP_CONFIG_FILE": os.devnull,
        "UV_OFFLINE": "1",
        "UV_FIND_LINKS": str(links),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_NO_CONFIG": "1",
    }
    spec = build_spec(tmp_path, {"requirements": "app/requirements.txt"}, runtime, constraints)
    return {
        "spec": spec,
        "env": env,
        "links": links,
        "lock": app / "requirements.lock",
        "tmp": tmp_path,
    }


def run_build(locked: dict[str, Any], **extra: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WHEELHOUSE)],
        input=json.dumps({**locked["spec"], **extra}),
        capture_output=True,
        text=True,
        timeout=300,
        env=locked["env"],
    )


def built(locked: dict[str, Any], **extra: Any) -> dict[str, Any]:
    run = run_build(locked, **extra)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    return {"changed": out["changed"], **out["wheelhouses"]["api"]}


def pins(text: str) -> list[str]:
    return [line.split(" ")[0] for line in text.splitlines() if "==" in line]


def test_requirements_are_locked_once_and_a_newer_version_waits_for_refresh(
    locked: dict[str, Any],
) -> None:
    first = built(locked)
    lock = locked["lock"].read_text()
    wheel = (locked["links"] / "tinypkg-1.0-py3-none-any.whl").read_bytes()
    assert pins(lock) == ["tinypkg==1.0"], lock
    assert f"--hash=sha256:{hashlib.sha256(wheel).hexdigest()}" in lock, lock
    assert first["lock"] == {"tinypkg": "1.0"}

    # A newer version in reach: the lock holds, the release stays the same.
    (locked["links"] / "tinypkg-1.1-py3-none-any.whl").write_bytes(wheel_bytes("tinypkg", "1.1"))
    second = built(locked)
    assert locked["lock"].read_text() == lock
    assert (second["hash"], second["changed"]) == (first["hash"], False)

    # Refresh: resolved anew, 1.1 locked, a new release.
    third = built(locked, refresh=True)
    assert pins(locked["lock"].read_text()) == ["tinypkg==1.1"]
    assert third["lock"] == {"tinypkg": "1.1"}
    assert third["hash"] != first["hash"]
    with tarfile.open(third["archive"]) as tar:
        members = tar.getnames()
        kept = tar.extractfile("procslice.lock")
        assert kept is not None and kept.read().decode() == locked["lock"].read_text()
        host_pins = tar.extractfile("requirements.txt")
        assert host_pins is not None and host_pins.read().decode() == "tinypkg==1.1\n"
    assert "tinypkg-1.1-py3-none-any.whl" in members, members
    assert "tinypkg-1.0-py3-none-any.whl" not in members, members

    # The plan of a host that runs the first release names the change.
    releases = locked["tmp"] / "srv/api/releases"
    current = releases / f"20260101T000000Z-{first['hash']}"
    current.mkdir(parents=True)
    (current / ".complete").touch()
    with tarfile.open(first["archive"]) as tar:
        kept = tar.extractfile("procslice.lock")
        assert kept is not None
        (current / "procslice.lock").write_bytes(kept.read())
    link = locked["tmp"] / "srv/api/current"
    link.symlink_to(f"releases/{current.name}")
    entry = plan.decide_service(
        {
            "name": "api",
            "unit": "procslice-api",
            "link": str(link),
            "reload_on": [str(link)],
            "release": third["hash"],
            "releases": str(releases),
            "lock": third["lock"],
        },
        str(locked["tmp"] / "applied"),
        True,
    )
    assert entry["action"] == "install"
    assert "lock: tinypkg 1.0 -> 1.1" in entry["reasons"], entry["reasons"]


def test_the_release_keeps_its_lock_and_installs_the_locked_versions(
    locked: dict[str, Any],
) -> None:
    result = built(locked)
    (locked["links"] / "tinypkg-1.1-py3-none-any.whl").write_bytes(wheel_bytes("tinypkg", "1.1"))
    script = yaml.safe_load(SERVICE_VARS.read_text())["__procslice_service_venv_script"]
    release = locked["tmp"] / f"releases/20260101T000000Z-{result['hash']}"
    run = subprocess.run(
        ["/bin/sh", "-c", script, "procslice-venv", str(release), result["archive"]]
        + result["install"],
        capture_output=True,
        text=True,
        timeout=300,
        env=locked["env"],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (release / "procslice.lock").read_text() == locked["lock"].read_text()
    assert not (release / "wheelhouse").exists()
    (site,) = release.glob("venv/lib/python*/site-packages")
    assert (site / "tinypkg" / "__init__.py").read_text() == "VERSION = '1.0'\n"


def test_a_changed_requirements_file_is_resolved_again_keeping_locked_versions(
    locked: dict[str, Any],
) -> None:
    built(locked)
    links = locked["links"]
    (links / "tinypkg-1.1-py3-none-any.whl").write_bytes(wheel_bytes("tinypkg", "1.1"))
    (links / "otherpkg-2.0-py3-none-any.whl").write_bytes(wheel_bytes("otherpkg", "2.0"))
    (locked["tmp"] / "app/requirements.txt").write_text("tinypkg>=1.0\notherpkg\n")
    second = built(locked)
    assert second["lock"] == {"otherpkg": "2.0", "tinypkg": "1.0"}
    assert pins(locked["lock"].read_text()) == ["otherpkg==2.0", "tinypkg==1.0"]


def test_a_requirement_no_index_has_fails_naming_the_variable_with_uvs_message_first(
    locked: dict[str, Any],
) -> None:
    (locked["tmp"] / "app/requirements.txt").write_text("tinypkg>=2.0\n")
    run = run_build(locked)
    assert run.returncode == 1, run.stdout
    lines = run.stderr.splitlines()
    assert lines[0] == (
        "procslice_services[api].package.requirements: error: No solution found when "
        "resolving dependencies"
    ), run.stderr
    assert "tinypkg>=2.0" in run.stderr and "Fix: correct the requirements" in run.stderr
    assert not locked["lock"].exists()


def test_a_malformed_lock_fails_naming_the_variable_and_the_fix(locked: dict[str, Any]) -> None:
    built(locked)
    text = locked["lock"].read_text()
    locked["lock"].write_text(text.replace("tinypkg==1.0", "tinypkg>=1.0"))
    run = run_build(locked)
    assert run.returncode == 1, run.stdout
    first = run.stderr.splitlines()[0]
    assert first.startswith(
        f"procslice_services[api].package.requirements: the lock {locked['lock']} is malformed:"
    ), run.stderr
    assert "-e procslice_refresh=true" in run.stderr, run.stderr


def test_an_unreadable_lock_fails_naming_the_variable_and_refresh_replaces_it(
    locked: dict[str, Any],
) -> None:
    locked["lock"].write_bytes(b"\xff\xfe not text")
    run = run_build(locked)
    assert run.returncode == 1, run.stdout
    first = run.stderr.splitlines()[0]
    assert first.startswith(
        f"procslice_services[api].package.requirements: the lock {locked['lock']} cannot be read:"
    ), run.stderr
    assert "-e procslice_refresh=true" in run.stderr, run.stderr
    assert built(locked, refresh=True)["lock"] == {"tinypkg": "1.0"}
    assert pins(locked["lock"].read_text()) == ["tinypkg==1.0"]


def test_check_mode_resolves_without_writing_the_lock(locked: dict[str, Any]) -> None:
    assert built(locked, check=True)["lock"] == {"tinypkg": "1.0"}
    assert not locked["lock"].exists()
    built(locked)
    lock = locked["lock"].read_text()
    (locked["links"] / "tinypkg-1.1-py3-none-any.whl").write_bytes(wheel_bytes("tinypkg", "1.1"))
    # --check -e procslice_refresh=true: the new versions planned, the lock left alone
    assert built(locked, check=True, refresh=True)["lock"] == {"tinypkg": "1.1"}
    assert locked["lock"].read_text() == lock


def test_the_runtime_is_built_once_for_every_service_until_its_sources_change(
    locked: dict[str, Any],
) -> None:
    builds = locked["tmp"] / "runtime-builds.log"
    locked["env"]["TINY_BACKEND_BUILDS"] = str(builds)
    api = locked["spec"]["services"][0]
    web = {**api, "name": "web"}
    first = json.loads(built_run(locked, services=[api, web]).stdout)["wheelhouses"]
    assert set(first) == {"api", "web"}
    assert builds.read_text().splitlines() == ["built"], "the runtime was built per service"
    for wheelhouse in first.values():
        with tarfile.open(wheelhouse["archive"]) as tar:
            assert "procslice-0.1.0-py3-none-any.whl" in tar.getnames()
    # A change of the controller's code only (src/procslice_controller): no build, the
    # same releases, and the code is in no wheel.
    controller = locked["tmp"] / "runtime" / "src" / "procslice_controller"
    controller.mkdir()
    (controller / "checks.py").write_text("# the controller's\n")
    same = json.loads(built_run(locked, services=[api, web]).stdout)
    assert builds.read_text().splitlines() == ["built"], "a controller change rebuilt the runtime"
    assert same["changed"] is False
    assert {n: w["hash"] for n, w in same["wheelhouses"].items()} == {
        n: w["hash"] for n, w in first.items()
    }
    # A change of the runtime's sources: a new runtime wheel, new releases.
    (locked["tmp"] / "runtime" / "src" / "procslice" / "__init__.py").write_text("# 2\n")
    second = json.loads(built_run(locked, services=[api, web]).stdout)["wheelhouses"]
    assert builds.read_text().splitlines() == ["built", "built"]
    assert {second[n]["hash"] for n in second}.isdisjoint({first[n]["hash"] for n in first})


def built_run(locked: dict[str, Any], **extra: Any) -> subprocess.CompletedProcess[str]:
    run = run_build(locked, **extra)
    assert run.returncode == 0, run.stderr[-3000:]
    return run
