"""The fleet scenario: deploy.yml on 3 hosts over SSH, checked from the controller."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
# The hosts fleet.yml wrote, plus the scenario's data (group_vars, host_vars).
INVENTORY = Path("/var/tmp/procslice-mfleet/hosts.yml")
SCENARIO_VARS = REPO / "molecule" / "fleet" / "inventory"
HOSTS = {"procslice-mfleet1": 19100, "procslice-mfleet2": 19200, "procslice-mfleet3": 19300}
# The scenario's services: model, and the offset of the published port from a host's base.
MODELS = {
    "hello-wsgi": "gunicorn",
    "hello-asgi": "gunicorn",
    "hello-aio": "aio",
    "hello-swoole": "swoole",
    "hello-podman": "podman",
}
PORTS = {"hello-wsgi": 0, "hello-asgi": 1, "hello-aio": 2, "hello-swoole": 3, "hello-podman": 4}
# The services built from a package (examples/hello_wsgi, hello_asgi): a code change is
# theirs. The podman service runs the demo image, which has no package.
PACKAGED = [name for name, model in MODELS.items() if model != "podman"]


def version_of(name: str, env: str = "1", package: str = "1.0.0") -> str:
    """What the service answers at /version with VERSION=env: "<env> <package version>",
    or the demo image's "<env> demo" for the podman service."""
    return f"{env} demo" if MODELS[name] == "podman" else f"{env} {package}"


testinfra_hosts = [f"ansible://{name}" for name in HOSTS]


