"""procslice_podman on a real systemd host: served, replaced, limited, enforced, stopped."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

UNIT = "procslice-demo.service"
CONTAINER = "procslice-demo"
PORT = 8004
MEMORY = 96 * 2**20
PIDS = 48
# The unit's limits are the container's plus podman's headroom (src/procslice/data/
# vocabulary.py PODMAN_UNIT_*_HEADROOM): what the app meets is the container's own limit.
UNIT_MEMORY = MEMORY + 64 * 2**20
UNIT_PIDS = PIDS + 32


def journal(host) -> str:
    return host.run(f"journalctl -u {UNIT} --no-pager -n 40").stdout


def get(host, path: str, timeout: int = 10):
    return host.run(f"curl -fsS --max-time {timeout} http://127.0.0.1:{PORT}{path}")


def containers(host) -> list[str]:
    out = host.check_output("podman ps -a --no-trunc --format '{{.ID}} {{.Names}}'")
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] == [CONTAINER]]


def inspect(host) -> dict:
    return json.loads(host.check_output(f"podman inspect {CONTAINER}"))[0]


def wait_healthy(host, seconds: int = 30) -> None:
    deadline = time.time() + seconds
    while get(host, "/healthz", 3).rc != 0:
        assert time.time() < deadline, journal(host)
        time.sleep(0.5)


def test_service_answers_on_its_published_port(host):
    assert host.service(UNIT).is_running, journal(host)
    assert host.service(UNIT).is_enabled
    answer = get(host, "/healthz")
    assert answer.rc == 0 and answer.stdout.strip() == "ok", journal(host)
    props = host.check_output(f"systemctl show -p Type -p Slice -p NotifyAccess {UNIT}")
    assert "Type=notify" in props and "NotifyAccess=all" in props
    assert "Slice=procslice-web.slice" in props


def test_the_exporter_passes_the_images_own_metrics_on_labelled_with_the_service(host):
    # metrics_listen: where the image's app serves /metrics (one of its published ports).
    wait_healthy(host)
    unit = host.check_output("systemctl cat prometheus-procslice-exporter.service")
    assert f"--runtime-metrics demo=127.0.0.1:{PORT}" in unit

    def served() -> float:
        text = host.check_output("curl -fsS --max-time 10 http://127.0.0.1:9100/metrics")
        line = re.search(
            r'^procslice_http_requests_total\{(?=[^}]*service="demo")(?=[^}]*code="2xx")'
            r'(?=[^}]*method="GET")[^}]*\} (\S+)$',
            text,
            re.M,
        )
        assert line, [ln for ln in text.splitlines() if "demo" in ln][:20]
        return float(line.group(1))

    before = served()
    for _ in range(5):
        assert get(host, "/").rc == 0
    # (the exporter collects at most once a second)
    deadline = time.time() + 10
    while served() < before + 5:
        assert time.time() < deadline, (before, served())
        time.sleep(0.5)
    # `procslice status` reads the same address from the exporter's unit: a rate (0/s
    # when nothing came in during its 1 s sample, but counted), no 5xx.
    report = json.loads(host.check_output("/usr/local/bin/procslice status --json"))
    (demo,) = [s for s in report["services"] if s["service"] == "demo"]
    assert demo["requests"]["per_second"] is not None, demo["requests"]
    assert demo["requests"]["error_ratio"] in (0.0, None), demo["requests"]


def test_podman_uses_runc_and_the_procslice_configuration(host):
    conf = host.file("/etc/containers/containers.conf.d/50-procslice.conf")
    assert conf.exists and 'runtime = "runc"' in conf.content_string
    assert host.check_output("podman info --format '{{.Host.OCIRuntime.Name}}'") == "runc"
    for package in ("podman", "runc"):
        assert host.package(package).is_installed


def test_plain_unit_on_podman_before_4_5(host):
    version = host.check_output("podman version --format '{{.Client.Version}}'")
    assert tuple(int(p) for p in version.split(".")[:2]) < (4, 5)
    unit = host.file(f"/etc/systemd/system/{UNIT}").content_string
    assert not host.file("/etc/containers/systemd/procslice-demo.container").exists
    flags = ("--rm", "--replace", "--cgroups=split", "--sdnotify=conmon", "--name=procslice-demo")
    for flag in flags:
        assert f"\t{flag} \\" in unit
    assert host.file(f"/etc/systemd/system/{UNIT}.d/50-limits.conf").exists


def test_redeploy_replaced_the_container(host):
    before = host.file("/root/container-before").content_string.strip()
    now = containers(host)
    assert len(now) == 1, now
    assert now[0] != before
    assert get(host, "/env?name=VERSION").stdout.strip() == "2"
    assert get(host, "/").stdout.startswith("procslice demo 2 ")


def test_environment_file_is_private(host):
    env = host.file("/etc/procslice/demo/env")
    assert env.mode == 0o640 and env.user == "root" and env.group == "root"
    assert "VERSION=2" in env.content_string.splitlines()


def test_image_loaded_from_the_archive(host):
    recorded = host.file("/etc/procslice/demo/image-id").content_string.split()
    assert recorded[0] == "localhost/procslice-demo:1"
    assert inspect(host)["Image"] == recorded[1]
    assert host.file("/var/lib/procslice/images/demo.tar.gz").mode == 0o600


def test_container_cgroup_is_inside_the_slice(host):
    pid = inspect(host)["State"]["Pid"]
    cgroups = host.file(f"/proc/{pid}/cgroup").content_string
    memory = next(line for line in cgroups.splitlines() if ":memory:" in line)
    assert "/procslice.slice/procslice-web.slice/procslice-demo.service/" in memory, cgroups


def container_cgroup(host, controller: str) -> str:
    """The container's own cgroup directory for a v1 controller (below the unit's)."""
    pid = inspect(host)["State"]["Pid"]
    lines = host.file(f"/proc/{pid}/cgroup").content_string.splitlines()
    path = next(line.split(":", 2)[2] for line in lines if line.split(":")[1] == controller)
    return f"/sys/fs/cgroup/{controller}{path}"


def unit_cgroup(host, controller: str) -> str:
    return f"/sys/fs/cgroup/{controller}" + host.check_output(
        f"systemctl show -P ControlGroup {UNIT}"
    )


def test_the_kernel_holds_the_container_to_tighter_limits_than_its_unit(host):
    # Read from the kernel, not from podman or systemd: the container's cgroup has the
    # container's limits, the unit's cgroup around it the larger ones.
    assert container_cgroup(host, "memory") != unit_cgroup(host, "memory")
    assert (
        int(host.file(container_cgroup(host, "memory") + "/memory.limit_in_bytes").content_string)
        == MEMORY
    )
    assert (
        int(host.file(unit_cgroup(host, "memory") + "/memory.limit_in_bytes").content_string)
        == UNIT_MEMORY
    )
    assert host.file(container_cgroup(host, "pids") + "/pids.max").content_string.strip() == str(
        PIDS
    )
    assert host.file(unit_cgroup(host, "pids") + "/pids.max").content_string.strip() == str(
        UNIT_PIDS
    )


def test_container_and_unit_limits_come_from_the_same_data(host):
    config = inspect(host)["HostConfig"]
    assert config["Memory"] == MEMORY
    assert config["MemorySwap"] == MEMORY  # memory_swap_max 0: no swap
    assert config["PidsLimit"] == PIDS
    assert config["NanoCpus"] == 500_000_000
    assert config["CpuShares"] == 512
    assert {"Name": "RLIMIT_NOFILE", "Soft": 4096, "Hard": 4096} in config["Ulimits"]
    assert host.check_output(f"systemctl show -P MemoryMax {UNIT}") == str(UNIT_MEMORY)
    assert host.check_output(f"systemctl show -P TasksMax {UNIT}") == str(UNIT_PIDS)
    assert host.check_output(f"systemctl show -P CPUQuotaPerSecUSec {UNIT}") == "500ms"
    pid = inspect(host)["State"]["Pid"]
    limits = host.file(f"/proc/{pid}/limits").content_string
    assert re.search(r"Max open files\s+4096\s+4096", limits)
    status = host.file(f"/proc/{pid}/status").content_string
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE)  # --cap-drop=all


def test_fork_bomb_stops_at_the_pids_limit(host):
    # Below PIDS: the container's --pids-limit stops it (the unit would allow UNIT_PIDS).
    answer = get(host, "/fork?n=500", 30).stdout.strip()
    print(f"fork bomb: {answer}")
    got = int(re.match(r"forked (\d+) of 500", answer).group(1))
    assert 0 < got < PIDS
    assert "Resource temporarily unavailable" in answer
    assert get(host, "/healthz").stdout.strip() == "ok"


def test_leak_past_memory_oom_kills_the_container_and_systemd_restarts_it(host):
    old = containers(host)
    restarts = int(host.check_output(f"systemctl show -P NRestarts {UNIT}"))
    since = host.check_output("date +%s")
    # 5 x 20 MiB and the app's own: past the container's 96 MiB --memory, under the
    # unit's 160 MiB, so only the container's limit can kill it.
    for _ in range(5):
        if get(host, "/leak?mb=20").rc != 0:
            break
    deadline = time.time() + 30
    while int(host.check_output(f"systemctl show -P NRestarts {UNIT}")) == restarts:
        assert time.time() < deadline, journal(host)
        time.sleep(0.5)
    # SIGKILLed by the kernel's OOM killer: podman's record of the container's death
    # with 137 (its events reach the journal a moment later); systemd logs the unit's
    # status=137, or result 'signal' when the killer picked conmon, the memory cgroup's
    # other process.
    deadline = time.time() + 15
    while True:
        died = host.check_output(
            f"podman events --since {since} --until 0s --filter event=died "
            f"--filter container={CONTAINER} --format '{{{{.ContainerExitCode}}}}'"
        )
        if "137" in died.split() or time.time() > deadline:
            break
        time.sleep(1)
    unit_log = host.run(f"journalctl -u {UNIT} --no-pager --since @{since}").stdout
    assert "137" in died.split() or "Failed with result 'signal'" in unit_log, (
        died,
        unit_log[-3000:],
    )
    wait_healthy(host)
    now = containers(host)
    assert len(now) == 1 and now != old


def test_an_attacker_in_the_container_meets_an_unprivileged_uid_no_capability_and_a_read_only_root(
    host,
):
    pid = inspect(host)["State"]["Pid"]
    status = host.file(f"/proc/{pid}/status").content_string
    # The app runs as the image's USER, an unprivileged uid on the host (10001: the
    # host's user namespace, procslice_podman_userns "" by default, see its docs).
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.MULTILINE)
    print(f"the app's uids on the host: {uids.groups()}")
    assert uids.groups() == ("10001",) * 4, uids.group(0)
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert re.search(rf"^{field}:\s+0+$", status, re.MULTILINE), (field, status)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    # A write to / is refused; podman's tmpfs on /tmp takes one.
    write_root = host.run(f"podman exec {CONTAINER} /usr/bin/python3 -c \"open('/x', 'w')\"")
    assert write_root.rc != 0 and "Read-only file system" in write_root.stderr, write_root.stderr
    write_tmp = host.run(f"podman exec {CONTAINER} /usr/bin/python3 -c \"open('/tmp/x', 'w')\"")
    assert write_tmp.rc == 0, write_tmp.stderr
    # Even exec'd as root in the container: no capability, so no chown of a file.
    as_root = host.run(
        f"podman exec --user 0 {CONTAINER} "
        "/usr/bin/python3 -c \"import os; os.chown('/tmp/x', 0, 0)\""
    )
    assert as_root.rc != 0 and "Operation not permitted" in as_root.stderr, as_root.stderr


# The figure the unit reaches (systemd-analyze security, 0 best, 10 worst): each
# directive it cannot set is listed with its reason in templates/podman/.../60-hardening.conf;
# what confines the app is the container (the test above).
# (6.9 with procslice_podman_userns set: runc needs CAP_SYS_PTRACE for the namespace)
EXPOSURE = 6.6


def test_hardening_exposure_is_at_most_the_documented_figure(host):
    out = host.check_output(f"systemd-analyze security {UNIT} --no-pager")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"{UNIT}: exposure {score}")
    assert score <= EXPOSURE, out


def test_restart_under_keep_alive_load_is_measured(host):
    """The podman model's figure for the rollout report: a restart (a new image or
    environment) replaces the container, and the port is closed while it starts. The
    load generator runs on the host's loopback; the failed requests are reported."""
    loadgen = Path(__file__).resolve().parents[5] / "tests" / "molecule_support" / "loadgen.py"
    host.run("rm -f /root/loadgen.py /root/load.json")
    host.run(f"cat > /root/loadgen.py << 'EOF'\n{loadgen.read_text()}\nEOF")
    host.run(
        "nohup python3 /root/loadgen.py --connections 2 --rate 50 --seconds 20 "
        f"podman=127.0.0.1:{PORT}/healthz > /root/load.json 2>/dev/null &"
    )
    time.sleep(4)
    started = time.time()
    host.check_output(f"systemctl restart {UNIT}")
    wait_healthy(host)
    back = time.time() - started
    deadline = time.time() + 40
    while not host.file("/root/load.json").content_string.strip():
        assert time.time() < deadline, "the load generator did not finish"
        time.sleep(1)
    tally = json.loads(host.file("/root/load.json").content_string)["podman"]
    print(
        f"podman restart under keep-alive load: {tally['ok']} answered, {tally['failed']} failed "
        f"({tally['reasons']}), {tally['retried']} retried; healthy again after {back:.1f}s"
    )
    assert tally["ok"] > 100


def test_stop_is_clean_and_within_timeout(host):
    timeout = host.check_output(f"systemctl show -P TimeoutStopUSec {UNIT}")
    start = time.time()
    host.check_output(f"systemctl stop {UNIT}")
    took = time.time() - start
    print(f"systemctl stop took {took:.1f}s (TimeoutStopSec={timeout})")
    assert took < 20
    result = host.check_output(f"systemctl show -P Result {UNIT}")
    assert result == "success", journal(host)
    assert containers(host) == []
    assert host.run(f"curl -s --max-time 2 http://127.0.0.1:{PORT}/healthz").rc != 0
    host.check_output(f"systemctl start {UNIT}")
    wait_healthy(host)
