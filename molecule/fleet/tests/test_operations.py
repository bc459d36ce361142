"""Fleet operations on the scenario's 3 hosts: a rolling code change under keep-alive
load, the deploy lock, the audit log, rollback.yml, a host gone mid-rollout, and a
podman release that fails its health gate on the canary. (A controller killed at each
step of a deploy: molecule/gates.)

Runs after test_fleet.py (file order): the fleet is deployed and test_fleet.py's
broken release sits, marked failed, on the canary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from test_fleet import (
    FRONT_HOST,
    HOSTS,
    MODELS,
    PACKAGED,
    PORTS,
    REPO,
    SCENARIO_VARS,
    front_servers,
    http,
    planned,
    playbook,
    playbook_in_background,
    recap,
    said,
    version_of,
    web_slice_vars,
)

LOADGEN = REPO / "tests" / "molecule_support" / "loadgen.py"


def on(host: str, command: str, check: bool = True) -> str:
    return subprocess.run(
        ["podman", "exec", host, "sh", "-c", command],
        capture_output=True,
        text=True,
        check=check,
    ).stdout.strip()


def main_pids() -> dict[tuple[str, str], str]:
    return {
        (host, name): on(host, f"systemctl show -P MainPID procslice-{name}.service")
        for host in HOSTS
        for name in PORTS
    }


def podman_containers() -> dict[str, str]:
    """Per host: the ids of the podman service's containers (running or not)."""
    return {
        host: on(host, "podman ps -a -q --no-trunc --filter name=^procslice-hello-podman$")
        for host in HOSTS
    }


def audit(host: str) -> list[dict]:
    text = on(host, "cat /var/log/procslice/audit.log", check=False)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def version_data(tmp_path: Path, version: str) -> Path:
    """The scenario's data with every app at another package version (a code change);
    the podman service (an image, no package) as it is."""
    sources = {}
    for app in ("hello_wsgi", "hello_asgi"):
        copy = tmp_path / f"{app}-{version}"
        shutil.copytree(REPO / "examples" / app, copy)
        pyproject = copy / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace('version = "1.0.0"', f'version = "{version}"')
        )
        sources[f"examples/{app}"] = str(copy)
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    for service in data["procslice_services"]:
        if "package" in service:
            service["package"] = {"source": sources[service["package"]["source"]]}
    extra = tmp_path / f"version-{version}.json"
    extra.write_text(json.dumps({"procslice_services": data["procslice_services"]}))
    return extra


@contextmanager
def load_on(targets: list[str]) -> Iterator[dict[str, dict]]:
    """2 keep-alive connections per target sending 25 requests a second each, from 3 s
    before the block to 3 s after it; the load generator's tallies fill the dict given
    once the block is over."""
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--connections", "2", "--rate", "25", *targets],
        stdout=subprocess.PIPE,
        text=True,
    )
    tallies: dict[str, dict] = {}
    try:
        time.sleep(3)
        yield tallies
        time.sleep(3)
    finally:
        load.send_signal(signal.SIGINT)
        out, _ = load.communicate(timeout=60)
    tallies.update(json.loads(out))


def deploy_under_load(
    extra: Path, targets: list[str]
) -> tuple[subprocess.CompletedProcess[str], float, dict[str, dict]]:
    """deploy.yml with extra data while 2 keep-alive connections per target send 25
    requests a second each: the run, its seconds, and the load generator's tallies."""
    with load_on(targets) as tallies:
        started = time.monotonic()
        run = playbook("deploy.yml", "-e", f"@{extra}")
        took = time.monotonic() - started
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run, took, tallies


