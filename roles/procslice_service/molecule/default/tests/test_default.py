"""procslice_service on a real systemd host, after converge and the side effect.

converge.yml installed `hello` (hello_wsgi 1.0.0) and removed `old` (installed and
running since prepare.yml); side_effect.yml deployed hello_wsgi 1.0.1 with a changed
environment and procslice_service_keep_releases 2.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = "/srv/procslice/hello"
ETC = "/etc/procslice/hello"
USER = "procslice-hello"
RELEASE_RE = re.compile(r"^\d{8}T\d{6}Z-(?P<hash>[0-9a-f]{12})$")
# The environment side_effect.yml wrote (molecule.yml: test_env_v2).
ENV = {
    "PROCSLICE_SERVICE": "hello",
    "GREETING": 'It\'s "v2" now, with spaces',
    "LOG_LEVEL": "warning",
}
EXPIRED = ["20000101T000000Z-aaaaaaaaaaaa", "20000102T000000Z-bbbbbbbbbbbb"]


def releases(host) -> list[str]:
    """The release directories of hello, oldest first."""
    return sorted(host.file(f"{ROOT}/releases").listdir())


def current(host) -> str:
    target = host.file(f"{ROOT}/current").linked_to
    return target.rsplit("/", 1)[-1]


def as_user(host, user: str, *argv: str):
    return host.run("runuser -u %s -- " + " ".join(["%s"] * len(argv)), user, *argv)


def app_version(host, release: str) -> str:
    python = f"{ROOT}/releases/{release}/venv/bin/python"
    code = "import importlib.metadata as m; print(m.version('hello-wsgi'))"
    return host.check_output("%s -c %s", python, code)


# ---- The service user ----


def test_service_user_is_a_system_user_that_cannot_log_in(host):
    user = host.user(USER)
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == USER
    assert user.uid < 1000, "a system user takes a uid below UID_MIN"
    assert user.home == f"{ROOT}/shared"


# ---- Directories ----


@pytest.mark.parametrize(
    "path,owner,group,mode",
    [
        (ROOT, "root", USER, 0o755),
        # The code is root's: the service cannot rewrite what it runs.
        (f"{ROOT}/releases", "root", USER, 0o755),
        (f"{ROOT}/wheelhouse", "root", USER, 0o750),
        # Its state is its own, and no one else's.
        (f"{ROOT}/shared", USER, USER, 0o750),
        (ETC, "root", USER, 0o750),
    ],
)
def test_service_directory_has_its_owner_and_mode(host, path, owner, group, mode):
    d = host.file(path)
    assert d.is_directory
    assert (d.user, d.group, d.mode) == (owner, group, mode)


def test_service_user_can_write_shared_but_not_its_code(host):
    assert as_user(host, USER, "touch", f"{ROOT}/shared/.probe").rc == 0
    host.run("rm -f %s", f"{ROOT}/shared/.probe")
    probe = as_user(host, USER, "touch", f"{ROOT}/current/venv/.probe")
    assert probe.rc != 0
    assert "Permission denied" in probe.stderr


# ---- The environment file ----


def test_env_file_belongs_to_root_and_the_service_group_only(host):
    env = host.file(f"{ETC}/env")
    assert env.is_file
    assert (env.user, env.group, env.mode) == ("root", USER, 0o640)
    assert env.mode & 0o007 == 0, "the environment file is world-readable"


def test_service_user_can_read_env_file(host):
    result = as_user(host, USER, "cat", f"{ETC}/env")
    assert result.rc == 0, result.stderr
    assert "GREETING=" in result.stdout


def test_other_users_cannot_read_env_file(host):
    result = as_user(host, "nobody", "cat", f"{ETC}/env")
    assert result.rc != 0
    assert "Permission denied" in result.stderr


def unit_environment(host) -> dict[str, str]:
    """The environment a unit with the service's EnvironmentFile= gets."""
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    result = host.run(
        "timeout 60 systemd-run --quiet --pipe --wait --collect "
        f"-p EnvironmentFile={ETC}/env -p User={USER} "
        f"/usr/bin/python3 -c {shlex.quote(dump)}"
    )
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_systemd_reads_env_values_back_intact(host):
    """Quotes and spaces survive: the unit sees exactly the values of the data."""
    seen = unit_environment(host)
    assert {key: seen.get(key) for key in ENV} == ENV


def test_systemd_reads_non_ascii_env_values_back_intact(host):
    assert unit_environment(host).get("CITY") == "Zürich"


# ---- Releases ----


def test_current_is_a_symlink_to_a_release(host):
    assert host.file(f"{ROOT}/current").is_symlink
    target = host.check_output("readlink %s", f"{ROOT}/current")
    assert re.fullmatch(r"releases/\d{8}T\d{6}Z-[0-9a-f]{12}", target), target


