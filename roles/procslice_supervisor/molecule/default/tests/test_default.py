"""procslice_supervisor on a real systemd host: aio and swoole served through their sockets,
ready only once their workers serve, sized by their slice, recycled, reloaded and stopped
without losing a request, hardened.

Every service assertion prints the unit's journal when it fails.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import UTC, datetime

import pytest
from unix_socket import (
    answering_parent,
    connect_as,
    health_url,
    listeners,
    status_entry,
    unix_get,
)

SERVICES = {"hello-aio": ("aio", 8002), "hello-swoole": ("swoole", 8003)}
VENV = "/srv/procslice/{name}/current/venv"
MiB = 1024 * 1024


def unit(name: str) -> str:
    return f"procslice-{name}.service"


def journal(host, name: str, lines: int = 60) -> str:
    out = host.run(f"journalctl -u {unit(name)} --no-pager -n {lines}").stdout
    return f"\n--- journalctl -u {unit(name)} ---\n{out}"


def prop(host, name: str, key: str) -> str:
    return host.check_output(f"systemctl show -P {key} {unit(name)}")


def workers(host, name: str) -> list[int]:
    # one round trip: each host call costs about a second through Ansible
    out = host.run(f"pgrep -P $(systemctl show -P MainPID {unit(name)})").stdout
    return sorted(int(pid) for pid in out.split())


def get(host, port: int, path: str) -> str:
    return host.check_output(f"curl -fsS --max-time 30 http://127.0.0.1:{port}{path}")


def py(host, code: str) -> str:
    """Run a Python snippet on the host; its stdout."""
    return host.check_output(f"python3 -c {shlex.quote(code)}")


def limits(host, name: str, model: str, *props: str) -> dict:
    """`procslice limits --json` as a process of the service's slice sees it."""
    extra = " ".join(f"-p {p}" for p in props)
    out = host.check_output(
        "systemd-run --quiet --pipe --wait --collect --slice=procslice-web.slice "
        f"{extra} {VENV.format(name=name)}/bin/procslice limits --json --model {model}"
    )
    return json.loads(out)


def wait_for(predicate, timeout: float = 20.0, step: float = 1.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---- served through socket activation ---------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_answers_through_its_socket(host, name):
    model, port = SERVICES[name]
    service = host.service(unit(name))
    assert service.is_running, journal(host, name)
    assert service.is_enabled
    socket = unit(name).replace(".service", ".socket")
    assert host.service(socket).is_running
    assert get(host, port, "/healthz") == "ok", journal(host, name)
    props = host.check_output(
        "systemctl show -p Type -p NotifyAccess -p WatchdogUSec -p KillMode -p Slice "
        f"-p TriggeredBy -p Restart -p RestartPreventExitStatus -p ExecStart {unit(name)}"
    )
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogUSec=30s",
        "KillMode=mixed",
        "Slice=procslice-web.slice",
        f"TriggeredBy={socket}",
        "Restart=on-failure",
        "RestartPreventExitStatus=2 3 4",
        f"procslice {model} --config /etc/procslice/{name}/procslice.toml",
    ):
        assert expected in props, props


def test_stopped_service_is_started_by_a_connection_to_its_socket(host):
    name = "hello-aio"
    host.run_expect([0], f"systemctl stop {unit(name)}")
    assert not host.service(unit(name)).is_running
    # systemd still holds the listening socket: the connection waits in its queue
    # while the service starts, and is answered.
    assert get(host, 8002, "/healthz") == "ok", journal(host, name)
    assert host.service(unit(name)).is_running, journal(host, name)


# ---- hello-aio-unix: a unix socket in listen (unix:PATH), no port -----------------------

UNIX_SOCKET = "/run/procslice/hello-aio-unix/http.sock"


def test_unix_socket_service_answers_over_its_socket_file(host):
    name = "hello-aio-unix"
    assert host.service(unit(name)).is_running, journal(host, name)
    code, parent = answering_parent(host, UNIX_SOCKET, "/whoami", name)
    assert code == 200
    # Answered by a worker of the unit's main process.
    assert parent == prop(host, name, "MainPID"), journal(host, name)
    assert unix_get(host, UNIX_SOCKET, "/healthz") == (200, "ok")
    listen = host.check_output("systemctl show -P Listen procslice-hello-aio-unix.socket")
    assert listen == f"{UNIX_SOCKET} (Stream)"