def playbook(*args: str, data: Path = SCENARIO_VARS) -> subprocess.CompletedProcess[str]:
    """ansible-playbook on the scenario's fleet; data: the inventory folder of its vars."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_FORCE_COLOR", None)  # molecule sets it for its own runs
    return subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(INVENTORY), "-i", str(data)),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def playbook_in_background(*args: str, **popen: object) -> subprocess.Popen[str]:
    """ansible-playbook like playbook(), started and left running; output on a pipe."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    options: dict[str, object] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    options.update(popen)
    return subprocess.Popen(  # type: ignore[call-overload]
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(INVENTORY), "-i", str(SCENARIO_VARS)),
            *args,
        ],
        cwd=REPO,
        env=env,
        text=True,
        **options,
    )


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP rows by host; a run without one fails the test (never passes vacuously)."""
    rows = {}
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)
    for host, fields in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.M):
        rows[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    assert rows, f"no PLAY RECAP in the output:\n{output[-3000:]}"
    return rows


def said(output: str, text: str) -> bool:
    """Whether the run's output says text, however the YAML callback folded its lines
    (a long message is wrapped and its quotes doubled)."""
    flat = " ".join(output.replace("''", "'").split())
    return " ".join(text.split()) in flat


def http(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode().strip()


def test_every_service_answers_over_the_published_ports(host):
    name = host.backend.get_hostname()
    base = HOSTS[name]
    assert http(base, "/healthz") == "ok"
    assert http(base, "/").startswith("hello from hello-wsgi")
    assert http(base + 1, "/whoami").startswith("hello from hello-asgi")
    assert http(base + 2, "/whoami").startswith("hello from hello-aio")
    assert http(base + 3, "/whoami").startswith("hello from hello-swoole")
    # the demo image in its container, with the environment of its data
    assert http(base + 4, "/").startswith("procslice demo 1 ")
    assert http(base + 4, "/version") == "1 demo"


def test_workers_match_the_budget(host):
    # web: CPUQuota=100% -> 1 CPU -> 3 sync workers (the host formula on 2 CPUs: 5).
    main = host.check_output("systemctl show -P MainPID procslice-hello-wsgi.service")
    assert len(host.check_output(f"pgrep -P {main}").split()) == 3


def test_services_run_in_their_slice_with_limits(host):
    props = host.check_output(
        "systemctl show -p Slice -p MemoryMax -p TasksMax procslice-hello-wsgi.service"
    )
    assert "Slice=procslice-web.slice" in props
    assert f"MemoryMax={384 * 2**20}" in props
    assert "TasksMax=64" in props
    cg = host.check_output("systemctl show -P ControlGroup procslice-web.slice")
    limit = host.file(f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes").content_string
    assert int(limit) == 768 * 2**20


def test_deployed_as_the_deploy_user_over_ssh(host):
    assert host.user().name == "deploy"
    # sshd sets SSH_CONNECTION (client, client port, server, port 22): the command came
    # over SSH like on a server, not through podman exec
    fields = host.check_output("echo $SSH_CONNECTION").split()
    assert len(fields) == 4 and fields[3] == "22", fields
    assert host.check_output("sudo -n true; echo $?") == "0"


@pytest.fixture(scope="module")
def check_run() -> subprocess.CompletedProcess[str]:
    return playbook("deploy.yml", "--check", "--diff")


def test_check_diff_on_a_deployed_fleet_reports_nothing_to_change(check_run):
    assert check_run.returncode == 0, check_run.stdout[-3000:] + check_run.stderr[-2000:]
    rows = recap(check_run.stdout)
    # The fleet's hosts and the front host (haproxy): none would change.
    assert set(rows) == set(HOSTS) | {"procslice-mfleet0"}
    assert rows, check_run.stdout[-3000:]
    for host, row in rows.items():
        assert row["changed"] == 0, f"{host}: {row}\n{check_run.stdout[-4000:]}"
        assert row["failed"] == 0
    assert f"0 host(s) to change, {len(HOSTS)} with nothing to do" in check_run.stdout


# ---- plan, then apply ------------------------------------------------------------------


def on_host(host: str, command: str) -> str:
    return subprocess.run(
        ["podman", "exec", host, "sh", "-c", command], capture_output=True, text=True, check=True
    ).stdout


FRONT_HOST = "procslice-mfleet0"


def front_servers() -> dict[tuple[str, str], str]:
    """(backend, server) -> status, as haproxy-ctl show prints it on the front host."""
    lines = on_host(FRONT_HOST, "/usr/local/lib/procslice/haproxy-ctl show").splitlines()[1:]
    return {(line.split()[0], line.split()[1]): line.split()[2] for line in lines}


def audit_lines(host: str) -> list[dict]:
    text = on_host(host, "cat /var/log/procslice/audit.log 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def planned(tmp_path: Path, *args: str, data: Path = SCENARIO_VARS):
    """deploy.yml with the plan written as JSON: the run and the plan."""
    plan_file = tmp_path / f"plan-{time.monotonic_ns()}.json"
    run = playbook("deploy.yml", "-e", f"procslice_plan_json={plan_file}", *args, data=data)
    assert plan_file.is_file(), (run.stdout + run.stderr)[-4000:]
    return run, json.loads(plan_file.read_text())


def test_a_noop_deploy_asks_each_host_once_and_touches_none(tmp_path):
    before = {host: len(audit_lines(host)) for host in HOSTS}
    started = time.monotonic()
    run, plan = planned(tmp_path)
    took = time.monotonic() - started
    out = run.stdout
    assert run.returncode == 0, (out + run.stderr)[-4000:]
    print(f"no-op deploy of {len(HOSTS)} hosts and the front: {took:.1f}s")
    assert set(plan) == set(HOSTS)
    for host in HOSTS:
        assert plan[host]["actions"] == 0, plan[host]
    # The hosts were asked once each (the plan module), and nothing else reached them:
    # no lock, no drain, no activation (each would write an audit line), no apply play.
    # (the plan play runs hosts free of each other: its banner may repeat per host)
    sections = re.findall(
        r"TASK \[procslice_plan : Compare with what each host runs\].*?\n\n", out, re.S
    )
    assert sections, out[-3000:]
    for host in HOSTS:
        assert "".join(sections).count(f"ok: [{host}]") == 1, sections
    assert "Take the deploy lock" not in out
    assert "Take the host out of the front" not in out
    assert re.search(
        r"PLAY \[Apply slices, releases and units\] \**\s*\nskipping: no hosts matched", out
    ), out[-2000:]
    assert {host: len(audit_lines(host)) for host in HOSTS} == before
    rows = recap(out)
    for host in HOSTS:
        assert rows[host]["changed"] == 0 and rows[host]["failed"] == 0, rows


def overlay(tmp_path: Path, host: str, data: dict) -> Path:
    """The scenario's inventory vars with data for one host on top (host_vars)."""
    folder = tmp_path / "inventory"
    shutil.copytree(SCENARIO_VARS, folder)
    host_vars = folder / "host_vars" / f"{host}.yml"
    merged = yaml.safe_load(host_vars.read_text())
    merged.update(data)
    host_vars.write_text(yaml.safe_dump(merged))
    return folder


def scenario_data() -> dict:
    data: dict = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    return data


ACTIVATE_WORD = {"install": None, "start": "started", "restart": "restarted", "reload": "reloaded"}


