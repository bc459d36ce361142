"""procslice_gunicorn on a real systemd host: served, sized by budget, enforced, hardened."""

from __future__ import annotations

import json
import math
import re
import shlex
import time

import pytest
from unix_socket import (
    answering_parent,
    connect_as,
    health_url,
    listeners,
    status_entry,
    unix_get,
)

SERVICES = {"hello-wsgi": 8000, "hello-asgi": 8001, "hello-gthread": 8002}


def unit(name: str) -> str:
    return f"procslice-{name}.service"


def get(host, port: int, path: str) -> str:
    return host.check_output(f"curl -fsS --max-time 10 http://127.0.0.1:{port}{path}")


def workers(host, name: str) -> list[int]:
    main = host.check_output(f"systemctl show -P MainPID {unit(name)}")
    out = host.run(f"pgrep -P {main}").stdout
    return [int(p) for p in out.split()]


def main_pid(host, name: str) -> str:
    return host.check_output(f"systemctl show -P MainPID {unit(name)}")


def mainpids_before(host) -> dict[str, str]:
    """The main PIDs side_effect.yml recorded before its change."""
    lines = host.file("/root/mainpids").content_string.splitlines()
    return dict(line.split() for line in lines)


def journal(host, name: str) -> str:
    return host.run(f"journalctl -u {unit(name)} --no-pager -n 40").stdout


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_answers_through_its_socket(host, name):
    assert host.service(unit(name)).is_running, journal(host, name)
    assert host.service(unit(name)).is_enabled
    socket = unit(name).replace(".service", ".socket")
    assert host.service(socket).is_running
    assert get(host, SERVICES[name], "/healthz") == "ok"
    props = host.check_output(f"systemctl show -p Type -p Slice -p TriggeredBy {unit(name)}")
    assert "Type=notify" in props
    assert "Slice=procslice-web.slice" in props
    assert f"TriggeredBy={socket}" in props


# ---- hello-unix: a unix socket in listen (unix:PATH), no port ---------------------------

UNIX_SOCKET = "/run/procslice/hello-unix/http.sock"


def test_unix_socket_service_answers_over_its_socket_file(host):
    assert host.service(unit("hello-unix")).is_running, journal(host, "hello-unix")
    assert host.service("procslice-hello-unix.socket").is_running
    code, parent = answering_parent(host, UNIX_SOCKET, "/", "hello-unix")
    assert code == 200
    # Answered by a worker of the unit's main process.
    assert parent == main_pid(host, "hello-unix"), journal(host, "hello-unix")
    assert unix_get(host, UNIX_SOCKET, "/healthz") == (200, "ok")
    # The socket file only: no port.
    listen = host.check_output("systemctl show -P Listen procslice-hello-unix.socket")
    assert listen == f"{UNIX_SOCKET} (Stream)"


def test_unix_socket_file_has_the_owner_group_and_mode_its_keys_say(host):
    # socket_user left out: the service's own user; socket_group adm, socket_mode "0660".
    sock = host.file(UNIX_SOCKET)
    assert sock.is_socket
    assert (sock.user, sock.group, oct(sock.mode)) == ("procslice-hello-unix", "adm", "0o660")
    # Enforced: the socket's owner may connect, a user outside group adm may not.
    assert connect_as(host, "procslice-hello-unix", UNIX_SOCKET).rc == 0
    refused = connect_as(host, "nobody", UNIX_SOCKET)
    assert refused.rc != 0 and "PermissionError" in refused.stderr, refused.stderr