def test_unix_socket_file_has_the_owner_group_and_mode_its_keys_say(host):
    # socket_user www-data, socket_group left out (the service's own), socket_mode "0600".
    sock = host.file(UNIX_SOCKET)
    assert sock.is_socket
    assert (sock.user, sock.group, oct(sock.mode)) == (
        "www-data",
        "procslice-hello-aio-unix",
        "0o600",
    )
    # Enforced: the owner may connect, the service's own user (group, no g+w) may not.
    assert connect_as(host, "www-data", UNIX_SOCKET).rc == 0
    refused = connect_as(host, "procslice-hello-aio-unix", UNIX_SOCKET)
    assert refused.rc != 0 and "PermissionError" in refused.stderr, refused.stderr


def test_unix_socket_service_is_started_by_a_connection_to_its_socket(host):
    name = "hello-aio-unix"
    assert prop(host, name, "TriggeredBy") == "procslice-hello-aio-unix.socket"
    main = prop(host, name, "MainPID")
    held = listeners(host, UNIX_SOCKET)
    assert "pid=1," in held and f"pid={main}," in held, held
    host.run_expect([0], f"systemctl stop {unit(name)}")
    assert prop(host, name, "ActiveState") == "inactive"
    assert host.service("procslice-hello-aio-unix.socket").is_running
    code, parent = answering_parent(host, UNIX_SOCKET, "/whoami", name)
    assert code == 200, journal(host, name)
    assert host.service(unit(name)).is_running, journal(host, name)
    assert parent == prop(host, name, "MainPID") != main


def test_unix_socket_service_passes_its_health_gate_over_the_socket(host):
    url = health_url(UNIX_SOCKET)
    args = host.file("/var/lib/procslice/applied/procslice-hello-aio-unix.args").content_string
    assert url in args.splitlines(), args
    # The gate on its own: a reload, then 200 three times in a row over the socket.
    gate = host.run(
        "PROCSLICE_AT_LEAST=reload /usr/local/lib/procslice/activate "
        "--replay procslice-hello-aio-unix"
    )
    assert (gate.rc, gate.stdout.strip()) == (0, "reloaded"), gate.stderr + journal(
        host, "hello-aio-unix"
    )


def test_unix_socket_service_reported_ok_by_procslice_status(host):
    entry = status_entry(host, "hello-aio-unix")
    assert entry["state"] == "active"
    assert entry["health"]["url"] == health_url(UNIX_SOCKET)
    assert entry["health"]["state"] == "ok", (entry["health"], journal(host, "hello-aio-unix"))


# ---- READY, STATUS and sizing --------------------------------------------------------


