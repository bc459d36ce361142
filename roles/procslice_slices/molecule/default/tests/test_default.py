"""procslice_slices on a real systemd host: limits rendered, and enforced by the kernel."""

from __future__ import annotations

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


def test_memory_hog_in_slice_is_oom_killed(host):
    hog = (
        "b=[]\n"
        "for i in range(40): b.append(bytearray(10*2**20)); b[-1][::4096]=b'x'*(len(b[-1])//4096)"
    )
    result = run_in_slice(host, "procslice-mem.slice", hog)
    # 400 MiB into a 64 MiB slice: the kernel kills it (SIGKILL, status 137 or 9).
    assert result.rc != 0, result.stdout + result.stderr
    journal = host.check_output("journalctl --no-pager -q -n 50 -o cat")
    assert "oom" in (result.stderr + journal).lower()


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


def test_cpu_hog_is_throttled_to_quota(host):
    burner = (
        "import time,os\nt=time.time()\n"
        "while time.time()-t<3: pass\n"
        "c=os.times(); print(c.user+c.system)"
    )
    result = run_in_slice(host, "procslice-cpu.slice", burner)
    used = float(result.stdout.strip())
    # 3 s of wall time at CPUQuota=20% is about 0.6 s of CPU; unthrottled it would be 3 s.
    assert used < 1.2, f"used {used:.2f}s CPU in 3s under a 20% quota"


def test_limit_change_applies_live_without_restart(host):
    before = host.file("/root/sleeper.pid").content_string.strip()
    assert host.check_output("systemctl show -P MainPID sleeper.service") == before
    limit = host.file(cgroup(host, "memory", "procslice-live.slice") + "/memory.limit_in_bytes")
    assert int(limit.content_string) == 200 * MIB
    assert host.check_output("systemctl show -P MemoryMax procslice-live.slice") == str(200 * MIB)