def test_unix_socket_service_is_started_by_a_connection_to_its_socket(host):
    name = "hello-unix"
    triggered_by = host.check_output(f"systemctl show -P TriggeredBy {unit(name)}")
    assert triggered_by == "procslice-hello-unix.socket"
    # systemd (PID 1) holds the listening socket; the main process got it from there.
    main = main_pid(host, name)
    held = listeners(host, UNIX_SOCKET)
    assert "pid=1," in held and f"pid={main}," in held, held
    # Stopped, the service comes back on the next connection, started by its socket.
    host.check_output(f"systemctl stop {unit(name)}")
    assert host.run(f"systemctl is-active {unit(name)}").stdout.strip() == "inactive"
    assert host.service("procslice-hello-unix.socket").is_running
    code, parent = answering_parent(host, UNIX_SOCKET, "/", name)
    assert code == 200, journal(host, name)
    assert host.service(unit(name)).is_running, journal(host, name)
    assert parent == main_pid(host, name) != main


def test_unix_socket_service_passes_its_health_gate_over_the_socket(host):
    url = health_url(UNIX_SOCKET)
    assert url == "http+unix://%2Frun%2Fprocslice%2Fhello-unix%2Fhttp.sock/healthz"
    args = host.file("/var/lib/procslice/applied/procslice-hello-unix.args").content_string
    assert url in args.splitlines(), args
    # The gate on its own: a reload, then 200 three times in a row over the socket.
    gate = host.run(
        "PROCSLICE_AT_LEAST=reload /usr/local/lib/procslice/activate --replay procslice-hello-unix"
    )
    assert (gate.rc, gate.stdout.strip()) == (0, "reloaded"), gate.stderr


def test_unix_socket_service_reported_ok_by_procslice_status(host):
    entry = status_entry(host, "hello-unix")
    assert entry["state"] == "active"
    assert entry["health"]["url"] == health_url(UNIX_SOCKET)
    assert entry["health"]["state"] == "ok", (entry["health"], journal(host, "hello-unix"))


def test_workers_auto_sized_from_the_cpu_quota_not_the_host(host):
    cpus = int(host.check_output("nproc"))
    # What a process in the service's slice sees (a process of the login session would
    # see no quota at all).
    budget = json.loads(
        host.check_output(
            "systemd-run --quiet --pipe --wait --collect --slice=procslice-web.slice "
            "/srv/procslice/hello-wsgi/current/venv/bin/procslice limits --json --model gunicorn"
        )
    )
    # CPUQuota=100% on the slice: one CPU, whatever the host has.
    assert budget["budget"]["quota_cpus"] == pytest.approx(1.0)
    expected = 2 * math.ceil(min(cpus, 1.0)) + 1
    assert len(workers(host, "hello-wsgi")) == expected == 3
    assert expected <= 2 * cpus + 1


def test_fixed_worker_count_is_kept(host):
    assert len(workers(host, "hello-asgi")) == 2
    assert len(workers(host, "hello-gthread")) == 1


def test_unit_limits_are_set(host):
    assert host.check_output(f"systemctl show -P MemoryMax {unit('hello-wsgi')}") == str(
        256 * 2**20
    )
    assert host.check_output(f"systemctl show -P TasksMax {unit('hello-wsgi')}") == "64"
    main = host.check_output(f"systemctl show -P MainPID {unit('hello-wsgi')}")
    limits = host.file(f"/proc/{main}/limits").content_string
    assert re.search(r"Max open files\s+4096\s+4096", limits)


def test_environment_file_is_private(host):
    env = host.file("/etc/procslice/hello-wsgi/env")
    assert env.mode == 0o640
    assert env.group == "procslice-hello-wsgi"


def test_runs_as_its_own_user(host):
    for pid in workers(host, "hello-wsgi"):
        assert host.check_output(f"ps -o user= -p {pid}") == "procslice-hello-wsgi"


def test_hardening_exposure_at_most_2_5(host):
    for name in SERVICES:
        out = host.check_output(f"systemd-analyze security {unit(name)} --no-pager")
        score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
        print(f"{unit(name)}: exposure {score}")
        assert score <= 2.5


def test_code_change_reloads_without_restart(host):
    before = dict(line.split() for line in host.file("/root/mainpids").content_string.splitlines())
    assert (
        host.check_output(f"systemctl show -P MainPID {unit('hello-wsgi')}") == before["hello-wsgi"]
    )
    assert get(host, 8000, "/version") == "1 1.0.1"
    releases = host.check_output("ls /srv/procslice/hello-wsgi/releases").split()
    assert len(releases) == 2