def test_a_mixed_change_on_one_host_is_applied_as_the_plan_said(tmp_path):
    """One host gets a code change, an environment change, a slice limit, a new service
    and a removed one; the plan names each, the apply does exactly that (the audit log),
    and the other hosts are not visited."""
    target = sorted(HOSTS)[1]
    others = [host for host in HOSTS if host != target]
    source = tmp_path / "hello_wsgi"
    shutil.copytree(REPO / "examples" / "hello_wsgi", source)
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1.0.0"', 'version = "2.0.0"'))
    data = scenario_data()
    services = {service["name"]: service for service in data["procslice_services"]}
    services["hello-wsgi"]["package"] = {"source": str(source)}
    services["hello-asgi"]["env"] = {"VERSION": "7"}
    services["hello-swoole"]["state"] = "absent"
    extra = dict(services["hello-aio"], name="hello-extra", listen=["0.0.0.0:8005"])
    extra.pop("metrics_listen")
    data["procslice_services"].append(extra)
    data["procslice_slices"][0]["memory_max"] = "800M"
    changed = overlay(tmp_path / "changed", target, data)
    before = {host: len(audit_lines(host)) for host in HOSTS}

    run, plan = planned(tmp_path, data=changed)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for host in others:
        assert plan[host]["actions"] == 0, plan[host]
        assert len(audit_lines(host)) == before[host], f"{host} was visited"
        assert f"[{host}]" not in run.stdout.split("PLAY [Apply slices, releases and units]")[1]
    mine = plan[target]
    actions = {name: entry["action"] for name, entry in mine["services"].items()}
    assert actions == {
        "hello-wsgi": "install",
        "hello-asgi": "restart",
        "hello-aio": "nothing",
        "hello-swoole": "remove",
        "hello-extra": "install",
        "hello-podman": "nothing",
    }, mine
    assert mine["slices"]["procslice-web.slice"]["action"] == "limits", mine["slices"]
    # What the apply did, as procslice-activate audited it: exactly the predicted actions.
    done = {
        record["unit"].removeprefix("procslice-"): record["action"]
        for record in audit_lines(target)[before[target] :]
        if record["event"] == "deploy"
    }
    expected = {
        name: entry["activate"] for name, entry in mine["services"].items() if entry["activate"]
    }
    assert expected == {
        "hello-wsgi": "reloaded",
        "hello-asgi": "restarted",
        "hello-extra": "started",
    }
    assert done == expected, (done, expected)
    base = HOSTS[target]
    assert http(base, "/version") == "1 2.0.0"
    assert http(base + 1, "/version") == "7 1.0.0"
    assert on_host(target, "systemctl is-active procslice-hello-extra.service").strip() == "active"
    gone = subprocess.run(
        [
            "podman",
            "exec",
            target,
            "test",
            "-e",
            "/etc/systemd/system/procslice-hello-swoole.service",
        ]
    )
    assert gone.returncode != 0, "the removed service's unit is still there"
    cg = on_host(target, "systemctl show -P ControlGroup procslice-web.slice").strip()
    assert (
        int(on_host(target, f"cat /sys/fs/cgroup/memory{cg}/memory.limit_in_bytes")) == 800 * 2**20
    )

    # Back to the scenario's data (the extra service removed), then nothing to do.
    data = scenario_data()
    data["procslice_services"].append(dict(extra, state="absent"))
    restored = overlay(tmp_path / "restored", target, data)
    back, plan = planned(tmp_path, data=restored)
    assert back.returncode == 0, (back.stdout + back.stderr)[-4000:]
    assert http(base, "/version") == "1 1.0.0"
    assert http(base + 3, "/whoami").startswith("hello from hello-swoole")
    # the demo image in its container, with the environment of its data
    assert http(base + 4, "/").startswith("procslice demo 1 ")
    assert http(base + 4, "/version") == "1 demo"
    again, plan = planned(tmp_path, data=restored)
    assert again.returncode == 0
    assert all(entry["actions"] == 0 for entry in plan.values()), plan


