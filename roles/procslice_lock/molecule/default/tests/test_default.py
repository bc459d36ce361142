"""procslice_lock on a real systemd host: the lock a run holds, and the audit records."""

from __future__ import annotations

import json

LOCK = "/usr/local/lib/procslice/lock"


def holder(run: str) -> str:
    return json.dumps({"run": run, "actor": "ann@ctl", "what": "deploy"})


def test_tools_are_installed_root_owned(host):
    for name in ("lock", "audit"):
        tool = host.file(f"/usr/local/lib/procslice/{name}")
        assert tool.user == "root" and tool.mode == 0o755


def test_the_converge_run_held_the_lock_and_released_it(host):
    held = json.loads(host.file("/root/holder.json").content_string)
    assert held["actor"] == "molecule@controller"
    assert held["what"] == "deploy"
    assert held["run"].count(":") == 2 and held["since"].endswith("Z")
    assert not host.file("/run/procslice/deploy.lock").exists
    records = [
        json.loads(line)
        for line in host.file("/var/log/procslice/audit.log").content_string.splitlines()
    ]
    released = [r for r in records if r["event"] == "lock" and r["result"] == "released"]
    assert released and released[-1]["run"] == held["run"] and released[-1]["what"] == "deploy"


def test_audit_record_names_the_lock_holder_in_file_and_journal(host):
    held = json.loads(host.file("/root/holder.json").content_string)
    log = host.file("/var/log/procslice/audit.log")
    assert log.mode == 0o640
    records = [json.loads(line) for line in log.content_string.splitlines()]
    deploy = [r for r in records if r["event"] == "deploy"][-1]
    assert (deploy["actor"], deploy["run"], deploy["unit"]) == (
        held["actor"],
        held["run"],
        "procslice-test",
    )
    fields = host.check_output(
        "journalctl -t procslice-audit -o verbose --no-pager PROCSLICE_UNIT=procslice-test"
    )
    assert "PROCSLICE_ACTOR=molecule@controller" in fields
    assert "PROCSLICE_RELEASE=releases/r1" in fields


def test_a_second_run_is_refused_naming_the_first(host):
    assert host.run(f"{LOCK} acquire --holder '{holder('one')}'").rc == 0
    second = host.run(f"{LOCK} acquire --holder '{holder('two')}'")
    assert second.rc == 75
    assert json.loads(second.stdout)["run"] == "one"
    assert host.run(f"{LOCK} release --run two").stdout.strip() == "not held"
    assert host.run(f"{LOCK} release --run one").stdout.strip() == "released"


def test_a_taken_over_lock_is_audited(host):
    host.run(f"{LOCK} acquire --holder '{holder('dead')}'")
    assert host.run(f"{LOCK} acquire --holder '{holder('new')}' --steal dead").rc == 0
    lines = host.file("/var/log/procslice/audit.log").content_string.splitlines()
    last = json.loads(lines[-1])
    assert last["event"] == "lock" and last["result"] == "taken-over"
    assert json.loads(last["previous"])["run"] == "dead"
    host.run(f"{LOCK} release --run new")