def test_environment_change_restarts(host):
    before = dict(line.split() for line in host.file("/root/mainpids").content_string.splitlines())
    assert (
        host.check_output(f"systemctl show -P MainPID {unit('hello-asgi')}") != before["hello-asgi"]
    )
    assert get(host, 8001, "/version") == "2 1.0.0"


def test_killed_worker_is_replaced(host):
    old = workers(host, "hello-gthread")
    host.run(f"kill -9 {old[0]}")
    deadline = time.time() + 20
    while time.time() < deadline:
        now = workers(host, "hello-gthread")
        if len(now) == 1 and now != old:
            break
        time.sleep(0.5)
    assert len(now) == 1 and now != old
    assert get(host, 8002, "/healthz") == "ok"


def oom_kills(host, name: str) -> int:
    """The kernel's count of OOM kills in the unit's memory cgroup (cgroup v1)."""
    cg = host.check_output(f"systemctl show -P ControlGroup {unit(name)}")
    oom = host.file(f"/sys/fs/cgroup/memory{cg}/memory.oom_control").content_string
    return int(re.search(r"oom_kill (\d+)", oom).group(1))


def test_leaking_worker_is_oom_killed_and_service_keeps_answering(host):
    name = "hello-wsgi"
    kills = oom_kills(host, name)
    # 256M MemoryMax: 30 leaks of 20 MiB spread over the workers pass it.
    for _ in range(30):
        host.run("curl -s --max-time 10 -o /dev/null http://127.0.0.1:8000/leak?mb=20")
    assert oom_kills(host, name) > kills
    assert host.service(unit(name)).is_running
    deadline = time.time() + 20
    while host.run("curl -fsS --max-time 5 http://127.0.0.1:8000/healthz").rc != 0:
        assert time.time() < deadline
        time.sleep(0.5)
    # Leave no leak behind: workers still holding up to MemoryMax would make the next
    # test's reload (new workers forked before the old ones exit) cross MemoryMax, and
    # the kernel would kill the leaky old worker, sometimes under a request.
    host.check_output(f"systemctl restart {unit(name)}")
    while host.run("curl -fsS --max-time 5 http://127.0.0.1:8000/healthz").rc != 0:
        assert time.time() < deadline + 30, journal(host, name)
        time.sleep(0.5)


def test_reload_under_load_fails_no_request(host):
    # A closed-loop client (new connection per request) while the service reloads twice.
    # A failure is reported with when it happened (seconds from the start; the reloads
    # at about 1.5 and 3 s) and what the client saw.
    client = (
        "import http.client,json,time,threading,subprocess\n"
        "ok=0;errors=[];reloads=[];start=time.time()\n"
        "def reload():\n"
        "  for _ in range(2):\n"
        "    time.sleep(1.5); reloads.append(round(time.time()-start,2))\n"
        "    subprocess.run(['systemctl','reload','procslice-hello-wsgi.service'],check=True)\n"
        "t=threading.Thread(target=reload); t.start(); end=start+5\n"
        "while time.time()<end:\n"
        "  sent=round(time.time()-start,3)\n"
        "  try:\n"
        "    c=http.client.HTTPConnection('127.0.0.1',8000,timeout=10); c.request('GET','/')\n"
        "    r=c.getresponse(); r.read(); c.close()\n"
        "    if r.status==200: ok+=1\n"
        "    else: errors.append([sent,f'HTTP {r.status}'])\n"
        "  except Exception as e:\n"
        "    errors.append([sent,repr(e)])\n"
        "t.join(); print(json.dumps({'ok':ok,'errors':errors,'reloads':reloads}))\n"
    )
    kills = oom_kills(host, "hello-wsgi")
    result = json.loads(host.check_output(f"python3 -c {shlex.quote(client)}"))
    kills = oom_kills(host, "hello-wsgi") - kills
    ok, errors = result["ok"], result["errors"]
    print(f"reload under load: {ok} answered, {len(errors)} failed, {kills} OOM kills meanwhile")
    assert ok > 100
    assert errors == [], (
        f"{len(errors)} of {ok + len(errors)} failed: {errors[:5]}; reloads at "
        f"{result['reloads']} s; OOM kills in the unit meanwhile: {kills}\n"
        + journal(host, "hello-wsgi")
    )


