"""The health-gate matrix: for each process model (gunicorn, aio, swoole, podman) and
for the reload path (a code change: a new release behind the `current` link) and the
restart path (an environment change), a release that answers its health URL with 500,
one that hangs past the gate's timeout, and one that fails only after its first few
healthy answers. Each is deployed to the canary while keep-alive load goes through the
front host's haproxy, and each run must end with:

- the run failed, naming the canary and every failed service;
- the canary's services answering with their previous state (release and environment);
- the failed state marked (a release: `.failed` in its directory; an environment: the
  audit log's rollback record names the files put back);
- the other host untouched, and no request failed or retried through the front.

Then the exit-code-4 case (a new service of each model with no earlier healthy release:
stopped, not restarted in a loop); a code change whose controller is killed (SIGKILL to
its process group) while the canary builds, once every release is staged, while
procslice-activate switches and reloads, and during a health gate: every host must
serve one complete release, the next run converge and the one after do nothing; and the
good data again: every service back in the front's rotation, and a run after that is a
no-op.

podman has no reload path (its code is its image: a new image or environment replaces
the container), so it is in the restart cases only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
INVENTORY = Path("/var/tmp/procslice-mgate/hosts.yml")
SCENARIO_VARS = REPO / "molecule" / "gates" / "inventory"
LOADGEN = REPO / "tests" / "molecule_support" / "loadgen.py"
HOSTS = {"procslice-mgate1": 21100, "procslice-mgate2": 21200}
CANARY, OTHER = sorted(HOSTS)
FRONT_HOST, FRONT = "procslice-mgate0", 21000
# name -> (model, the offset of its port, its package in examples/ or None for podman)
SERVICES = {
    "gate-wsgi": ("gunicorn", 0, "hello_wsgi"),
    "gate-aio": ("aio", 1, "hello_asgi"),
    "gate-swoole": ("swoole", 2, "hello_asgi"),
    "gate-podman": ("podman", 3, None),
}
# What each service answers on /version with the scenario's data.
GOOD = {name: "1 1.0.0" if package else "1 demo" for name, (_, _, package) in SERVICES.items()}
# What the gate reports last for each kind of failing release.
SEEN = {
    "500": "HTTP 500: failing on purpose (HELLO_FAIL=500)",
    "hang": "TimeoutError: timed out",
    "after:3": "HTTP 500: failing on purpose (HELLO_FAIL=after:3)",
}

testinfra_hosts = [f"ansible://{name}" for name in HOSTS]


def playbook(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_FORCE_COLOR", None)  # molecule sets it for its own runs
    return subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(INVENTORY), "-i", str(SCENARIO_VARS)),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def on(host: str, command: str) -> str:
    return subprocess.run(
        ["podman", "exec", host, "sh", "-c", command], capture_output=True, text=True
    ).stdout.strip()


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP rows by host; a run without one fails the test."""
    rows = {}
    for host, fields in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.M):
        rows[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    assert rows, f"no PLAY RECAP in the output:\n{output[-3000:]}"
    return rows


def said(output: str, text: str) -> bool:
    """Whether the output says text, however the YAML callback folded its lines."""
    flat = " ".join(output.replace("''", "'").replace('\\"', '"').split())
    return " ".join(text.split()) in flat


def version(host: str, name: str) -> str:
    port = HOSTS[host] + SERVICES[name][1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as answer:
            return answer.read().decode().strip()
    except (urllib.error.URLError, OSError) as error:
        return f"no answer: {error}"


def front_servers() -> dict[tuple[str, str], str]:
    """(backend, server) -> status, as haproxy-ctl show prints it on the front host."""
    lines = on(FRONT_HOST, "/usr/local/lib/procslice/haproxy-ctl show").splitlines()[1:]
    return {(line.split()[0], line.split()[1]): line.split()[2] for line in lines}


def releases(host: str, name: str) -> dict[str, bool]:
    """release directory -> marked failed, on host."""
    listing = on(
        host,
        f"cd /srv/procslice/{name}/releases && for r in *; do "
        f'[ -e "$r/.failed" ] && echo "$r failed" || echo "$r ok"; done',
    )
    return {line.split()[0]: line.split()[1] == "failed" for line in listing.splitlines()}


def scenario_services() -> list[dict]:
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    return data["procslice_services"]


def failing(tmp_path: Path, path: str, mode: str) -> tuple[Path, list[str]]:
    """The scenario's data with every service of the path failing in mode: the extra
    vars file, and the services that change."""
    services = scenario_services()
    changed = []
    for service in services:
        package = SERVICES[service["name"]][2]
        if path == "restart":
            service["env"] = dict(service["env"], HELLO_FAIL=mode)
        elif package is not None:
            # The reload path: the same app, failing by its code (a new release).
            copy = tmp_path / f"{package}-{mode.replace(':', '-')}"
            if not copy.exists():
                shutil.copytree(REPO / "examples" / package, copy)
                module = copy / package / "__init__.py"
                text = module.read_text()
                assert 'os.environ.get("HELLO_FAIL", "")' in text
                module.write_text(text.replace('os.environ.get("HELLO_FAIL", "")', repr(mode)))
            service["package"] = {"source": str(copy)}
        else:
            continue
        changed.append(service["name"])
    extra = tmp_path / f"{path}-{mode.replace(':', '-')}.json"
    extra.write_text(json.dumps({"procslice_services": services}))
    return extra, changed


def deploy_under_load(*args: str) -> tuple[subprocess.CompletedProcess[str], float, dict]:
    """deploy.yml while 2 keep-alive connections per service send 25 requests a second
    each through the front: the run, its seconds and the load generator's tallies."""
    targets = [f"front/{name}=127.0.0.1:{FRONT + off}/" for name, (_, off, _) in SERVICES.items()]
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--connections", "2", "--rate", "25", *targets],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    started = time.monotonic()
    run = playbook("deploy.yml", *args)
    took = time.monotonic() - started
    time.sleep(2)
    load.send_signal(signal.SIGINT)
    out, _ = load.communicate(timeout=60)
    return run, took, json.loads(out)


def nothing_failed_through_the_front(what: str, took: float, tallies: dict) -> None:
    print(f"{what}: {took:.0f}s")
    for target, tally in sorted(tallies.items()):
        print(
            f"  {target}: {tally['ok']} answered, {tally['failed']} failed, "
            f"{tally['retried']} retried"
        )
    for target, tally in tallies.items():
        assert tally["failed"] == 0 and tally["retried"] == 0, (target, tally)
        assert tally["ok"] > 50, (target, tally)


def rollbacks(host: str, name: str) -> list[dict]:
    text = on(host, "cat /var/log/procslice/audit.log 2>/dev/null")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if r["event"] == "rollback" and r["unit"] == f"procslice-{name}"]


CASES = [(path, mode) for path in ("restart", "reload") for mode in ("500", "hang", "after:3")]


@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m}" for p, m in CASES])
def test_a_failing_release_is_rolled_back_on_the_canary_with_no_failed_request(
    tmp_path, path, mode
):
    extra, changed = failing(tmp_path, path, mode)
    before = {name: releases(CANARY, name) for name in changed if SERVICES[name][2]}
    other_before = {name: releases(OTHER, name) for name in SERVICES if SERVICES[name][2]}
    rolled_before = {name: len(rollbacks(CANARY, name)) for name in changed}

    run, took, tallies = deploy_under_load("-e", f"@{extra}")
    output = run.stdout + run.stderr
    nothing_failed_through_the_front(f"{path} path, HELLO_FAIL={mode}", took, tallies)

    # The run failed, on the canary, naming every service that failed its gate and
    # what the gate saw last.
    assert run.returncode != 0, output[-4000:]
    rows = recap(run.stdout)
    assert rows[CANARY]["failed"] == 1, rows
    task = "Fail for the services that did not pass their health gate"
    assert said(output, f'{CANARY}: "{task}" failed'), output[-4000:]
    for name in changed:
        gated = f"procslice-{name} failed its health gate; rolled back"
        assert said(output, gated), (name, output[-6000:])
    assert said(output, "did not answer 200 within 6s; last: " + SEEN[mode]), output[-6000:]

    # The other host was not touched: the rollout stopped at the canary.
    assert rows[OTHER]["changed"] == 0, rows
    assert {name: releases(OTHER, name) for name in other_before} == other_before

    # Every service of the canary answers with its previous state again.
    for name in SERVICES:
        assert version(CANARY, name) == GOOD[name], (name, version(CANARY, name))
        assert version(OTHER, name) == GOOD[name], (name, version(OTHER, name))

    # The failed state is marked.
    for name in changed:
        records = rollbacks(CANARY, name)
        assert len(records) == rolled_before[name] + 1, records[-2:]
        record = records[-1]
        assert record["result"] == "rolled-back", record
        if path == "reload":
            now = releases(CANARY, name)
            new = set(now) - set(before[name])
            assert len(new) == 1 and now[new.pop()] is True, (before[name], now)
            assert record["failed_release"] != record["release"], record
            current = on(CANARY, f"readlink /srv/procslice/{name}/current")
            assert current == record["release"] and not now[current.split("/")[-1]], current
        else:
            assert "/env" in record["failed_files"], record

    # The failed services stay out of the front's rotation on the canary, the others are back.
    front = front_servers()
    for name in SERVICES:
        expected = "DRAIN" if name in changed else "UP"
        assert front[(name, CANARY)] == expected, (name, front)
        assert front[(name, OTHER)] == "UP", (name, front)


