"""procslice_build: wheelhouses on the controller, nothing on the host.

testinfra runs on the controller: `host` is the test host, pathlib reads the
controller's wheelhouse cache (molecule.yml: procslice_build_cache_dir).
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import pytest

REPO = Path(
    os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3])
).parents[1]
CACHE = REPO / ".cache" / "molecule" / "procslice_build" / "wheelhouse"
CONSTRAINTS = REPO / "requirements" / "service.txt"


def wheelhouse() -> Path:
    """The one wheelhouse of `hello` (its directory is named for the release hash)."""
    (only,) = (CACHE / "hello").iterdir()
    return only


def archive_members() -> list[str]:
    with tarfile.open(wheelhouse() / "wheelhouse.tar") as tar:
        return tar.getnames()


def pinned(name: str) -> str:
    """The version requirements/service.txt pins for a project."""
    for line in CONSTRAINTS.read_text().splitlines():
        match = re.fullmatch(rf"{re.escape(name)}==(\S+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned in {CONSTRAINTS}")


# ---- The controller's cache ----


def test_only_present_python_services_get_a_wheelhouse():
    # (.runtime: the runtime's wheel, built once for every wheelhouse; .host-runtime:
    # the wheelhouse of the host runtime, procslice status and its exporter)
    assert sorted(p.name for p in CACHE.iterdir()) == [".host-runtime", ".runtime", "hello"]
    (runtime,) = (CACHE / ".runtime").iterdir()
    assert [p.name for p in runtime.glob("*.whl")] == ["procslice-0.1.0-py3-none-any.whl"]


def test_the_host_runtime_wheelhouse_is_built_once_with_its_exposition_library():
    (built,) = (CACHE / ".host-runtime").iterdir()
    assert (built / ".complete").is_file(), sorted(p.name for p in built.iterdir())
    with tarfile.open(built / "wheelhouse.tar") as tar:
        members = [Path(name).name for name in tar.getnames()]
    assert "procslice-0.1.0-py3-none-any.whl" in members, members
    assert any(re.fullmatch(r"prometheus_client-[^-]+-py3-none-any\.whl", m) for m in members)


def test_two_builds_of_the_same_inputs_give_one_hash():
    # converge built it, idempotence found it complete (changed=false) and reused it:
    # one directory, no half-built leftover.
    entries = sorted(p.name for p in (CACHE / "hello").iterdir())
    assert len(entries) == 1, entries
    assert re.fullmatch(r"[0-9a-f]{12}", entries[0]), entries


def test_wheelhouse_is_marked_complete_with_its_hash():
    built = wheelhouse()
    assert (built / ".complete").read_text().strip() == built.name


@pytest.mark.parametrize(
    "pattern",
    [
        # the app itself, built from examples/hello_wsgi
        r"hello_wsgi-1\.0\.0-py3-none-any\.whl",
        # the model's server, at the constrained version
        rf"gunicorn-{re.escape(pinned('gunicorn'))}-py3-none-any\.whl",
        # the procslice runtime
        r"procslice-[^-]+-py3-none-any\.whl",
    ],
)
def test_wheelhouse_archive_holds_wheel(pattern):
    members = archive_members()
    assert any(re.fullmatch(pattern, m) for m in members), members


def test_wheelhouse_archive_holds_only_wheels():
    members = archive_members()
    assert members, "empty archive"
    assert all(m.endswith(".whl") for m in members), members


# ---- The host ----


@pytest.mark.parametrize(
    "path", ["/srv/procslice", "/etc/procslice", "/usr/local/lib/procslice", "/var/lib/procslice"]
)
def test_host_has_no_procslice_files(host, path):
    assert not host.file(path).exists


def test_host_has_no_procslice_users(host):
    users = host.check_output("getent passwd | cut -d: -f1").split()
    assert not [u for u in users if u.startswith("procslice")]


def test_host_has_no_procslice_units(host):
    # list-unit-files exits 1 when nothing matches
    units = host.run("systemctl list-unit-files --no-legend 'procslice*'")
    assert units.stdout.strip() == "", units.stdout
    assert host.run("ls /etc/systemd/system | grep -q procslice").rc == 1