def test_a_hand_edited_drop_in_is_reported_and_put_back(tmp_path):
    host = sorted(HOSTS)[2]
    dropin = "/etc/systemd/system/procslice-hello-aio.service.d/60-hardening.conf"
    clean = on_host(host, f"sha256sum {dropin}").split()[0]
    on_host(host, f"echo 'Environment=EDITED=by-hand' >> {dropin} && systemctl daemon-reload")
    pid = on_host(host, "systemctl show -P MainPID procslice-hello-aio.service").strip()

    check, plan = planned(tmp_path, "--check", "--diff")
    assert check.returncode == 0, (check.stdout + check.stderr)[-4000:]
    entry = plan[host]["services"]["hello-aio"]
    assert entry["action"] == "restart" and entry["at_least"] == "restart", entry
    assert any("drift" in reason and dropin in reason for reason in entry["reasons"]), entry
    assert on_host(host, f"sha256sum {dropin}").split()[0] != clean, "--check changed the file"

    run, _ = planned(tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert on_host(host, f"sha256sum {dropin}").split()[0] == clean
    assert on_host(host, "systemctl show -P MainPID procslice-hello-aio.service").strip() != pid
    _, plan = planned(tmp_path)
    assert plan[host]["actions"] == 0, plan[host]


def fleet_state(unit: str, path: str) -> dict[str, tuple[str, str]]:
    """Per host: the unit's MainPID and the content of a cgroup file of web's slice."""
    state = {}
    for name in HOSTS:
        out = subprocess.run(
            [
                "podman",
                "exec",
                name,
                "sh",
                "-c",
                f"systemctl show -P MainPID {unit}; "
                "cat /sys/fs/cgroup/memory$(systemctl show -P ControlGroup procslice-web.slice)"
                f"/{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        state[name] = (out[0], out[1])
    return state


def web_slice_vars(tmp_path: Path, memory_max: str) -> Path:
    """An extra-vars file: the scenario's slices with the web slice at ``memory_max``."""
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    for item in data["procslice_slices"]:
        if item["name"] == "web":
            item["memory_max"] = memory_max
    extra = tmp_path / "limits.json"
    extra.write_text(json.dumps({"procslice_slices": data["procslice_slices"]}))
    return extra


def test_limits_change_applies_live_across_the_fleet(tmp_path):
    extra = web_slice_vars(tmp_path, "896M")
    before = fleet_state("procslice-hello-wsgi.service", "memory.limit_in_bytes")

    check = playbook("playbooks/limits.yml", "--check", "--diff", "-e", f"@{extra}")
    assert check.returncode == 0, check.stdout[-3000:]
    assert "MemoryMax=939524096" in check.stdout  # the diff shows the change...
    assert fleet_state("procslice-hello-wsgi.service", "memory.limit_in_bytes") == before

    started = time.monotonic()
    run = playbook("playbooks/limits.yml", "-e", f"@{extra}")
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:]
    after = fleet_state("procslice-hello-wsgi.service", "memory.limit_in_bytes")
    for name in HOSTS:
        assert after[name][0] == before[name][0], "the service was restarted"
        assert int(after[name][1]) == 896 * 2**20
    print(f"fleet-wide live limit change on {len(HOSTS)} hosts: {elapsed:.1f}s")

    again = playbook("playbooks/limits.yml", "-e", f"@{extra}")
    assert all(row["changed"] == 0 for row in recap(again.stdout).values())
    restore = playbook("playbooks/limits.yml")
    assert restore.returncode == 0

    # The same change through deploy.yml: the plan says limits on every host, no process
    # restarts, so there is no gate for a canary to pass: one batch of all three, each
    # host one module call (lock, slice unit, daemon-reload), and no rolling play.
    run = playbook("deploy.yml", "-e", f"@{extra}")
    assert run.returncode == 0, run.stdout[-3000:]
    batches = run.stdout.split("PLAY [Apply live slice limits]")[1:]
    assert len(batches) == 1, f"{len(batches)} batches"
    live = batches[0].split("PLAY [Apply slices, releases and units]")
    for name in HOSTS:
        assert f"changed: [{name}]" in live[0], live[0]
    assert live[0].count("TASK [") == 2, live[0]  # the write; the lock fallback skipped
    assert "skipping: no hosts matched" in live[1].split("PLAY RECAP")[0], live[1]
    after = fleet_state("procslice-hello-wsgi.service", "memory.limit_in_bytes")
    for name in HOSTS:
        assert after[name][0] == before[name][0], "the service was restarted"
        assert int(after[name][1]) == 896 * 2**20
    assert playbook("deploy.yml").returncode == 0


def test_bad_input_stops_before_any_host_changes():
    """Bad data stops the run in the preflight play, which never connects to a host:
    run with every host's SSH port pointing nowhere, a connection attempt would show as
    unreachable; no other play starts and no host's audit log grows."""
    before = {host: len(audit_lines(host)) for host in HOSTS}
    service = {
        "name": "api",
        "model": "gunicorns",
        "app": "a:b",
        "package": {"source": "examples/hello_wsgi"},
        "listen": ["0.0.0.0:8000"],
    }
    bad = json.dumps({"procslice_services": [service], "ansible_port": 1})
    run = playbook("deploy.yml", "-e", bad)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "procslice_services[api].model" in out
    assert "UNREACHABLE" not in out, out[-3000:]
    plays = re.findall(r"^PLAY \[(.*?)\]", run.stdout, re.M)
    assert plays == ["Validate the procslice data before any host changes"], plays
    for row in recap(run.stdout).values():
        assert row["changed"] == 0 and row["unreachable"] == 0, row
    assert {host: len(audit_lines(host)) for host in HOSTS} == before


def releases(name: str) -> list[str]:
    out = subprocess.run(
        ["podman", "exec", name, "ls", "/srv/procslice/hello-wsgi/releases"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


def current(name: str) -> str:
    return subprocess.run(
        ["podman", "exec", name, "readlink", "/srv/procslice/hello-wsgi/current"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_broken_release_is_rolled_back_on_the_canary_and_stops_the_rollout(tmp_path):
    """An app that crashes at import: the canary's health gate rolls it back, no other
    host is touched, and every host still serves the old release."""
    broken = tmp_path / "hello_wsgi"
    shutil.copytree(REPO / "examples" / "hello_wsgi", broken)
    pyproject = broken / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1.0.0"', 'version = "9.9.9"'))
    module = broken / "hello_wsgi" / "__init__.py"
    module.write_text(module.read_text() + '\nraise RuntimeError("broken on purpose")\n')
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    for service in data["procslice_services"]:
        if service["name"] == "hello-wsgi":
            service["package"] = {"source": str(broken)}
    extra = tmp_path / "broken.json"
    extra.write_text(json.dumps({"procslice_services": data["procslice_services"]}))
    before = {name: releases(name) for name in HOSTS}
    current_before = {name: current(name) for name in HOSTS}

    run = playbook("deploy.yml", "-e", f"@{extra}")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    assert "failed its health gate; rolled back" in output, output[-4000:]
    # The run says why: the unit's journal, where the app's traceback is.
    assert said(output, "the last 30 journal lines of procslice-hello-wsgi.service"), output[-4000:]
    assert said(output, "RuntimeError: broken on purpose"), output[-6000:]
    rows = recap(run.stdout)
    canary, *rest = sorted(HOSTS)
    assert rows[canary]["failed"] == 1
    for name in rest:
        # The rollout stopped after the canary: the other hosts got no release.
        assert rows[name]["changed"] == 0, rows
        assert releases(name) == before[name]
    # The canary serves its old release again and keeps the failed one for inspection.
    assert current(canary) == current_before[canary]
    kept = subprocess.run(
        [
            "podman",
            "exec",
            canary,
            "sh",
            "-c",
            "ls -d /srv/procslice/hello-wsgi/releases/*/venv/lib/python3*/site-packages/"
            "hello_wsgi-9.9.9.dist-info",
        ],
        capture_output=True,
        text=True,
    )
    assert kept.returncode == 0, kept.stderr
    for name, port in HOSTS.items():
        assert http(port, "/version") == "1 1.0.0", name
    # The canary's services were drained from the front before its apply and the run
    # failed: only the failed service stays out, its other services were put back when
    # the run stopped. The run, the front and the fleet's status say so, and the next
    # deploy (the data back as it was) puts it back.
    assert said(output, f"{canary} keeps hello-wsgi out of the front load balancer's rotation"), (
        output[-4000:]
    )
    front = front_servers()
    assert front[("hello-wsgi", canary)] == "DRAIN", front
    for service in ("hello-asgi", "hello-aio", "hello-swoole", "hello-podman"):
        assert front[(service, canary)] == "UP", front
    status = playbook("playbooks/status.yml")
    assert said(
        status.stdout,
        f"{canary} has services out of the front's rotation: hello-wsgi: drained by a deploy",
    ), status.stdout[-3000:]
    assert said(status.stdout, "failed its health gate"), status.stdout[-3000:]
    back, plan = planned(tmp_path)
    assert back.returncode == 0, (back.stdout + back.stderr)[-4000:]
    assert plan[canary]["drained"] is True, plan[canary]
    assert [host for host in HOSTS if plan[host]["actions"]] == [canary], plan
    _, plan = planned(tmp_path)
    assert all(not plan[host]["actions"] for host in HOSTS), plan
    assert "out of the front's rotation" not in playbook("playbooks/status.yml").stdout
    assert set(front_servers().values()) == {"UP"}, front_servers()