NEW = {
    "gate-new-wsgi": ("gate-wsgi", 4),
    "gate-new-aio": ("gate-aio", 5),
    "gate-new-swoole": ("gate-swoole", 6),
    "gate-new-podman": ("gate-podman", 7),
}


def test_a_new_service_of_each_model_failing_its_first_gate_is_stopped(tmp_path):
    """Exit code 4: no earlier healthy release to go back to. Each new service's unit
    (and socket) is stopped rather than left restarting behind an active unit, the run
    names each, and the host's other services keep serving through the front."""
    services = scenario_services()
    by_name = {service["name"]: service for service in services}
    for name, (like, off) in NEW.items():
        new = dict(by_name[like], name=name, env={"VERSION": "1", "HELLO_FAIL": "500"})
        if new["model"] == "podman":
            new["ports"] = [f"{8000 + off}:8000"]
        else:
            new["listen"] = [f"0.0.0.0:{8000 + off}"]
        services.append(new)
    extra = tmp_path / "new.json"
    extra.write_text(json.dumps({"procslice_services": services}))
    run, took, tallies = deploy_under_load("-e", f"@{extra}")
    output = run.stdout + run.stderr
    nothing_failed_through_the_front("new failing services", took, tallies)
    assert run.returncode != 0, output[-4000:]
    task = "Fail for the services that did not pass their health gate"
    assert said(output, f'{CANARY}: "{task}" failed'), output[-4000:]
    for name in NEW:
        unit = f"procslice-{name}"
        assert said(output, f"{unit} failed its health gate and has no earlier healthy release"), (
            name,
            output[-6000:],
        )
        # the unit and its socket (podman: none) are stopped: no connection starts it
        states = on(CANARY, f"systemctl show -P ActiveState {unit}.service {unit}.socket").split()
        assert states[0] in ("inactive", "failed"), (name, states)
        assert "active" not in states and "activating" not in states, (name, states)
        restarts = on(CANARY, f"systemctl show -P NRestarts {unit}.service")
        time.sleep(2)
        assert on(CANARY, f"systemctl show -P NRestarts {unit}.service") == restarts, name
    for name in SERVICES:
        assert version(CANARY, name) == GOOD[name], name


