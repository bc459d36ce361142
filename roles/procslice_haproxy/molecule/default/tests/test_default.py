"""procslice_haproxy on a real systemd host: real traffic through haproxy to two backends.

b1 and b2 stand for two fleet hosts (127.0.0.2 and 127.0.0.3, port 8101); haproxy
listens on :8100. Failed requests are counted by keepalive-client (prepare.yml): one
persistent HTTP/1.1 connection, requests back to back, no retry of its own.
"""

from __future__ import annotations

import json
import shlex
import time

CTL = "/usr/local/lib/procslice/haproxy-ctl"
URL = "http://127.0.0.1:8100/"


def journal(host, unit: str = "haproxy.service") -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n 40 -o cat").stdout


def client(host, seconds: float, *steps: tuple[float, str]) -> dict:
    """Run the keep-alive client for `seconds`, running each (at, command) step meanwhile."""
    args = " ".join(f"--at {at} {shlex.quote(cmd)}" for at, cmd in steps)
    out = host.check_output(f"keepalive-client {URL} --seconds {seconds} {args}")
    result = json.loads(out)
    print(
        f"{sum(result['ok'].values())} answered {result['ok']}, "
        f"{result['total_failed']} failed {result['failed']}, "
        f"{result['reconnects']} reconnects"
    )
    return result


def servers(host) -> dict[str, str]:
    """Server name -> status, from haproxy-ctl show."""
    lines = host.check_output(f"{CTL} show").splitlines()[1:]
    return {line.split()[1]: line.split()[2] for line in lines}


def wait_for_status(host, server: str, status: str, timeout: float = 15) -> None:
    deadline = time.time() + timeout
    while servers(host).get(server) != status:
        assert time.time() < deadline, f"{server} not {status}: {host.check_output(f'{CTL} show')}"
        time.sleep(0.3)


def worker_pid(host) -> str:
    """The pid of the haproxy worker answering the admin socket (`show info`)."""
    code = (
        "import socket\n"
        "s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
        "s.sendall(b'show info\\n'); print(s.makefile().read())"
    )
    info = host.check_output(f"python3 -c {shlex.quote(code)}")
    return next(line.split(": ")[1] for line in info.splitlines() if line.startswith("Pid:"))


def test_configuration_is_valid_and_haproxy_is_active(host):
    check = host.run("haproxy -c -f /etc/haproxy/haproxy.cfg")
    assert check.rc == 0, check.stdout + check.stderr
    haproxy = host.service("haproxy.service")
    assert haproxy.is_running, journal(host)
    assert haproxy.is_enabled
    cfg = host.file("/etc/haproxy/haproxy.cfg")
    assert cfg.content_string.startswith("#")  # ansible_managed
    assert (cfg.user, cfg.group, cfg.mode) == ("root", "haproxy", 0o640)


def test_every_server_starts_up(host):
    assert servers(host) == {"b1": "UP", "b2": "UP"}, host.check_output(f"{CTL} show")


def test_requests_reach_both_backends_on_one_connection(host):
    result = client(host, 2)
    assert result["total_failed"] == 0
    assert result["reconnects"] == 0
    assert set(result["ok"]) == {"b1", "b2"}
    # roundrobin, each request balanced on its own even on one kept-alive connection
    assert abs(result["ok"]["b1"] - result["ok"]["b2"]) <= 2


def test_drain_sends_new_requests_elsewhere_and_ready_brings_the_host_back(host):
    drained = host.run(f"{CTL} drain b1 --wait 10")
    try:
        assert drained.rc == 0, drained.stderr
        assert "drained b1 in web" in drained.stdout
        assert servers(host)["b1"] == "DRAIN"
        assert set(client(host, 1)["ok"]) == {"b2"}
    finally:
        ready = host.run(f"{CTL} ready b1 --wait 10")
    assert ready.rc == 0, ready.stderr
    assert "ready b1 in web: UP" in ready.stdout
    assert servers(host)["b1"] == "UP"
    assert set(client(host, 1)["ok"]) == {"b1", "b2"}


def test_drain_only_takes_the_named_backends_out(host):
    # --only names the services about to restart: a backend not named keeps the server.
    other = host.run(f"{CTL} drain b1 --only api,admin --wait 5")
    assert other.rc == 0, other.stderr
    assert "drained b1 in no backend" in other.stdout
    assert servers(host)["b1"] == "UP"
    assert set(client(host, 1)["ok"]) == {"b1", "b2"}
    named = host.run(f"{CTL} drain b1 --only web --wait 5")
    try:
        assert named.rc == 0, named.stderr
        assert servers(host)["b1"] == "DRAIN"
        assert set(client(host, 1)["ok"]) == {"b2"}
    finally:
        host.check_output(f"{CTL} ready b1 --only web --wait 10")
    assert servers(host)["b1"] == "UP"


def test_drain_refuses_to_take_the_last_server_out(host):
    host.check_output(f"{CTL} drain b1")
    try:
        refused = host.run(f"{CTL} drain b2")
        assert refused.rc == 4
        assert "refusing to drain b2: it is the last server taking requests" in refused.stderr
        assert servers(host)["b2"] == "UP"
    finally:
        host.check_output(f"{CTL} ready b1")


def test_unknown_server_is_named_with_the_known_ones(host):
    result = host.run(f"{CTL} drain b9")
    assert result.rc == 2
    assert "no backend has a server named 'b9' (servers: b1, b2)" in result.stderr