def no_request_failed(
    what: str, took: float, tallies: dict[str, dict], through_front: bool = False
) -> None:
    """Print the figures per service (targets are <where>/<service>), then assert that
    every target had its requests answered and none failed; through the front load
    balancer not even a retry (haproxy drains a host before any connection is cut)."""
    by_service: dict[str, dict[str, int]] = {}
    for target, tally in tallies.items():
        row = by_service.setdefault(target.split("/")[1], {"ok": 0, "failed": 0, "retried": 0})
        for key in row:
            row[key] += tally[key]
    print(f"{what}: {took:.0f}s")
    for name, row in sorted(by_service.items()):
        print(
            f"  {name} ({MODELS[name]}): {row['ok']} answered, {row['failed']} failed, "
            f"{row['retried']} retried on a connection closed under a request"
        )
    for target, tally in tallies.items():
        assert tally["failed"] == 0, (target, tally)
        assert tally["ok"] > 50, (target, tally)
        if through_front:
            assert tally["retried"] == 0, (target, tally)


def test_every_deploy_is_audited_on_every_host():
    for host in HOSTS:
        records = audit(host)
        deploys = [r for r in records if r["event"] == "deploy" and r.get("result") == "ok"]
        units = {r["unit"] for r in deploys}
        assert {f"procslice-{name}" for name in PORTS} <= units, records[-5:]
        first = deploys[0]
        assert first["actor"].endswith("@" + os.uname().nodename), first
        assert first["run"].startswith(os.uname().nodename + ":"), first
        assert first["action"] == "started" and first["release"].startswith("releases/"), first
        journal = on(host, "journalctl -t procslice-audit -o cat --no-pager PROCSLICE_EVENT=deploy")
        assert "unit=procslice-hello-wsgi" in journal


def test_rolling_code_change_under_keep_alive_load_fails_no_request(tmp_path):
    """Every host gets version 1.0.1 of every app, one batch after another, while 2
    keep-alive connections per service and host send 25 requests a second each. (The
    podman service has no package: the code change leaves it alone.)"""
    extra = version_data(tmp_path, "1.0.1")
    targets = [
        f"{host}/{name}=127.0.0.1:{base + PORTS[name]}/"
        for host, base in HOSTS.items()
        for name in PACKAGED
    ]
    before = main_pids()
    _, took, tallies = deploy_under_load(extra, targets)
    no_request_failed(f"rolling deploy of 1.0.1 to {len(HOSTS)} hosts under load", took, tallies)
    # A code change is a graceful reload: same main process, new code (and the podman
    # service's container untouched).
    assert main_pids() == before
    for host, base in HOSTS.items():
        for name, off in PORTS.items():
            assert http(base + off, "/version") == version_of(name, "1", "1.0.1"), (host, name)


def test_rollback_goes_to_the_previous_healthy_release_and_forward_again():
    host1 = sorted(HOSTS)[0]
    new = on(host1, "readlink /srv/procslice/hello-wsgi/current")
    before = main_pids()
    started = time.monotonic()
    run = playbook("playbooks/rollback.yml", "-e", "rollback_service=hello-wsgi")
    took = time.monotonic() - started
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    print(f"rollback of hello-wsgi on {len(HOSTS)} hosts: {took:.1f}s")
    for host, base in HOSTS.items():
        # The canary's failed 9.9.9 release (test_fleet.py) is skipped: 1.0.0 serves.
        assert http(base, "/version") == "1 1.0.0", host
        assert main_pids()[(host, "hello-wsgi")] == before[(host, "hello-wsgi")]
        record = [r for r in audit(host) if r["event"] == "rollback"][-1]
        assert (record["event"], record["unit"], record["result"]) == (
            "rollback",
            "procslice-hello-wsgi",
            "ok",
        )
        assert record["from"].split("-")[-1] == new.split("-")[-1]
    # Forward again by the content hash, the same on every host (the ids differ).
    forward = playbook(
        "playbooks/rollback.yml",
        "-e",
        "rollback_service=hello-wsgi",
        "-e",
        f"rollback_release={new.split('-')[-1]}",
    )
    assert forward.returncode == 0, (forward.stdout + forward.stderr)[-4000:]
    for host, base in HOSTS.items():
        assert http(base, "/version") == "1 1.0.1", host