def test_stop_drains_an_in_flight_request_within_timeout_stop_sec(host):
    # Runs last: it stops hello-gthread. A 3 s request started before the stop completes.
    host.run("rm -f /root/slow.out")
    host.run(
        "nohup sh -c 'curl -sS --max-time 20 http://127.0.0.1:8002/slow?ms=3000 "
        "> /root/slow.out 2>&1' >/dev/null 2>&1 &"
    )
    # The request must be in flight (accepted by a worker) before the stop, not queued.
    deadline = time.time() + 15
    while not host.run("ss -Htn state established '( sport = :8002 )'").stdout.strip():
        assert time.time() < deadline, "the slow request never reached the service"
        time.sleep(0.2)
    time.sleep(0.5)
    started = time.time()
    stop = host.run("systemctl stop procslice-hello-gthread.service")
    took = time.time() - started
    assert stop.rc == 0, stop.stderr
    timeout = host.check_output("systemctl show -P TimeoutStopUSec procslice-hello-gthread.service")
    deadline = time.time() + 10
    while host.file("/root/slow.out").content_string.strip() != "slept":
        assert time.time() < deadline, host.file("/root/slow.out").content_string
        time.sleep(0.3)
    result = host.check_output("systemctl show -P Result procslice-hello-gthread.service")
    print(f"stop took {took:.1f}s (TimeoutStopSec {timeout})")
    assert result == "success"
    assert took < 30


# ---- directories: data that outlives releases (last: it restarts hello-wsgi) ----------


def test_data_directories_are_the_services_own_and_outlive_a_restart(host):
    user = "procslice-hello-wsgi"
    for path in ("/var/lib/procslice/hello-wsgi", "/var/lib/procslice/hello-wsgi/uploads"):
        found = host.file(path)
        assert found.is_directory, path
        assert (found.user, found.group) == (user, user), path
    assert host.file("/var/lib/procslice/hello-wsgi").mode == 0o750
    logs = host.file("/var/log/procslice/hello-wsgi")
    assert logs.is_directory and logs.user == user and logs.mode == 0o750
    # The audit log's folder stays root's.
    assert host.file("/var/log/procslice").user == "root"
    environ = host.check_output(
        f"cat /proc/{main_pid(host, 'hello-wsgi')}/environ | tr '\\0' '\\n'"
    )
    assert "STATE_DIRECTORY=/var/lib/procslice/hello-wsgi" in environ.splitlines()
    assert "LOGS_DIRECTORY=/var/log/procslice/hello-wsgi" in environ.splitlines()
    # The app writes there under ProtectSystem=strict, as its own user, and the data
    # is still there after a restart (and a new release: side_effect.yml made one).
    first = int(get(host, SERVICES["hello-wsgi"], "/visits"))
    assert int(get(host, SERVICES["hello-wsgi"], "/visits")) == first + 1
    visits = host.file("/var/lib/procslice/hello-wsgi/uploads/visits")
    assert visits.user == user
    host.check_output(f"systemctl restart {unit('hello-wsgi')}")
    deadline = time.time() + 30
    while host.run(f"curl -fsS http://127.0.0.1:{SERVICES['hello-wsgi']}/healthz").rc != 0:
        assert time.time() < deadline, journal(host, "hello-wsgi")
        time.sleep(0.5)
    assert int(get(host, SERVICES["hello-wsgi"], "/visits")) == first + 2
    # A service without directories gets none, and cannot write to /var/lib.
    assert not host.file("/var/lib/procslice/hello-asgi").exists