def _log_time(line: str) -> datetime:
    # the runtime's log lines start with "%Y-%m-%d %H:%M:%S,mmm" in the host's time (UTC)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.replace(tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_ready_comes_only_after_every_worker_serves(host, name):
    assert host.check_output("date +%Z") == "UTC"
    invocation = prop(host, name, "InvocationID")
    lines = host.check_output(
        f"journalctl _SYSTEMD_INVOCATION_ID={invocation} -o cat --no-pager"
    ).splitlines()
    ready = next(
        (i for i, line in enumerate(lines) if "INFO procslice.master: ready: " in line), None
    )
    assert ready is not None, journal(host, name)
    count = int(re.search(r"ready: (\d+) worker", lines[ready]).group(1))
    serving = [
        line
        for line in lines[:ready]
        if re.search(r"\[master\] INFO procslice\.master: worker \d+ \(pid \d+\) serving$", line)
    ]
    assert len(serving) == count >= 1, journal(host, name)
    # The master logs each worker serving before it sends READY=1; systemd marks the
    # unit active when READY=1 arrives: every "serving" precedes the activation.
    active = host.check_output(
        f"systemctl show -P ActiveEnterTimestamp --timestamp=us+utc {unit(name)}"
    )
    active_at = datetime.strptime(active, "%a %Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=UTC)
    for line in serving:
        assert _log_time(line) <= active_at, (line, active, journal(host, name))
    # StatusText is the runtime's STATUS= line
    status = prop(host, name, "StatusText")
    print(f"{unit(name)}: StatusText={status!r}, active at {active}")
    assert re.match(rf"^workers {count}/{count} up", status), (status, journal(host, name))


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_workers_auto_sized_from_the_slice_cpu_quota_not_the_host(host, name):
    model, _ = SERVICES[name]
    cpus = int(host.check_output("nproc"))
    seen = limits(host, name, model)
    print(f"{name}: host cpus {cpus}, procslice limits in the slice: {json.dumps(seen)}")
    # CPUQuota=100% on the slice: one CPU, whatever the host has.
    assert seen["budget"]["quota_cpus"] == pytest.approx(1.0)
    expected = seen["models"][model]["workers"]
    assert expected == 1
    assert len(workers(host, name)) == expected, journal(host, name)
    assert cpus >= 2, "the host should have more CPUs than the slice's quota"


def test_swoole_memory_limit_auto_is_its_share_of_memory_max(host):
    name = "hello-swoole"
    assert prop(host, name, "MemoryMax") == str(192 * MiB)
    # What a process with the service's MemoryMax in the same slice is told.
    plan = limits(host, name, "swoole", "MemoryMax=192M")["models"]["swoole"]
    expected = plan["memory_limit_per_worker"] / MiB
    out = host.check_output(f"journalctl -u {unit(name)} -o cat --no-pager")
    found = re.findall(r"memory_limit: recycling workers above ([0-9.]+) MiB RSS", out)
    assert found, journal(host, name)
    print(f"{name}: memory_limit auto = {found[-1]} MiB (expected {expected:.1f} MiB)")
    assert float(found[-1]) == pytest.approx(expected, abs=0.1)
    assert 60 < expected < 96


def cpus_allowed(host, name: str) -> list[str]:
    """Cpus_allowed_list of each worker of the service."""
    out = host.check_output(
        f"for p in $(pgrep -P $(systemctl show -P MainPID {unit(name)})); do "
        "grep Cpus_allowed_list: /proc/$p/status; done"
    )
    return [line.split()[-1] for line in out.splitlines()]


def test_swoole_pins_its_workers_and_aio_does_not(host):
    pinned = cpus_allowed(host, "hello-swoole")
    assert pinned and all(re.fullmatch(r"\d+", cpus) for cpus in pinned), pinned
    assert cpus_allowed(host, "hello-aio") == ["0-1"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_runs_as_its_own_user(host, name):
    main = prop(host, name, "MainPID")
    users = host.check_output(f"ps -o user= -p {main} --ppid {main}").split()
    assert len(users) >= 2 and set(users) == {f"procslice-{name}"}, users


def test_swoole_metrics_served_on_loopback_only(host):
    body = get(host, 9003, "/metrics")
    assert "procslice_workers 1.0" in body, body
    assert host.socket("tcp://127.0.0.1:9003").is_listening
    assert not host.socket("tcp://0.0.0.0:9003").is_listening


# ---- recycling, crashes, reloads and stops -------------------------------------------

# A keep-alive client: THREADS persistent connections each send PATH in a loop for
# SECONDS (PAUSE between requests) while ACTION runs; prints "ok bad". A connection
# the server closed (Connection: close after a drain) is reopened by http.client.
CLIENT = """
import http.client, subprocess, threading, time
ok = bad = 0
lock = threading.Lock()
errors = []
def client(path, end):
    global ok, bad
    conn = http.client.HTTPConnection("127.0.0.1", {port}, timeout=30)
    while time.time() < end:
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            good = response.status == 200
        except Exception as exc:
            good = False
            errors.append(repr(exc))
            conn.close()
        with lock:
            ok += good
            bad += not good
        time.sleep({pause})
def action():
{action}
end = time.time() + {seconds}
threads = [threading.Thread(target=client, args=(p, end)) for p in {paths!r}]
threads.append(threading.Thread(target=action))
for t in threads: t.start()
for t in threads: t.join()
print(ok, bad, errors[:3])
"""


def run_client(host, port, paths, seconds, action="    pass", pause=0.0):
    code = CLIENT.format(port=port, paths=paths, seconds=seconds, action=action, pause=pause)
    out = py(host, code)
    ok, bad, errors = out.split(" ", 2)
    return int(ok), int(bad), errors


def oom_kills(host, name: str) -> int:
    cgroup = prop(host, name, "ControlGroup")
    text = host.file(f"/sys/fs/cgroup/memory{cgroup}/memory.oom_control").content_string
    return int(re.search(r"oom_kill (\d+)", text).group(1))


def test_swoole_recycles_a_leaking_worker_before_the_oom_killer_and_fails_no_request(host):
    name, port = "hello-swoole", 8003
    before_pids = workers(host, name)
    main = prop(host, name, "MainPID")
    kills = oom_kills(host, name)
    # 40 leaks of 6 MiB (240 MiB) through one keep-alive connection: far past
    # MemoryMax=192M if nothing recycled the worker; /healthz polled beside it.
    ok, bad, errors = run_client(
        host, port, ["/leak?mb=6", "/healthz", "/healthz"], seconds=12, pause=0.25
    )
    print(f"leak under swoole: {ok} answered, {bad} failed {errors}")
    log = host.check_output(f"journalctl -u {unit(name)} -o cat --no-pager")
    assert "crossed memory_limit" in log, journal(host, name)
    assert bad == 0, journal(host, name)
    assert ok > 60
    assert oom_kills(host, name) == kills, journal(host, name)
    assert prop(host, name, "MainPID") == main
    after = workers(host, name)
    assert len(after) == 1 and after != before_pids, journal(host, name)
    assert get(host, port, "/healthz") == "ok"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_reload_under_keep_alive_load_fails_no_request(host, name):
    _, port = SERVICES[name]
    main = prop(host, name, "MainPID")
    before = workers(host, name)
    action = (
        "    for _ in range(2):\n"
        "        time.sleep(1.5)\n"
        f"        subprocess.run(['systemctl', 'reload', '{unit(name)}'], check=True)\n"
    )
    ok, bad, errors = run_client(host, port, ["/"] * 4, seconds=6, action=action)
    print(f"{name}: reload under keep-alive load: {ok} answered, {bad} failed {errors}")
    assert bad == 0, journal(host, name)
    assert ok > 200, journal(host, name)
    assert prop(host, name, "MainPID") == main, journal(host, name)
    after = workers(host, name)
    assert after and not set(after) & set(before), journal(host, name)
    assert host.service(unit(name)).is_running


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_worker_killed_with_sigkill_is_replaced(host, name):
    _, port = SERVICES[name]
    old = workers(host, name)
    main = prop(host, name, "MainPID")
    host.run_expect([0], f"kill -9 {old[0]}")
    replaced = wait_for(lambda: len(workers(host, name)) == len(old) and workers(host, name) != old)
    assert replaced, journal(host, name)
    assert prop(host, name, "MainPID") == main
    assert get(host, port, "/healthz") == "ok"
    log = host.check_output(f"journalctl -u {unit(name)} -o cat --no-pager -n 50")
    assert f"(pid {old[0]}) was killed by SIGKILL: possible OOM kill" in log, journal(host, name)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_stop_drains_a_slow_request_within_timeout_stop_sec(host, name):
    _, port = SERVICES[name]
    timeout = float(prop(host, name, "TimeoutStopUSec").rstrip("s"))
    script = (
        f"curl -s -o /tmp/slow.body -w '%{{http_code}}' --max-time 30 "
        f"http://127.0.0.1:{port}/slow?ms=3000 > /tmp/slow.code & "
        "sleep 0.5; start=$(date +%s.%N); "
        f"systemctl stop {unit(name)}; "
        "end=$(date +%s.%N); wait; "
        'echo "$(cat /tmp/slow.code) $(cat /tmp/slow.body) $(echo "$end - $start" | '
        "python3 -c 'import sys; print(eval(sys.stdin.read()))')\""
    )
    code, body, took = host.check_output(script).split()
    result = prop(host, name, "Result")
    print(
        f"{name}: stop took {float(took):.2f} s (TimeoutStopSec {timeout:g} s), slow request {code}"
    )
    try:
        assert (code, body) == ("200", "slept"), journal(host, name)
        assert result == "success", journal(host, name)
        assert float(took) < timeout
        assert float(took) >= 2.0  # it waited for the request in flight
    finally:
        host.run(f"systemctl start {unit(name)}")
    assert host.service(unit(name)).is_running, journal(host, name)


# ---- hardening -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_hardening_exposure_at_most_2_5(host, name):
    out = host.check_output(f"systemd-analyze security {unit(name)} --no-pager")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"{unit(name)}: exposure {score}")
    assert score <= 2.5