def test_ready_waits_for_a_health_check_passed_after_it(host):
    # b2 drained, its service stopped: right after the stop haproxy may still hold b2 as
    # UP from its last check; ready must not take that for an answer.
    host.check_output(f"{CTL} drain b2")
    host.check_output("systemctl stop testbackend-b2.service")
    try:
        result = host.run(f"{CTL} ready b2 --wait 4")
        assert result.rc == 3, result.stdout
        assert "b2 is back in rotation but not UP after 4 s (web: DOWN" in result.stderr
        assert "Connection refused" in result.stderr
    finally:
        host.check_output("systemctl start testbackend-b2.service")
        wait_for_status(host, "b2", "UP")


def test_restart_of_a_drained_host_fails_no_request(host):
    # A rollout on one host: drain, restart its service, ready; the client keeps going.
    result = client(
        host,
        8,
        (1, f"{CTL} drain b1 --wait 10"),
        (2, "systemctl restart testbackend-b1.service"),
        (3, f"{CTL} ready b1 --wait 10"),
    )
    assert [step["rc"] for step in result["steps"]] == [0, 0, 0], result["steps"]
    assert result["total_failed"] == 0, result["failed"]
    assert set(result["ok"]) == {"b1", "b2"}
    assert servers(host)["b1"] == "UP"


def test_stopped_backend_is_taken_out_and_costs_no_request(host):
    # No drain: b2 stops under traffic; retries and the health check keep every request.
    result = client(
        host,
        9,
        (1, "systemctl stop testbackend-b2.service"),
        (4, f"{CTL} show"),
        (4.5, "systemctl start testbackend-b2.service"),
    )
    show = result["steps"][1]["out"]
    assert " DOWN " in next(line for line in show.splitlines() if " b2 " in line), show
    assert result["total_failed"] == 0, result["failed"]
    wait_for_status(host, "b2", "UP")
    assert set(client(host, 1)["ok"]) == {"b1", "b2"}


def test_reload_under_keep_alive_load_fails_no_request(host):
    main_pid = host.check_output("systemctl show -P MainPID haproxy.service")
    # Each reload waits for its new worker to take the admin socket before the next one:
    # signals sent to a master still re-executing from the last one can be merged (seen on
    # a loaded machine: 3 reloads, 2 new workers), and then a reload here would test nothing.
    show_pid = shlex.quote(
        "import socket\n"
        "s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
        "s.sendall(b'show info\\n')\n"
        "print(next(l for l in s.makefile() if l.startswith('Pid:')))"
    )
    reload = (
        f"before=$(python3 -c {show_pid}); systemctl reload haproxy.service || exit 1; "
        f"for i in $(seq 150); do now=$(python3 -c {show_pid} 2>/dev/null); "
        '[ -n "$now" ] && [ "$now" != "$before" ] && exit 0; sleep 0.1; done; '
        "echo no new worker after 15s; exit 1"
    )
    result = client(host, 10, (1, reload), (3, reload), (5, reload))
    assert [step["rc"] for step in result["steps"]] == [0, 0, 0], result["steps"]
    assert result["total_failed"] == 0, result["failed"]
    # Each reload's old worker answered the next request with "Connection: close".
    assert result["reconnects"] >= 3
    assert host.check_output("systemctl show -P MainPID haproxy.service") == main_pid


def test_a_drained_server_stays_drained_across_a_reload(host):
    host.check_output(f"{CTL} drain b1")
    try:
        before = worker_pid(host)
        host.check_output("systemctl reload haproxy.service")
        deadline = time.time() + 15
        while worker_pid(host) == before:
            assert time.time() < deadline, "no new haproxy worker after the reload"
            time.sleep(0.3)
        assert servers(host) == {"b1": "DRAIN", "b2": "UP"}
    finally:
        host.check_output(f"{CTL} ready b1")


def test_entry_points_drain_and_ready(host):
    # side_effect.yml: drain without a front host did nothing; with one, b1 was drained,
    # then made ready.
    def status(name: str, server: str) -> str:
        show = host.file(f"/root/show-{name}.txt").content_string
        return next(line.split()[2] for line in show.splitlines() if line.split()[1] == server)

    assert status("nofront", "b2") == "UP"
    assert status("drained", "b1") == "DRAIN"
    assert status("ready", "b1") == "UP"


def test_haproxy_runs_sandboxed(host):
    main_pid = host.check_output("systemctl show -P MainPID haproxy.service")
    status = host.file(f"/proc/{main_pid}/status").content_string
    assert "NoNewPrivs:\t1" in status
    assert "Seccomp:\t2" in status
    capabilities = int(
        next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16
    )
    assert not capabilities & (1 << 21), "CAP_SYS_ADMIN is in the bounding set"
    workers = host.check_output(f"pgrep -P {main_pid}").split()
    for pid in workers:
        assert host.check_output(f"ps -o user= -p {pid}") == "haproxy"
        assert host.check_output(f"readlink /proc/{pid}/root") == "/var/lib/haproxy"
    exposure = host.check_output("systemd-analyze security haproxy.service --no-pager")
    score = float(exposure.splitlines()[-1].split("level for haproxy.service:")[1].split()[0])
    print(f"systemd-analyze security haproxy.service: {score}")
    assert score <= 3.5
