"""procslice_slices on a real systemd host: limits rendered, and enforced by the kernel."""

from __future__ import annotations

import re
import shlex

import pytest

MIB = 1024 * 1024


def run_in_slice(host, slice_name: str, code: str, timeout: int = 60):
    """Run python code as a transient unit in the slice; return the command result."""
    return host.run(
        f"timeout {timeout} systemd-run --quiet --pipe --wait --collect --slice={slice_name} "
        f"python3 -c {shlex.quote(code)}"
    )


def cgroup(host, controller: str, unit: str) -> str:
    path = host.check_output("systemctl show -P ControlGroup %s", unit)
    return f"/sys/fs/cgroup/{controller}{path}"


@pytest.mark.parametrize(
    "unit,expected",
    [
        ("procslice-mem.slice", {"MemoryMax": str(64 * MIB)}),
        ("procslice-tasks.slice", {"TasksMax": "20"}),
        ("procslice-cpu.slice", {"CPUQuotaPerSecUSec": "200ms"}),
        (
            "procslice-compose.slice",
            {
                "CPUQuotaPerSecUSec": "500ms",
                "MemoryMax": str(96 * MIB),
                "TasksMax": "30",
                "MemoryLow": str(32 * MIB),
                "CPUWeight": "25",
                "IOReadBandwidthMax": f"/dev/null {10 * MIB}",
            },
        ),
    ],
)
def test_slice_properties_are_set(host, unit, expected):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {unit} " + " ".join(f"-p {k}" for k in expected)
        ).splitlines()
    )
    assert props == expected
    assert host.service(unit).is_running


def test_slices_nest_inside_procslice_slice(host):
    assert host.check_output("systemctl show -P Slice procslice-mem.slice") == "procslice.slice"


# A parent that survives its child: the child allocates past the slice's MemoryMax and
# is killed; the parent then reads the kernel's OOM-kill counter of their cgroup (v1
# memory.oom_control counts in the victim's own cgroup, v2 memory.events too).
OOM_PROBE = """
import os, re
pid = os.fork()
if pid == 0:
    b = []
    for i in range(40):
        b.append(bytearray(10 * 2**20)); b[-1][::4096] = b"x" * (len(b[-1]) // 4096)
    os._exit(0)
_, status = os.waitpid(pid, 0)
lines = open("/proc/self/cgroup").read().splitlines()
v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
root, path, name = (
    ("/sys/fs/cgroup/memory", v1[0], "memory.oom_control") if v1
    else ("/sys/fs/cgroup", [l.split(":", 2)[2] for l in lines if l.startswith("0::")][0],
          "memory.events")
)
# the path as this mount shows it: the one whose cgroup.procs lists this process
parts = path.strip("/").split("/")
for i in range(len(parts) + 1):
    where = "/".join([root] + parts[i:])
    procs = where + "/cgroup.procs"
    if os.path.exists(procs) and str(os.getpid()) in open(procs).read().split():
        break
text = open(where + "/" + name).read()
signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
print(signal, re.search(r"oom_kill (\\d+)", text).group(1))
"""


def test_memory_hog_in_slice_is_oom_killed(host):
    # 400 MiB into a 64 MiB slice: the kernel's OOM killer ends the child (SIGKILL) and
    # counts it.
    result = run_in_slice(host, "procslice-mem.slice", OOM_PROBE)
    assert result.rc == 0, result.stdout + result.stderr
    signal, kills = (int(word) for word in result.stdout.split())
    assert (signal, kills >= 1) == (9, True), result.stdout


def test_fork_past_tasks_max_fails(host):
    forker = (
        "import os,time,sys\nn=0\n"
        "try:\n"
        "  for i in range(60):\n"
        "    if os.fork()==0:\n      time.sleep(5); os._exit(0)\n"
        "    n+=1\n"
        "except OSError as e:\n  print('forked', n, 'then', e.strerror); sys.exit(0)\n"
        "print('forked', n)\n"
    )
    result = run_in_slice(host, "procslice-tasks.slice", forker)
    assert "then Resource temporarily unavailable" in result.stdout, result.stdout
    forked = int(result.stdout.split()[1])
    assert forked < 20


