"""The collection scenario: procslice built with `ansible-galaxy collection build`,
installed offline into an empty collections path, and deployed from a directory holding
only an inventory and a playbook, with none of the repository's configuration
(converge.yml). Checked from the controller and on the host."""

from __future__ import annotations

import json
import re
import tarfile
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
WORK = Path("/var/tmp/procslice-mcoll")
PROJECT = WORK / "project"
COLLECTION = WORK / "collections" / "ansible_collections" / "procslice" / "procslice"
HOST, HTTP_BASE = "procslice-mcoll1", 22100
SERVICE = "hello-coll"
UNIT = f"procslice-{SERVICE}.service"

testinfra_hosts = [f"ansible://{HOST}"]


def tarball() -> Path:
    (found,) = (WORK / "dist").glob("procslice-procslice-*.tar.gz")
    return found


def data() -> dict:
    """The project's own inventory vars (what the user wrote)."""
    inventory = yaml.safe_load((PROJECT / "hosts.yml").read_text())
    return inventory["all"]["children"]["procslice"]["vars"]


def run_log(n: int) -> str:
    return (WORK / f"deploy-{n}.log").read_text()


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP rows by host; a run without one fails the test (never passes vacuously)."""
    rows = {}
    for name, fields in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.M):
        rows[name] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    assert rows, f"no PLAY RECAP in the output:\n{output[-3000:]}"
    return rows


def journal(host) -> str:
    return host.run(f"journalctl -u {UNIT} --no-pager -n 40").stdout


def test_the_tarball_holds_what_the_roles_need_and_none_of_the_clones_tooling():
    with tarfile.open(tarball()) as tar:
        names = set(tar.getnames())
    size = tarball().stat().st_size
    print(f"\ncollection: {tarball().name}, {size / 1024:.0f} KiB, {len(names)} entries")
    # what the roles read outside roles/: the runtime built into every wheelhouse and its
    # constraints (the host runtime's too), the host tools, the unit templates, the playbook
    # at the root
    for needed in (
        "MANIFEST.json",
        "meta/runtime.yml",
        "deploy.yml",
        "playbooks/deploy.yml",
        "pyproject.toml",
        "src/procslice/status/__init__.py",
        "src/procslice/data/__init__.py",
        "src/procslice_controller/__init__.py",
        "roles/procslice_service/files/procslice",
        "requirements/service.txt",
        "requirements.txt",
        "roles/procslice_build/files/wheelhouse.py",
        "roles/procslice_service/files/procslice-activate",
        "roles/procslice_lock/files/procslice-lock",
        "templates/gunicorn",
        "plugins/filter/procslice.py",
    ):
        assert needed in names, needed
    tops = {name.split("/")[0] for name in names}
    for left_out in (".cache", ".venv", "tests", "molecule", "bench", "collections", "scripts"):
        assert left_out not in tops, left_out
    assert not [name for name in names if "/molecule" in name or "__pycache__" in name]
    assert size < 1024 * 1024


def test_the_runs_saw_no_configuration_of_the_repository():
    # the project holds its inventory and its playbook, and ansible-playbook read no
    # ansible.cfg and only the collections path the tarball went into
    assert sorted(path.name for path in PROJECT.iterdir()) == ["hosts.yml", "site.yml"]
    versions = (WORK / "versions.txt").read_text()
    assert re.search(r"^\s*config file = None$", versions, re.M), versions
    assert f"ansible collection location = {WORK / 'collections'}\n" in versions, versions
    assert [path.name for path in (WORK / "collections" / "ansible_collections").iterdir()] == [
        "procslice"
    ]
    assert json.loads((COLLECTION / "MANIFEST.json").read_text())["collection_info"]["name"] == (
        "procslice"
    )


def test_the_collections_playbook_and_roles_ran_by_their_full_names():
    output = run_log(1)
    for role in ("procslice_preflight", "procslice_build", "procslice_plan", "procslice_service"):
        assert f"TASK [procslice.procslice.{role} : " in output, role
    assert "TASK [procslice.procslice.procslice_gunicorn : " in output
    # the project's own play: the lock role and the slices role by full names
    assert "PLAY [Apply the slices' limits live, under procslice's deploy lock]" in output
    assert "TASK [procslice.procslice.procslice_slices : " in output


def test_the_service_answers_over_http(host):
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_BASE}/", timeout=10) as answer:
        assert answer.status == 200, journal(host)
        assert answer.read().decode().startswith(f"hello from {SERVICE} pid "), journal(host)
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_BASE}/version", timeout=10) as answer:
        assert answer.read().decode().strip() == "1 1.0.0"


def test_the_service_runs_in_its_slice_with_its_limits(host):
    service = data()["procslice_services"][0]
    assert host.service(UNIT).is_running, journal(host)
    shown = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {UNIT} -p Slice -p MemoryMax -p TasksMax -p ControlGroup"
        ).splitlines()
    )
    assert shown["Slice"] == "procslice-web.slice"
    assert service["limits"]["memory_max"] == "128M"
    assert shown["MemoryMax"] == str(128 * 1024 * 1024)
    assert shown["TasksMax"] == str(service["limits"]["tasks_max"])
    # the kernel has the limit: the unit's memory cgroup (the test hosts run cgroup v1,
    # under their container's own group)
    group = shown["ControlGroup"]
    assert group.endswith(f"/procslice.slice/procslice-web.slice/{UNIT}"), group
    limit = host.file(f"/sys/fs/cgroup/memory{group}/memory.limit_in_bytes").content_string
    assert int(limit) == 128 * 1024 * 1024


def test_the_second_run_changes_nothing():
    first, second = run_log(1), run_log(2)
    print(
        "\ncollection: deploy runs took",
        ", ".join(re.findall(r"seconds=(\S+)", first) + re.findall(r"seconds=(\S+)", second)),
    )
    assert recap(first)[HOST]["changed"] > 0
    rows = recap(second)
    changed = re.findall(r"^changed: \[.*$", second, re.M)
    assert all(row["changed"] == 0 and row["failed"] == 0 for row in rows.values()), changed


def test_the_projects_play_held_the_lock_and_released_it(host):
    assert not host.file("/run/procslice/deploy.lock").exists
    with host.sudo():
        audit = host.file("/var/log/procslice/audit.log").content_string
    records = [json.loads(line) for line in audit.splitlines()]
    released = [
        record
        for record in records
        if record.get("event") == "lock" and record.get("result") == "released"
    ]
    # one release of the slices' play per run, after the deploy's own
    assert [record.get("what") for record in released][-1] == "limits", released
    assert sum(record.get("what") == "limits" for record in released) == 2, released


def test_the_status_playbook_ran_by_its_full_name_and_shows_the_service(host):
    output = (WORK / "status.log").read_text()
    assert output.rstrip().endswith("# rc=0"), output[-3000:]
    assert "PLAY [Read the status of every service]" in output, output[-3000:]
    # a row a line, also under the JSON result format a project without ansible.cfg has
    # (one string with its newlines escaped would not match)
    assert re.search(r'^\s*"HOST\s+SERVICE\s+MODEL\s', output, re.M), output[-3000:]
    assert re.search(rf'^\s*"{HOST}\s+{SERVICE}\s+gunicorn\s', output, re.M), output[-3000:]
    (document,) = json.loads((WORK / "status.json").read_text())
    assert document["host"] == HOST
    row = {s["service"]: s for s in document["services"]}[SERVICE]
    current = host.check_output(f"readlink /srv/procslice/{SERVICE}/current")
    assert (row["model"], row["state"], row["release"]) == (
        "gunicorn",
        "active",
        current.split("/")[-1],
    ), row
    assert row["health"]["state"] == "ok", row
    assert row["memory"]["max_bytes"] == 128 * 1024 * 1024, row
