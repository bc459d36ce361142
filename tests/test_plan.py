"""The plan phase: procslice_plan predicts what procslice-activate will do.

The module's fingerprint is checked against procslice-activate's own shell function
run on the same files, and its decisions against real files in a temporary tree
(the unit's state is given: systemd is the fleet scenario's part)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ACTIVATE = REPO / "roles/procslice_service/files/procslice-activate"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


plan = _load(REPO / "plugins/modules/procslice_plan.py", "procslice_plan_module")
files_module = _load(REPO / "plugins/modules/procslice_files.py", "procslice_files_module")
filters = _load(REPO / "plugins/filter/procslice_plan.py", "procslice_plan_filters")


def sh_fingerprint(*paths: str) -> str:
    """procslice-activate's fingerprint(), cut from the script and run by sh."""
    text = ACTIVATE.read_text()
    match = re.search(r"^fingerprint\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert match, "fingerprint() not found in procslice-activate"
    out = subprocess.run(
        ["sh", "-c", match.group(0) + 'fingerprint "$@"', "sh", *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Any]:
    """A service as the apply leaves it: files, a built release, the current link."""
    etc = tmp_path / "etc"
    etc.mkdir()
    unit = etc / "demo.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    config = etc / "gunicorn.conf.py"
    config.write_text("workers = 3\n")
    limits = etc / "50-limits.conf"
    limits.write_text("[Service]\nMemoryMax=64M\n")
    releases = tmp_path / "srv/demo/releases"
    (releases / "20260101T000000Z-abc123").mkdir(parents=True)
    (releases / "20260101T000000Z-abc123/.complete").touch()
    link = tmp_path / "srv/demo/current"
    link.symlink_to("releases/20260101T000000Z-abc123")
    state = tmp_path / "applied"
    state.mkdir()
    spec = {
        "name": "demo",
        "unit": "procslice-demo",
        "state": "present",
        "user": "root",
        "files": {
            str(unit): sha(unit.read_text()),
            str(config): sha(config.read_text()),
            str(limits): sha(limits.read_text()),
        },
        "restart_on": [str(unit)],
        "reload_on": [str(link), str(config)],
        "limits_on": [str(limits)],
        "link": str(link),
        "release": "abc123",
        "releases": str(releases),
    }
    # What procslice-activate recorded after its last run, computed by its own code.
    (state / "procslice-demo").write_text(
        "\n".join(
            [
                sh_fingerprint(str(unit)),
                sh_fingerprint(str(link), str(config)),
                sh_fingerprint(str(limits)),
                "20260101T000000Z-abc123",
            ]
        )
        + "\n"
    )
    return {
        "spec": spec,
        "state": str(state),
        "unit": unit,
        "config": config,
        "limits": limits,
        "link": link,
    }


def decide(tree: dict[str, Any], active: bool = True, **changes: Any) -> dict[str, Any]:
    spec = {**tree["spec"], **changes}
    return plan.plan_service(spec, tree["state"], active)


def test_fingerprint_matches_procslice_activate(tree: dict[str, Any], tmp_path: Path) -> None:
    paths = [str(tree["unit"]), str(tree["link"]), str(tmp_path / "missing"), str(tree["limits"])]
    assert plan.fingerprint(paths, {}, None, None) == sh_fingerprint(*paths)
    assert plan.fingerprint([], {}, None, None) == sh_fingerprint()


def test_fingerprint_of_the_files_to_write_matches_after_writing(tree: dict[str, Any]) -> None:
    desired = "[Service]\nExecStart=/bin/false\n"
    predicted = plan.fingerprint([str(tree["unit"])], {str(tree["unit"]): sha(desired)}, None, None)
    tree["unit"].write_text(desired)
    assert predicted == sh_fingerprint(str(tree["unit"]))


def test_nothing_when_the_host_runs_what_the_data_says(tree: dict[str, Any]) -> None:
    assert decide(tree) == {
        "action": "nothing",
        "activate": None,
        "at_least": None,
        "release": False,
        "reasons": [],
        "model": None,
        "health_default": None,
        "user_missing": False,
    }


def test_a_changed_limits_file_is_applied_live(tree: dict[str, Any]) -> None:
    files = {**tree["spec"]["files"], str(tree["limits"]): sha("[Service]\nMemoryMax=32M\n")}
    result = decide(tree, files=files)
    assert (result["action"], result["activate"]) == ("limits", "limits")
    assert str(tree["limits"]) in result["reasons"][0]


def test_a_changed_model_config_reloads(tree: dict[str, Any]) -> None:
    files = {**tree["spec"]["files"], str(tree["config"]): sha("workers = 4\n")}
    assert decide(tree, files=files)["activate"] == "reloaded"


def test_a_changed_unit_restarts_even_with_a_reload_change(tree: dict[str, Any]) -> None:
    files = {
        **tree["spec"]["files"],
        str(tree["config"]): sha("workers = 4\n"),
        str(tree["unit"]): sha("[Service]\nExecStart=/bin/false\n"),
    }
    assert decide(tree, files=files)["action"] == "restart"


def test_a_stopped_unit_starts(tree: dict[str, Any]) -> None:
    assert decide(tree, active=False)["action"] == "start"


def test_a_new_release_is_installed_then_reloaded(tree: dict[str, Any]) -> None:
    result = decide(tree, release="def456")
    assert (result["action"], result["activate"], result["release"]) == (
        "install",
        "reloaded",
        True,
    )


LOCK = """\
# procslice: resolved from requirements.txt sha256:00
anyio==4.6.0 \\
    --hash=sha256:{0}
    # via httpx
httpx==0.27.0 \\
    --hash=sha256:{0}
sniffio==1.3.1 ; python_version >= "3.8" \\
    --hash=sha256:{0}
""".format("0" * 64)


def test_a_new_release_names_the_packages_its_lock_changes(tree: dict[str, Any]) -> None:
    Path(tree["link"], "procslice.lock").write_text(LOCK)
    new = {"anyio": "4.6.0", "httpx": "0.28.1", "h11": "0.16.0"}
    result = decide(tree, release="def456", lock=new)
    assert result["action"] == "install"
    assert result["reasons"][:2] == [
        "release def456 to build",
        "lock: httpx 0.27.0 -> 0.28.1, +h11 0.16.0, -sniffio",
    ]


def test_a_new_release_with_the_same_lock_names_no_packages(tree: dict[str, Any]) -> None:
    Path(tree["link"], "procslice.lock").write_text(LOCK)
    same = {"anyio": "4.6.0", "httpx": "0.27.0", "sniffio": "1.3.1"}
    reasons = decide(tree, release="def456", lock=same)["reasons"]
    assert reasons[0] == "release def456 to build"
    assert not [reason for reason in reasons if reason.startswith("lock:")], reasons


def test_a_current_release_without_a_lock_names_no_packages(tree: dict[str, Any]) -> None:
    reasons = decide(tree, release="def456", lock={"httpx": "0.28.1"})["reasons"]
    assert reasons[0] == "release def456 to build"
    assert not [reason for reason in reasons if reason.startswith("lock:")], reasons


def test_a_half_built_release_is_installed_again(tree: dict[str, Any]) -> None:
    (Path(tree["spec"]["releases"]) / "20260101T000000Z-abc123/.complete").unlink()
    assert decide(tree)["action"] == "install"


def test_a_release_switched_back_by_hand_reloads(tree: dict[str, Any]) -> None:
    other = Path(tree["spec"]["releases"]) / "20250101T000000Z-old999"
    other.mkdir()
    (other / ".complete").touch()
    tree["link"].unlink()
    tree["link"].symlink_to("releases/20250101T000000Z-old999")
    result = decide(tree)
    assert (result["activate"], result["release"]) == ("reloaded", True)


def test_an_unfinished_run_is_finished(tree: dict[str, Any]) -> None:
    """Files written but activate never ran: the applied state is older."""
    Path(tree["state"], "procslice-demo").write_text("old\nold\nold\n\n")
    assert decide(tree)["action"] == "restart"


def test_a_hand_edited_drop_in_is_drift_and_restarts(tree: dict[str, Any]) -> None:
    tree["unit"].write_text("[Service]\nExecStart=/bin/sh -c 'edited by hand'\n")
    result = decide(tree)
    assert (result["action"], result["at_least"]) == ("restart", "restart")
    assert any("drift" in reason and str(tree["unit"]) in reason for reason in result["reasons"])


def test_a_hand_edited_limits_file_is_drift_applied_live(tree: dict[str, Any]) -> None:
    tree["limits"].write_text("[Service]\nMemoryMax=1G\n")
    result = decide(tree)
    assert (result["action"], result["at_least"]) == ("limits", "limits")


def test_an_absent_service_is_removed_while_its_files_are_there(tree: dict[str, Any]) -> None:
    spec = {
        "name": "demo",
        "unit": "procslice-demo",
        "state": "absent",
        "remove_paths": [str(tree["unit"])],
    }
    assert plan.plan_service(spec, tree["state"], False)["action"] == "remove"
    tree["unit"].unlink()
    assert plan.plan_service(spec, tree["state"], False)["action"] == "nothing"


def test_slices_and_host_tools(tmp_path: Path) -> None:
    slice_file = tmp_path / "procslice-web.slice"
    slice_file.write_text("[Slice]\nCPUQuota=100%\n")
    same = {
        "unit": "procslice-web.slice",
        "path": str(slice_file),
        "sha256": sha(slice_file.read_text()),
    }
    assert plan.plan_slice(same)["action"] == "nothing"
    assert plan.plan_slice({**same, "sha256": sha("[Slice]\nCPUQuota=50%\n")})["action"] == "limits"
    marker = tmp_path / "base"
    assert plan.plan_base({"marker": str(marker), "fingerprint": "f1"})["action"] == "install"
    marker.write_text("f1\n")
    assert plan.plan_base({"marker": str(marker), "fingerprint": "f1"})["action"] == "nothing"
    assert plan.plan_base({"marker": str(marker), "fingerprint": "f2"})["action"] == "install"


def test_the_files_module_writes_only_what_differs(tmp_path: Path) -> None:
    target = tmp_path / "d/unit.service"
    spec = {"path": str(target), "content": "a\n", "owner": "root", "group": "root", "mode": "0640"}
    assert files_module.ensure_file(spec, check=True) == (True, "")
    assert not target.exists(), "check mode wrote a file"
    assert files_module.ensure_file(spec, check=False)[0]
    assert target.read_text() == "a\n" and oct(target.stat().st_mode & 0o777) == "0o640"
    assert files_module.ensure_file(spec, check=False) == (False, None)
    assert files_module.ensure_file({**spec, "content": "b\n"}, check=False) == (True, "a\n")
    assert target.read_text() == "b\n"


def test_activate_arguments_follow_the_classes() -> None:
    services = [
        {
            "name": "api",
            "unit": "procslice-api",
            "user": "procslice-api",
            "listen": ["0.0.0.0:1"],
            "health": {"url": "http://127.0.0.1:1/healthz", "timeout": 9},
        }
    ]
    templates = [
        {"src": "u.j2", "dest": "/etc/systemd/system/@UNIT@.service", "class": "restart"},
        {
            "src": "s.j2",
            "dest": "/etc/systemd/system/@UNIT@.socket",
            "class": "restart",
            "only_if": "listen",
        },
        {"dest": "/etc/procslice/@NAME@/env", "class": "restart"},
        {"src": "c.j2", "dest": "/etc/procslice/@NAME@/c", "class": "reload", "group": "@USER@"},
        {"src": "l.j2", "dest": "/l/@UNIT@", "class": "limits", "only_if": "!listen"},
    ]
    sources = filters.procslice_unit_sources(services, templates)
    assert [s["path"] for s in sources] == [
        "/etc/systemd/system/procslice-api.service",
        "/etc/systemd/system/procslice-api.socket",
        "/etc/procslice/api/env",
        "/etc/procslice/api/c",
    ]
    assert sources[3]["group"] == "procslice-api"
    rendered = [{**s, "content": None if s["src"] is None else "x"} for s in sources]
    spec = filters.procslice_unit_specs(services, rendered, "/srv", {"api": {"hash": "h1"}})[0]
    assert filters.procslice_activate_argv(spec) == [
        "/usr/local/lib/procslice/activate", "procslice-api",
        "--restart-on", "/etc/systemd/system/procslice-api.service",
        "/etc/systemd/system/procslice-api.socket", "/etc/procslice/api/env",
        "--reload-on", "/srv/api/current", "/etc/procslice/api/c",
        "--limits-on",
        "--health-url", "http://127.0.0.1:1/healthz", "--health-timeout", "9",
        "--link", "/srv/api/current",
    ]  # fmt: skip
    # procslice-activate --each's input: the arguments and the plan's at_least.
    plan = {"services": {"api": {"at_least": "restart"}}}
    assert filters.procslice_activate_jobs([spec], plan) == [
        {"name": "api", "argv": filters.procslice_activate_argv(spec), "at_least": "restart"}
    ]
    assert filters.procslice_activate_jobs([spec], None)[0]["at_least"] == ""
    assert "/etc/procslice/api/env" not in spec["files"]
    merged = filters.procslice_plan_merge(
        [spec], [{"path": "/etc/procslice/api/env", "content": "E=1\n"}]
    )[0]
    assert merged["files"]["/etc/procslice/api/env"] == sha("E=1\n")


def test_a_host_left_drained_by_a_failed_run_is_planned_back(tmp_path: Path) -> None:
    marker = tmp_path / "drained"
    params = {"services": [], "slices": [], "base": {}, "state_dir": str(tmp_path)}
    quiet = plan.make_plan({**params, "drained_marker": str(marker)})
    assert (quiet["actions"], quiet["drained"]) == (0, False)
    marker.write_text("drained by a deploy run\n")
    left = plan.make_plan({**params, "drained_marker": str(marker)})
    assert (left["actions"], left["drained"]) == (1, True)
    table = filters.procslice_plan_table(["h1"], {"h1": {"procslice_plan_host": left}})
    assert table[1].split()[:4] == ["h1", "front", "rotation", "ready"]


def test_the_default_health_url_is_named_until_its_gate_has_passed_once(
    tree: dict[str, Any],
) -> None:
    default = {"health_url": "http://127.0.0.1:8000/healthz", "health_default": True}
    # procslice-activate recorded a healthy release (the state's 4th line): no note.
    assert decide(tree, **default)["health_default"] is None
    state = Path(tree["state"], "procslice-demo")
    lines = state.read_text().split("\n")
    state.write_text("\n".join(lines[:3]) + "\n\n")
    never = decide(tree, **default)
    assert never["health_default"] == "/healthz"
    # A health URL the data set is the user's choice: no note.
    assert decide(tree, health_url=default["health_url"])["health_default"] is None
    table = filters.procslice_plan_table(
        ["h1"],
        {"h1": {"procslice_plan_host": {"actions": 0, "services": {"demo": never}}}},
    )
    assert table[-1].startswith(
        "note: h1 demo: its health gate is the default /healthz, which it has never passed"
    ), table


# ---- procslice-activate's health gate says why it failed ------------------------------


def gate_script() -> str:
    text = ACTIVATE.read_text()
    match = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.S)
    assert match, "the health gate's Python was not found in procslice-activate"
    return match.group(1)


def test_a_failed_gate_prints_the_last_status_and_the_start_of_the_body() -> None:
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = b"settings error: DATABASE_URL is not set\n  (see settings.py)"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        gate = subprocess.run(
            [sys.executable, "-c", gate_script(), url, "2", "procslice-none.service", ""],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.shutdown()
    assert gate.returncode == 1, gate.stderr
    assert "did not answer 200 within 2s" in gate.stderr
    assert (
        "last: HTTP 500: settings error: DATABASE_URL is not set (see settings.py)" in gate.stderr
    )


def test_a_failed_gate_names_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it
    gate = subprocess.run(
        [sys.executable, "-c", gate_script(), f"http://127.0.0.1:{port}/", "2", "x.service", ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gate.returncode == 1
    assert "last: URLError" in gate.stderr and "Connection refused" in gate.stderr, gate.stderr


def test_an_absent_service_keeps_its_data_unless_purged() -> None:
    gone = {"name": "api", "unit": "procslice-api", "model": "gunicorn"}
    kept = filters.procslice_plan_absent([gone], "/srv/procslice", "/etc/procslice")[0]
    assert not any(path.startswith(("/var/lib", "/var/log")) for path in kept["remove_paths"])
    purged = filters.procslice_plan_absent(
        [{**gone, "purge": True}], "/srv/procslice", "/etc/procslice"
    )[0]
    assert {
        "/var/lib/procslice/api",
        "/var/cache/procslice/api",
        "/var/log/procslice/api",
    } <= set(purged["remove_paths"])


def test_a_failed_gate_shows_the_apps_exception_before_the_servers_last_lines(
    tmp_path: Path,
) -> None:
    """gunicorn's own HaltServer traceback fills the last 30 lines of the journal: the
    app's exception, logged before, is shown first (what the fleet test found)."""
    app = [
        "2026-12-04T02:12:05+0000 h1 python[7]: Traceback (most recent call last):",
        '2026-12-04T02:12:05+0000 h1 python[7]:   File "app.py", line 9, in <module>',
        "2026-12-04T02:12:05+0000 h1 python[7]: RuntimeError: broken from the start",
        "2026-12-04T02:12:05+0000 h1 python[8]: RuntimeError: broken from the start",
        "2026-12-04T02:12:05+0000 h1 python[7]: [INFO] Worker exiting (pid: 7)",
    ]
    server = [
        f'2026-12-04T02:12:06+0000 h1 python[6]:   File "arbiter.py", line {n}, in run'
        for n in range(34)
    ] + ["2026-12-04T02:12:06+0000 h1 python[6]: gunicorn.errors.HaltServer: <HaltServer 3>"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    journal_text = "\n".join(app + server) + "\n"
    (tmp_path / "journal.txt").write_text(journal_text)
    fake = bin_dir / "journalctl"
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'journal.txt'}\n")
    fake.chmod(0o755)
    text = ACTIVATE.read_text()
    match = re.search(r"^journal\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert match, "journal() not found in procslice-activate"
    out = subprocess.run(
        ["sh", "-c", "set -eu; unit=procslice-api\n" + match.group(0) + "journal"],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        check=True,
    ).stderr.splitlines()
    assert out[0] == "procslice-activate: the exceptions procslice-api.service logged before:"
    assert out[1].endswith("python[7]: RuntimeError: broken from the start")
    assert out[2] == "procslice-activate: the last 30 journal lines of procslice-api.service:"
    assert len(out) == 3 + 30, out
    assert "HaltServer" in out[-1]


def test_the_default_health_note_names_the_path_of_a_unix_socket_url(
    tree: dict[str, Any],
) -> None:
    state = Path(tree["state"], "procslice-demo")
    lines = state.read_text().split("\n")
    state.write_text("\n".join(lines[:3]) + "\n\n")  # no healthy release recorded yet
    url = "http+unix://%2Frun%2Fprocslice%2Fdemo%2Fhttp.sock/healthz"
    assert decide(tree, health_url=url, health_default=True)["health_default"] == "/healthz"


def test_plan_groups_put_each_host_with_something_to_do_in_the_play_that_applies_it() -> None:
    nothing = {"actions": 0, "services": {}, "slices": {}, "base": {"action": "nothing"}}
    limits = {
        "actions": 1,
        "services": {"api": {"action": "nothing"}},
        "slices": {"web": {"action": "limits"}},
        "base": {"action": "nothing"},
        "disrupts": False,
    }
    restart = {
        "actions": 1,
        "services": {"api": {"action": "restart"}},
        "slices": {"web": {"action": "nothing"}},
        "base": {"action": "nothing"},
        "disrupts": True,
    }
    hostvars = {
        "a": {"procslice_plan_host": nothing},
        "b": {"procslice_plan_host": limits},
        "c": {"procslice_plan_host": restart},
        "d": {},  # no plan (its plan failed): not applied
    }
    assert filters.procslice_plan_live_limits(limits) and not filters.procslice_plan_live_limits(
        restart
    )
    assert filters.procslice_plan_groups(["a", "b", "c", "d"], hostvars) == [
        {"name": "b", "group": "procslice_limits_apply"},
        {"name": "c", "group": "procslice_apply"},
    ]
    # inventory order is kept: the first host with something to do is the canary
    assert [entry["name"] for entry in filters.procslice_plan_groups(["c", "b"], hostvars)] == [
        "c",
        "b",
    ]


def test_activate_each_runs_the_services_side_by_side_and_reports_each(tmp_path: Path) -> None:
    """procslice-activate --each: every job runs with its own PROCSLICE_AT_LEAST, the
    jobs overlap in time (each waits for its own gate only), the results come back in
    the input's order with each one's exit code and output, and a bad count is refused."""
    marks = tmp_path / "marks"
    marks.mkdir()
    job = (
        f"cd {marks}; touch $1.started; i=0; until [ -e a.started ] && [ -e b.started ]; do "
        "i=$((i+1)); [ $i -lt 100 ] || { echo alone >&2; exit 9; }; sleep 0.05; done; "
        'echo "$PROCSLICE_AT_LEAST"; [ "$1" = a ] || { echo "$1 failed its gate" >&2; exit 3; }'
    )
    jobs = [
        {"name": name, "argv": ["sh", "-c", job, "job", name], "at_least": at_least}
        for name, at_least in (("a", "reload"), ("b", ""))
    ]
    run = subprocess.run(
        ["sh", str(ACTIVATE), "--each", "2"], input=json.dumps(jobs),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(run.stdout) == [
        {"name": "a", "rc": 0, "stdout": "reload", "stderr": ""},
        {"name": "b", "rc": 3, "stdout": "", "stderr": "b failed its gate"},
    ]
    # --each 1: one after the other, so a waits for b in vain
    for mark in marks.iterdir():
        mark.unlink()
    one = subprocess.run(
        ["sh", str(ACTIVATE), "--each", "1"], input=json.dumps(jobs),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    first = json.loads(one.stdout)[0]
    assert (first["name"], first["rc"], first["stderr"]) == ("a", 9, "alone")
    refused = subprocess.run(
        ["sh", str(ACTIVATE), "--each", "0"], input="[]", capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--each wants a number" in refused.stderr