CPU_PROBE = """
import os, time
lines = [l.split(":", 2) for l in open("/proc/self/cgroup").read().splitlines()]
def find(root, path):
    # the cgroup as this mount shows it: the one whose cgroup.procs lists this process
    parts = path.strip("/").split("/")
    for i in range(len(parts) + 1):
        where = "/".join([root] + parts[i:]).rstrip("/")
        procs = where + "/cgroup.procs"
        if os.path.exists(procs) and str(os.getpid()) in open(procs).read().split():
            return where
    raise SystemExit("no cgroup lists this process under " + root)
def of(controller):
    return [l[2] for l in lines if controller in l[1].split(",")]
v1 = bool(of("cpu"))
cpu = find("/sys/fs/cgroup/cpu", of("cpu")[0]) if v1 else find("/sys/fs/cgroup", of("")[0])
acct = find("/sys/fs/cgroup/cpuacct", of("cpuacct")[0]) if v1 else cpu
def read():
    stat = dict(line.split() for line in open(cpu + "/cpu.stat"))
    usage = (int(open(acct + "/cpuacct.usage").read()) / 1e9 if v1
             else int(dict(line.split() for line in open(acct + "/cpu.stat"))["usage_usec"]) / 1e6)
    return int(stat["nr_throttled"]), usage
(t0, u0), start = read(), time.time()
while time.time() - start < 3:
    pass
(t1, u1), wall = read(), time.time() - start
print(t1 - t0, (u1 - u0) / wall)
"""


def test_cpu_hog_is_throttled_to_quota(host):
    # A busy loop for 3 s in a slice with CPUQuota=20%: the kernel's counters of the
    # hog's cgroup show it throttled (nr_throttled grew) and its CPU time over the
    # window at most the quota plus 20% (0.24 s per second; unthrottled: 1). Below the
    # quota is what a busy machine gives it (make test runs three scenarios on 2 cores:
    # 0.129 s per second was seen), so the floor only says the hog ran.
    result = run_in_slice(host, "procslice-cpu.slice", CPU_PROBE)
    assert result.rc == 0, result.stdout + result.stderr
    throttled, share = result.stdout.split()
    assert int(throttled) > 0, result.stdout
    assert 0.05 <= float(share) <= 0.24, f"{float(share):.3f} s of CPU per second under 20%"


IO_DEVICE = "/dev/procslice-io"  # a loop device, attached by prepare.yml


def direct_write(host, slice_name: str) -> float:
    """Bytes per second of 4 MiB written with O_DIRECT to the loop device from a
    transient unit in the slice (dd's own count and time: the page cache would hide
    the throttle, and cgroup v1 throttles only direct writes)."""
    result = host.run(
        f"timeout 60 systemd-run --quiet --pipe --wait --collect --slice={slice_name} "
        f"dd if=/dev/zero of={IO_DEVICE} bs=64k count=64 oflag=direct"
    )
    assert result.rc == 0, result.stdout + result.stderr
    match = re.search(r"^(\d+) bytes .* copied, ([\d.]+) s", result.stderr, re.MULTILINE)
    assert match, result.stderr
    assert int(match.group(1)) == 4 * MIB, result.stderr
    return int(match.group(1)) / float(match.group(2))


def test_io_write_bandwidth_is_throttled_on_a_block_device(host):
    unavailable = host.run("cat /run/procslice-io-unavailable")
    if unavailable.rc == 0:
        pytest.skip(f"no block device to throttle in this test host: {unavailable.stdout.strip()}")
    # The same write outside the slice: the device itself is fast, so what slows the
    # write in the slice is the slice's limit.
    free = direct_write(host, "system.slice")
    throttled = direct_write(host, "procslice-io.slice")
    print(f"O_DIRECT writes: {free / MIB:.1f} MiB/s outside, {throttled / MIB:.2f} in the slice")
    assert throttled <= 1.5 * MIB, f"{throttled / MIB:.2f} MiB/s under IOWriteBandwidthMax=1M"
    assert free >= 4 * MIB, f"the loop device writes only {free / MIB:.2f} MiB/s unthrottled"
    assert host.check_output("systemctl show -P IOWriteBandwidthMax procslice-io.slice") == (
        f"{IO_DEVICE} {MIB}"
    )


def test_limit_change_applies_live_without_restart(host):
    before = host.file("/root/sleeper.pid").content_string.strip()
    assert host.check_output("systemctl show -P MainPID sleeper.service") == before
    limit = host.file(cgroup(host, "memory", "procslice-live.slice") + "/memory.limit_in_bytes")
    assert int(limit.content_string) == 200 * MIB
    assert host.check_output("systemctl show -P MemoryMax procslice-live.slice") == str(200 * MIB)