def test_rollback_refuses_bad_input_before_any_host_changes():
    for args, needle in (
        ([], "rollback_service is required"),
        (["-e", "rollback_service=nope"], "rollback_service=nope is not a service"),
        (
            ["-e", "rollback_service=hello-wsgi", "-e", "rollback_release=latest"],
            "rollback_release=latest is not a release: give its",
        ),
        (
            [
                "-e",
                "rollback_service=hello-wsgi",
                "-e",
                "rollback_release=20200101T000000Z-0123456789ab",
            ],
            "is not on",
        ),
    ):
        run = playbook("playbooks/rollback.yml", *args)
        assert run.returncode != 0
        assert needle in run.stdout + run.stderr, (args, (run.stdout + run.stderr)[-2000:])
        assert all(row["changed"] == 0 for row in recap(run.stdout).values())
    # The last case failed on the hosts, after it took their lock: released (always),
    # not left for the next run to take over.
    assert "Release the deploy lock" in run.stdout, run.stdout[-2000:]
    # podman services have no releases on the host: refused before any host is reached.
    run = playbook("playbooks/rollback.yml", "-e", "rollback_service=hello-podman")
    assert run.returncode != 0
    assert said(
        run.stdout + run.stderr,
        "rollback_service=hello-podman runs the podman model, which has no releases on the host",
    ), (run.stdout + run.stderr)[-2000:]
    assert "Take the deploy lock" not in run.stdout
    for host, base in HOSTS.items():
        assert http(base, "/version") == "1 1.0.1", host
        held = subprocess.run(
            ["podman", "exec", host, "test", "-e", "/run/procslice/deploy.lock"], check=False
        )
        assert held.returncode != 0, f"{host} still holds the deploy lock"


def test_a_second_run_waits_for_or_stops_at_the_deploy_lock(tmp_path):
    """A run of this controller that is alive holds host1's lock (a process of ours
    stands in for its ansible-playbook): a limit change stops naming it (limits.yml, and
    deploy.yml's one-call live limits, which leaves the host to the rolling play's
    lock), or waits for it with procslice_lock_wait and runs once it is released."""
    host1 = sorted(HOSTS)[0]
    node = os.uname().nodename
    holder_process = subprocess.Popen(["sleep", "600"])
    try:
        with open(f"/proc/{holder_process.pid}/stat") as f:
            ticks = f.read().rsplit(")", 1)[1].split()[19]
        run = f"{node}:{holder_process.pid}:{ticks}"
        holder = {
            "run": run,
            "actor": "ann@" + node,
            "controller": node,
            "pid": holder_process.pid,
            "what": "deploy",
        }
        lock = "/usr/local/lib/procslice/lock"
        # The bad rollback requests above stopped on a host after taking its lock: a run
        # that fails keeps it until the next run of this controller takes it over.
        on(host1, "rm -f /run/procslice/deploy.lock")
        on(host1, f"{lock} acquire --holder '{json.dumps(holder)}'")
        refused = playbook("playbooks/limits.yml", "-l", host1)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert f"{host1} is locked by another procslice run: deploy by ann@{node}" in out, out[
            -3000:
        ]
        assert f"pid {holder_process.pid}" in out
        extra = web_slice_vars(tmp_path, "880M")
        refused = playbook("deploy.yml", "-l", host1, "-e", f"@{extra}")
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0, out[-3000:]
        assert f"{host1} is locked by another procslice run: deploy by ann@{node}" in out, out[
            -3000:
        ]
        assert "880M" not in on(host1, "cat /etc/systemd/system/procslice-web.slice")
        waiter = playbook_in_background(
            "playbooks/limits.yml", "-l", host1, "-e", "procslice_lock_wait=300"
        )
        time.sleep(20)
        assert waiter.poll() is None, "the second run did not wait"
        on(host1, f"{lock} release --run {run}")
        out, _ = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, out[-3000:]
        assert on(host1, "cat /run/procslice/deploy.lock 2>/dev/null", check=False) == ""
    finally:
        holder_process.kill()
        holder_process.wait()