def test_current_release_imports_the_app_its_server_and_the_runtime(host):
    result = as_user(
        host,
        USER,
        f"{ROOT}/current/venv/bin/python",
        "-c",
        "import hello_wsgi, gunicorn, procslice.limits",
    )
    assert result.rc == 0, result.stderr


def test_each_kept_release_has_its_wheelhouse_archive(host):
    for release in releases(host):
        release_hash = RELEASE_RE.match(release)["hash"]
        assert host.file(f"{ROOT}/wheelhouse/{release_hash}.tar").is_file, release


def test_release_is_complete(host):
    for release in releases(host):
        assert host.file(f"{ROOT}/releases/{release}/.complete").is_file, release


def test_new_version_became_current_and_previous_is_kept(host):
    kept = releases(host)
    assert len(kept) == 2, kept
    previous, newest = kept
    assert all(RELEASE_RE.match(r) for r in kept), kept
    assert current(host) == newest
    assert app_version(host, newest) == "1.0.1"
    assert app_version(host, previous) == "1.0.0"


def test_releases_beyond_keep_are_pruned(host):
    for release in EXPIRED:
        assert not host.file(f"{ROOT}/releases/{release}").exists, release


def test_wheelhouses_of_pruned_releases_are_removed(host):
    for release in EXPIRED:
        release_hash = RELEASE_RE.match(release)["hash"]
        assert not host.file(f"{ROOT}/wheelhouse/{release_hash}.tar").exists, release
    assert len(host.file(f"{ROOT}/wheelhouse").listdir()) == 2


# ---- The service marked absent ----


def test_absent_service_units_are_stopped_and_unknown_to_systemd(host):
    for unit in ("procslice-old.service", "procslice-old.socket"):
        props = host.check_output("systemctl show -p LoadState -p ActiveState %s", unit)
        journal = host.run("journalctl --no-pager -n 30 -u %s", unit).stdout
        assert props.splitlines() == ["LoadState=not-found", "ActiveState=inactive"], journal
    assert not host.socket("tcp://127.0.0.1:8001").is_listening


def test_absent_service_processes_are_gone(host):
    uid = host.file("/root/old.uid").content_string.strip()
    assert host.run("pgrep -U %s", uid).rc == 1, host.check_output("ps -U %s -o pid,args", uid)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/systemd/system/procslice-old.service",
        "/etc/systemd/system/procslice-old.socket",
        "/etc/systemd/system/procslice-old.service.d",
        "/etc/procslice/old",
        "/srv/procslice/old",
        # its data directories: state: absent with purge: true
        "/var/lib/procslice/old",
        "/var/log/procslice/old",
    ],
)
def test_absent_service_files_are_gone(host, path):
    assert not host.file(path).exists


def test_absent_service_user_and_group_are_gone(host):
    assert not host.user("procslice-old").exists
    assert not host.group("procslice-old").exists


# --------------------------------------------------------------------------- the host runtime


def test_the_host_runtime_is_one_virtualenv_that_procslice_status_runs_from(host):
    runtime = "/usr/local/lib/procslice/runtime"
    builds = sorted(host.file(runtime).listdir())
    (current_build,) = [name for name in builds if re.fullmatch(r"[0-9a-f]{12}", name)]
    assert builds == sorted(["current", current_build, f"{current_build}.tar"])
    assert host.file(f"{runtime}/current").linked_to == f"{runtime}/{current_build}"
    assert host.file(f"{runtime}/{current_build}/.complete").exists
    python = f"{runtime}/current/venv/bin/python"
    assert host.run(f"{python} -c 'import prometheus_client, procslice.status'").rc == 0
    # (this role alone starts no unit: the model roles do; the fleet scenario reads
    # every model's figures)
    report = json.loads(host.check_output("/usr/local/bin/procslice status --json --interval 0"))
    assert (report["schema"], report["services"]) == (1, [])


def test_the_exporter_serves_the_hosts_services_from_the_runtime(host):
    unit = "prometheus-procslice-exporter.service"
    assert host.service(unit).is_running, host.check_output(f"journalctl -u {unit} --no-pager")
    main_pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
    assert (
        "runtime/current/venv/bin/python" in host.file(f"/proc/{main_pid}/cmdline").content_string
    )
    text = host.check_output("curl -fsS --max-time 10 http://127.0.0.1:9100/metrics")
    # every family declared, written by prometheus_client
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["procslice_unit_up"] == "gauge"
    assert families["procslice_unit_restarts"] == "counter"
    assert len([name for name in families if name.startswith("procslice_unit_")]) == 16
