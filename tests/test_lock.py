"""The per-host deploy lock and the audit log: the host tools with real processes, and
the controller's stale-lock rule."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[1] / "roles" / "procslice_lock" / "files"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "filter"))
from procslice_lock import _start_ticks, procslice_lock_holder, procslice_lock_stale  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    audit = tmp_path / "audit"
    # The audit tool with its log under tmp_path and no journal: logger is its fallback.
    audit.write_text(
        f'#!/bin/sh\nexec {sys.executable} {FILES / "procslice-audit"} "$@"\n', encoding="utf-8"
    )
    audit.chmod(0o755)
    values = {
        "PROCSLICE_RUN_DIR": str(tmp_path / "run"),
        "PROCSLICE_AUDIT": str(audit),
        "PROCSLICE_LOG_DIR": str(tmp_path / "log"),
        "PROCSLICE_JOURNAL": str(tmp_path / "no-journal"),
    }
    return dict(os.environ, **values)


def lock(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FILES / "procslice-lock"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def holder(run: str, **extra: object) -> str:
    return json.dumps(dict({"run": run, "actor": "ann@ctl", "what": "deploy"}, **extra))


def audit_records(env) -> list[dict]:
    log = Path(env["PROCSLICE_LOG_DIR"]) / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_second_run_is_refused_with_the_holder_named(env):
    assert lock(env, "acquire", "--holder", holder("a")).stdout.strip() == "acquired"
    second = lock(env, "acquire", "--holder", holder("b", actor="bob@ctl2"))
    assert second.returncode == 75
    assert json.loads(second.stdout)["run"] == "a"
    assert json.loads(second.stdout)["actor"] == "ann@ctl"


def test_the_same_run_acquires_again(env):
    assert lock(env, "acquire", "--holder", holder("a")).returncode == 0
    assert lock(env, "acquire", "--holder", holder("a")).returncode == 0


def test_a_waiting_run_gets_the_lock_once_released(env):
    lock(env, "acquire", "--holder", holder("a"))
    waiter = subprocess.Popen(
        [
            sys.executable,
            str(FILES / "procslice-lock"),
            "acquire",
            "--holder",
            holder("b"),
            "--wait",
            "20",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert waiter.poll() is None
    assert lock(env, "release", "--run", "a").stdout.strip() == "released"
    out, _ = waiter.communicate(timeout=10)
    assert waiter.returncode == 0 and out.strip() == "acquired"


def test_wait_ends_with_the_holder_when_it_keeps_the_lock(env):
    lock(env, "acquire", "--holder", holder("a"))
    started = time.monotonic()
    second = lock(env, "acquire", "--holder", holder("b"), "--wait", "2")
    assert second.returncode == 75
    assert 1.5 < time.monotonic() - started < 10


def test_release_by_another_run_leaves_the_lock(env):
    lock(env, "acquire", "--holder", holder("a"))
    assert lock(env, "release", "--run", "b").stdout.strip() == "not held"
    assert json.loads(lock(env, "show").stdout)["run"] == "a"


def test_steal_replaces_only_the_named_run_and_is_audited(env):
    lock(env, "acquire", "--holder", holder("a"))
    assert lock(env, "acquire", "--holder", holder("b"), "--steal", "zzz").returncode == 75
    assert lock(env, "acquire", "--holder", holder("b"), "--steal", "a").returncode == 0
    assert json.loads(lock(env, "show").stdout)["run"] == "b"
    (record,) = audit_records(env)
    assert record["event"] == "lock" and record["result"] == "taken-over"
    assert json.loads(record["previous"])["run"] == "a"
    assert record["run"] == "b" and record["actor"] == "ann@ctl"


def test_audit_takes_actor_and_run_from_the_lock(env):
    lock(env, "acquire", "--holder", holder("r1", actor="carol@ctl"))
    tool = Path(env["PROCSLICE_AUDIT"])
    subprocess.run(
        [str(tool), "deploy", "unit=procslice-x", "release=R", "result=ok"], env=env, check=True
    )
    lock(env, "release", "--run", "r1")
    subprocess.run([str(tool), "limits", "changed=procslice-web.slice"], env=env, check=True)
    first, released, second = audit_records(env)
    assert (released["event"], released["result"], released["run"], released["what"]) == (
        "lock",
        "released",
        "r1",
        "deploy",
    )
    assert (first["event"], first["actor"], first["run"], first["unit"], first["release"]) == (
        "deploy",
        "carol@ctl",
        "r1",
        "procslice-x",
        "R",
    )
    assert second["event"] == "limits" and second["actor"].endswith("(by hand)")
    log = Path(env["PROCSLICE_LOG_DIR"]) / "audit.log"
    assert oct(log.stat().st_mode & 0o777) == "0o640"


def test_holder_names_this_ansible_run():
    me = procslice_lock_holder("deploy", "")
    assert me["pid"] == os.getppid()
    assert me["run"] == f"{socket.gethostname()}:{os.getppid()}:{_start_ticks(os.getppid())}"
    assert me["actor"].endswith("@" + socket.gethostname())
    assert procslice_lock_holder("limits", "dan")["actor"] == "dan"


def test_a_run_of_this_controller_is_stale_once_its_process_is_gone():
    child = subprocess.Popen(["sleep", "30"])
    run = f"{socket.gethostname()}:{child.pid}:{_start_ticks(child.pid)}"
    live = {"run": run, "controller": socket.gethostname()}
    assert not procslice_lock_stale(live, 3600)
    child.kill()
    child.wait()
    assert procslice_lock_stale(live, 3600)
    # A PID reused by another process: another start time, so the run is over.
    reused = {"run": f"{socket.gethostname()}:{os.getpid()}:1", "controller": socket.gethostname()}
    assert procslice_lock_stale(reused, 3600)


def test_a_run_of_another_controller_is_stale_only_after_stale_after():
    fresh = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    other = {"run": "elsewhere:1:1", "controller": "elsewhere"}
    assert not procslice_lock_stale(dict(other, since=fresh), 3600)
    assert procslice_lock_stale(dict(other, since=old), 3600)
    assert not procslice_lock_stale(dict(other, since="unknown"), 3600)