def test_a_lock_left_by_a_dead_run_is_taken_over_and_audited():
    host1 = sorted(HOSTS)[0]
    dead = subprocess.Popen(["true"])
    dead.wait()
    node = os.uname().nodename
    holder = {
        "run": f"{node}:{dead.pid}:1",
        "actor": "ann@" + node,
        "controller": node,
        "pid": dead.pid,
        "what": "deploy",
        "since": "2026-01-01T00:00:00Z",
    }
    on(
        host1,
        f"mkdir -p /run/procslice && echo '{json.dumps(holder)}' > /run/procslice/deploy.lock",
    )
    run = playbook("playbooks/limits.yml", "-l", host1)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    taken = [r for r in audit(host1) if r["event"] == "lock" and r["result"] == "taken-over"]
    assert taken and json.loads(taken[-1]["previous"])["run"] == holder["run"]
    # A lock from another controller is not taken over before procslice_lock_stale_after.
    other = dict(
        holder,
        run="elsewhere:1:1",
        controller="elsewhere",
        actor="bob@elsewhere",
        since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    on(host1, f"echo '{json.dumps(other)}' > /run/procslice/deploy.lock")
    refused = playbook("playbooks/limits.yml", "-l", host1)
    assert refused.returncode != 0
    assert "by bob@elsewhere" in refused.stdout + refused.stderr
    on(host1, "rm -f /run/procslice/deploy.lock")


FRONT = 19000  # the front host's published ports: FRONT + the service's offset
# haproxy's own count, per backend, of the requests it tried again on a server (wretr)
# or sent to another one (wredis): show stat on the front host's admin socket.
FRONT_RETRIES = """
import csv, json, socket
with socket.socket(socket.AF_UNIX) as sock:
    sock.connect("/run/haproxy/admin.sock")
    sock.sendall(b"show stat\\n")
    text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
rows = csv.DictReader(text[2:].splitlines())
print(json.dumps({r["pxname"]: int(r["wretr"]) + int(r["wredis"])
                  for r in rows if r["svname"] == "BACKEND"}))
"""


def front_retries() -> dict[str, int]:
    """Per backend: the requests haproxy retried or redispatched since its worker started."""
    out = subprocess.run(
        ["podman", "exec", "-i", FRONT_HOST, "python3", "-"],
        input=FRONT_RETRIES,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: dict[str, int] = json.loads(out)
    return counts


def front_retried(before: dict[str, int], names: list[str]) -> dict[str, int]:
    """Per service: the requests haproxy retried or redispatched since ``before`` (a
    reload starts a worker counting from 0)."""
    after = front_retries()
    return {
        name: after[name] - before[name] if after[name] >= before[name] else after[name]
        for name in names
    }


def env_data(tmp_path: Path, version: str, **podman: object) -> Path:
    """The scenario's data with VERSION=version for every service, and the podman
    service's entry updated with podman (another environment, health check...)."""
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    for service in data["procslice_services"]:
        service["env"] = {"VERSION": version}
        if service["model"] == "podman":
            service.update(podman)
    extra = tmp_path / f"env-{version}-{time.monotonic_ns()}.json"
    extra.write_text(json.dumps({"procslice_services": data["procslice_services"]}))
    return extra


def test_a_restart_of_every_service_through_the_front_fails_no_request(tmp_path):
    """An environment change restarts every service on every host (new main
    processes; the podman service's container is replaced); haproxy on the front host
    drains each host before its batch and takes it back after its health gates, while
    2 keep-alive connections per service send requests through it."""
    extra = env_data(tmp_path, "2")
    targets = [f"front/{name}=127.0.0.1:{FRONT + off}/" for name, off in PORTS.items()]
    before = main_pids()
    containers = podman_containers()
    retries = front_retries()
    _, took, tallies = deploy_under_load(extra, targets)
    no_request_failed(
        f"restart of every service on {len(HOSTS)} hosts through haproxy",
        took,
        tallies,
        through_front=True,
    )
    # Nor did haproxy retry one on its side: each host was drained before its restart.
    retried = front_retried(retries, list(PORTS))
    print(f"  retried or redispatched by haproxy: {retried}")
    assert not any(retried.values()), retried
    after = main_pids()
    assert all(after[key] != before[key] for key in before), "not every service restarted"
    # podman replaced its container on every host: one container, another id.
    replaced = podman_containers()
    assert all(replaced[host] != containers[host] for host in HOSTS), (containers, replaced)
    for name, off in PORTS.items():
        # The scenario's own data: its apps at 1.0.0 (the demo image), with VERSION=2,
        # through the front and on every host.
        assert http(FRONT + off, "/version") == version_of(name, "2"), name
        for host, base in HOSTS.items():
            assert http(base + off, "/version") == version_of(name, "2"), (host, name)


def test_a_podman_release_failing_its_gate_on_the_canary_is_rolled_back_and_the_front_fails_none(
    tmp_path,
):
    """The podman service with HELLO_FAIL=500 (the demo image answers 500 to everything,
    /healthz too) while 2 keep-alive connections send requests to it through the front.
    The canary's health gate fails and the rollout stops there, the other hosts are not
    touched, and the front answers every request from them.

    The gate puts the canary's podman service back as it was: its environment file from
    the copy kept when it last passed (a podman service has no release link; its
    environment and image are its release), a new container on the previous state; the
    failed service stays out of the front's rotation until a deploy passes. The previous
    data again has nothing to change on the service, and puts it back in rotation."""
    canary, *rest = sorted(HOSTS)
    unit = "procslice-hello-podman"
    good = env_data(tmp_path, "2")  # what test_a_restart_of_every_service... deployed
    # (a shorter gate than the data's 30 s: the failure is certain, waiting is not needed)
    bad = env_data(
        tmp_path,
        "2",
        env={"VERSION": "3", "HELLO_FAIL": "500"},
        health={"http": "/healthz", "timeout": 10},
    )
    before = main_pids()
    containers = podman_containers()
    audited = {host: len(audit(host)) for host in HOSTS}
    retries = front_retries()
    with load_on([f"front/hello-podman=127.0.0.1:{FRONT + PORTS['hello-podman']}/"]) as tallies:
        started = time.monotonic()
        run = playbook("deploy.yml", "-e", f"@{bad}")
        failed_took = time.monotonic() - started
        output = run.stdout + run.stderr
        assert run.returncode != 0, output[-4000:]
        # The run names the canary, the service and why; the rollout stopped there.
        assert said(
            output,
            f"{unit}.service: http://127.0.0.1:8004/healthz did not answer 200 within 10s; "
            "last: HTTP 500: failing on purpose (HELLO_FAIL=500)",
        ), output[-4000:]
        assert said(output, f"{unit} failed its health gate; rolled back"), output[-4000:]
        assert said(output, f"{canary} keeps hello-podman out of the front load balancer's"), (
            output[-4000:]
        )
        rows = recap(run.stdout)
        assert rows[canary]["failed"] == 1, rows
        now, ids = main_pids(), podman_containers()
        for host in rest:
            assert rows[host]["changed"] == 0 and rows[host]["failed"] == 0, rows
            assert len(audit(host)) == audited[host], f"{host} was visited"
            assert all(now[host, name] == before[host, name] for name in PORTS), host
            assert ids[host] == containers[host], host
            assert http(HOSTS[host] + PORTS["hello-podman"], "/version") == "2 demo", host
        # The canary's other services were not touched; its podman service runs the
        # previous state again, in one new container.
        assert all(now[canary, name] == before[canary, name] for name in PACKAGED), now
        state = on(canary, f"systemctl show -P ActiveState {unit}.service")
        assert state == "active", state
        assert ids[canary] and ids[canary] != containers[canary], (ids, containers)
        assert len(ids[canary].split()) == 1, ids[canary]
        assert http(HOSTS[canary] + PORTS["hello-podman"], "/version") == "2 demo"
        record = [r for r in audit(canary) if r.get("unit") == unit][-1]
        assert (record["event"], record["result"]) == ("rollback", "rolled-back"), record
        assert record["failed_files"].endswith("/hello-podman/env"), record
        print(
            f"podman release failing its gate on the canary {canary}: the run failed in "
            f"{failed_took:.0f}s; rolled back ({record['failed_files']} put back), "
            f"{unit}.service {state}"
        )
        # Only the failed service is out of the front's rotation, on the canary.
        drained = on(canary, "cat /var/lib/procslice/drained")
        assert drained.startswith("hello-podman: drained by a deploy run"), drained
        front = front_servers()
        assert front[("hello-podman", canary)] == "DRAIN", front
        others = {key: status for key, status in front.items() if key != ("hello-podman", canary)}
        assert set(others.values()) == {"UP"}, front

        # The previous data again: only the canary has something to do.
        started = time.monotonic()
        back, plan = planned(tmp_path, "-e", f"@{good}")
        back_took = time.monotonic() - started
        assert back.returncode == 0, (back.stdout + back.stderr)[-4000:]
        assert [host for host in HOSTS if plan[host]["actions"]] == [canary], plan
        assert plan[canary]["drained"] is True, plan[canary]
        assert plan[canary]["services"]["hello-podman"]["action"] == "nothing", plan[canary]
    no_request_failed(
        "a podman release failing its gate on the canary, and the previous data again, "
        "through haproxy",
        failed_took + back_took,
        tallies,
        through_front=True,
    )
    print(f"  the previous data deployed again in {back_took:.0f}s")
    retried = front_retried(retries, ["hello-podman"])
    print(f"  retried or redispatched by haproxy: {retried}")
    assert not any(retried.values()), retried
    for host, base in HOSTS.items():
        assert http(base + PORTS["hello-podman"], "/version") == "2 demo", host
    assert set(front_servers().values()) == {"UP"}, front_servers()
    _, plan = planned(tmp_path, "-e", f"@{good}")
    assert all(not plan[host]["actions"] for host in HOSTS), plan


def test_a_host_gone_mid_rollout_stops_the_rollout_named_and_a_rerun_converges(tmp_path):
    """A host stopped once the rollout's second batch started: the run fails naming it,
    the hosts before it are done, and once it is back the same run converges. The
    change is an environment change (every service restarted): the rolling code change
    above already builds releases on every host."""
    extra = env_data(tmp_path, "3")
    first, second, gone = sorted(HOSTS)
    # Output to a file: a pipe nobody reads while we wait would fill and stall the run.
    log = open(tmp_path / "deploy.log", "w+")  # noqa: SIM115 (read back below)
    # One host a batch (the default puts the two others together after the canary).
    deploy = playbook_in_background(
        "deploy.yml", "-e", f"@{extra}", "-e", '{"procslice_serial": [1, 1, "100%"]}', stdout=log
    )
    # The host goes away once the second batch has started: the canary is done.
    deadline = time.monotonic() + 600
    while on(second, "cat /run/procslice/deploy.lock 2>/dev/null", check=False) == "":
        assert deploy.poll() is None and time.monotonic() < deadline, "batch 2 never started"
        time.sleep(0.3)
    subprocess.run(["podman", "stop", "-t", "5", gone], check=True, capture_output=True)
    try:
        deploy.wait(timeout=900)
        log.seek(0)
        out = log.read()
        assert deploy.returncode != 0, out[-3000:]
        rows = recap(out)
        assert rows[gone]["unreachable"] == 1 or rows[gone]["failed"] == 1, rows
        assert f"fatal: [{gone}]: UNREACHABLE" in out or f"fatal: [{gone}]: FAILED" in out
        for host in (first, second):
            assert rows[host]["failed"] == 0 and rows[host]["unreachable"] == 0, rows
            for name, off in PORTS.items():
                assert http(HOSTS[host] + off, "/version") == version_of(name, "3"), (
                    host,
                    name,
                )
    finally:
        subprocess.run(["podman", "start", gone], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while on(gone, "systemctl is-system-running", check=False) not in ("running", "degraded"):
        assert time.monotonic() < deadline, "the host did not come back"
        time.sleep(1)
    started = time.monotonic()
    rerun = playbook("deploy.yml", "-e", f"@{extra}")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    print(f"re-run after a host came back: {time.monotonic() - started:.0f}s")
    for host, base in HOSTS.items():
        for name, off in PORTS.items():
            assert http(base + off, "/version") == version_of(name, "3"), (host, name)