KILL_POINTS = {
    # the canary builds a release's virtualenv
    "building": (
        "ls -d /srv/procslice/gate-wsgi/releases/*/venv 2>/dev/null"
        ' | while read -r venv; do [ -e "${venv%venv}.complete" ] || echo building; done'
        " | grep -q building"
    ),
    # every release is built and staged (current.next), no unit touched yet
    "staged": "[ -L /srv/procslice/gate-swoole/current.next ]",
    # procslice-activate is switching and reloading gate-wsgi
    "activating": "pgrep -f 'procslice/activate [p]rocslice-gate-wsgi' >/dev/null",
    # the health gate of gate-aio is running
    "gating": "pgrep -f '[p]ython3 - http[^ ]* [0-9.]+ procslice-gate-aio.service' >/dev/null",
}
PACKAGED = [name for name, (_, _, package) in SERVICES.items() if package]


def version_data(tmp_path: Path, package_version: str) -> Path:
    """The scenario's data with its Python apps at another package version."""
    services = scenario_services()
    for service in services:
        package = SERVICES[service["name"]][2]
        if package is None:
            continue
        copy = tmp_path / f"{package}-{package_version}"
        if not copy.exists():
            shutil.copytree(REPO / "examples" / package, copy)
            pyproject = copy / "pyproject.toml"
            text = pyproject.read_text()
            pyproject.write_text(
                text.replace('version = "1.0.0"', f'version = "{package_version}"')
            )
            # new content every time: the canary builds this release, never reuses one
            (copy / package / "_built.py").write_text(f"AT = {time.time_ns()}\n")
        service["package"] = {"source": str(copy)}
    extra = tmp_path / f"version-{package_version}.json"
    extra.write_text(json.dumps({"procslice_services": services}))
    return extra


def served_release(host: str, name: str) -> tuple[str, set[str], bool]:
    """The package version of the release `current` points at, the versions the
    service answers (8 requests: every worker has its say), and whether that release
    is complete."""
    package = SERVICES[name][2]
    current = f"/srv/procslice/{name}/current"
    info = on(host, f"ls -d {current}/venv/lib/python3*/site-packages/{package}-*.dist-info")
    found = re.search(r"-([^-/]+)\.dist-info$", info)
    installed = found.group(1) if found else f"none ({info})"
    complete = on(host, f"[ -e {current}/.complete ] && echo yes") == "yes"
    answers = {version(host, name).split()[-1] for _ in range(8)}
    return installed, answers, complete


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_deploy_killed_at_any_step_leaves_whole_releases_and_the_next_run_converges(
    tmp_path, point
):
    """SIGKILL to the controller's process group at one step of a code change on the
    canary. After it every host serves one complete release (the one its current link
    names, and only that one), the next run converges and the one after is a no-op."""
    index = list(KILL_POINTS).index(point)
    old, new = ("1.0.0" if index == 0 else f"1.0.{index}"), f"1.0.{index + 1}"
    extra = version_data(tmp_path, new)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    deploy = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            *("-i", str(INVENTORY), "-i", str(SCENARIO_VARS)),
            *("deploy.yml", "-e", f"@{extra}"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # One shell in the canary waits for the step (no round trip a poll).
    waited = subprocess.run(
        [
            "podman",
            "exec",
            CANARY,
            "timeout",
            "600",
            "sh",
            "-c",
            f"until {{ {KILL_POINTS[point]}; }}; do sleep 0.05; done",
        ],
        capture_output=True,
        text=True,
    )
    os.killpg(deploy.pid, signal.SIGKILL)
    deploy.wait()
    assert waited.returncode == 0, f"the deploy never reached {point}: {waited.stderr}"
    time.sleep(5)  # what the host was doing when the controller died ends or dies
    for host in HOSTS:
        for name in PACKAGED:
            installed, answers, complete = served_release(host, name)
            assert complete, (point, host, name, "current is not a complete release")
            assert answers == {installed}, (point, host, name, installed, answers)
            # Before any unit was touched the old release runs; later, either one.
            early = point in ("building", "staged")
            assert installed in ((old,) if early else (old, new)), (point, host, name, installed)
    started = time.monotonic()
    rerun = playbook("deploy.yml", "-e", f"@{extra}")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    print(f"killed while {point}; the next run converged in {time.monotonic() - started:.0f}s")
    for host in HOSTS:
        for name in PACKAGED:
            installed, answers, complete = served_release(host, name)
            assert complete and installed == new and answers == {new}, (host, name, answers)
            assert on(host, f"ls /srv/procslice/{name}/current.next 2>&1").endswith(
                "No such file or directory"
            ), (host, name)
    again = playbook("deploy.yml", "-e", f"@{extra}")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert all(row["changed"] == 0 for row in recap(again.stdout).values()), again.stdout[-3000:]


def test_the_good_data_puts_every_service_back_and_the_next_run_is_a_noop(tmp_path):
    """The scenario's own data again (the new services of the exit-4 case removed):
    every service of both hosts answers it and is back in the front's rotation."""
    services = scenario_services()
    by_name = {service["name"]: service for service in services}
    for name, (like, _) in NEW.items():
        services.append(dict(by_name[like], name=name, state="absent"))
    extra = tmp_path / "good.json"
    extra.write_text(json.dumps({"procslice_services": services}))
    run, took, tallies = deploy_under_load("-e", f"@{extra}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    nothing_failed_through_the_front("the good data again", took, tallies)
    assert set(front_servers().values()) == {"UP"}, front_servers()
    for host in HOSTS:
        for name in SERVICES:
            assert version(host, name) == GOOD[name], (host, name)
        for name in NEW:
            assert on(host, f"systemctl show -P LoadState procslice-{name}.service") == "not-found"
    again = playbook("deploy.yml", "-e", f"@{extra}")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert all(row["changed"] == 0 for row in recap(again.stdout).values()), again.stdout[-3000:]
