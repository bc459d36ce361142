"""Tests for procslice.limits and the ``procslice limits`` subcommand, on fake sysfs trees."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from procslice import cli_limits
from procslice.limits import (
    Budget,
    cpu_affinity_map,
    memory_limit_per_worker,
    parse_size,
    read_budget,
    workers_for,
)

from .fakesys import FakeSys, fake_sys

GIB = 1024**3
MIB = 1024**2
V1_UNLIMITED = "9223372036854771712"
SERVICE = "/system.slice/app.service"


def budget(**overrides: object) -> Budget:
    """An unlimited 4-CPU budget with ``overrides`` applied."""
    base = Budget(
        host_cpus=4,
        affinity_cpus=4,
        quota_cpus=None,
        cpus=4.0,
        allowed_cpus=(0, 1, 2, 3),
        memory_max=None,
        memory_high=None,
        memory_budget=None,
        tasks_max=None,
        cgroup_version=2,
        cgroup_path="/",
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def read(fs: FakeSys, **kwargs: object) -> Budget:
    return read_budget(root=str(fs.root), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def fs(tmp_path: Path) -> FakeSys:
    return fake_sys(tmp_path, online="0-1")


# --------------------------------------------------------------------------- no limits


def test_v2_without_limits_reports_host_cpus_and_no_limits(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg("", SERVICE, {"cpu.max": "max 100000", "memory.max": "max", "pids.max": "max"})
    b = read(fs)
    assert b.cgroup_version == 2
    assert b.cgroup_path == SERVICE
    assert (b.host_cpus, b.affinity_cpus, b.quota_cpus, b.cpus) == (2, 2, None, 2.0)
    assert (b.memory_max, b.memory_high, b.memory_budget, b.tasks_max) == (None,) * 4


def test_v1_without_limits_reports_host_cpus_and_no_limits(fs: FakeSys) -> None:
    fs.v1(SERVICE)
    fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"})
    fs.cg("memory", SERVICE, {"memory.limit_in_bytes": V1_UNLIMITED})
    fs.cg("pids", SERVICE, {"pids.max": "max"})
    b = read(fs)
    assert b.cgroup_version == 1
    assert b.cgroup_path == SERVICE
    assert (b.quota_cpus, b.cpus, b.memory_max, b.memory_high, b.tasks_max) == (
        None,
        2.0,
        None,
        None,
        None,
    )


def test_v1_unlimited_memory_sentinel_is_none_at_every_level(fs: FakeSys) -> None:
    fs.v1(SERVICE)
    fs.cg("memory", "", {"memory.limit_in_bytes": V1_UNLIMITED})
    fs.cg("memory", "system.slice", {"memory.limit_in_bytes": str(2**62)})
    fs.cg("memory", SERVICE, {"memory.limit_in_bytes": V1_UNLIMITED})
    assert read(fs).memory_max is None
    assert read(fs).memory_budget is None


# --------------------------------------------------------------------------- CPU quota


def test_v2_quota_below_one_cpu_is_fractional(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg("", SERVICE, {"cpu.max": "50000 100000"})
    b = read(fs)
    assert b.quota_cpus == 0.5
    assert b.cpus == 0.5
    assert workers_for(b, "gunicorn") == 3
    assert workers_for(b, "aio") == 1


def test_v1_quota_below_one_cpu_is_fractional(fs: FakeSys) -> None:
    fs.v1(SERVICE)
    fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_quota_us": "25000", "cpu.cfs_period_us": "100000"})
    b = read(fs)
    assert b.quota_cpus == 0.25
    assert b.cpus == 0.25


def test_quota_150_percent_on_two_cpus(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg("", SERVICE, {"cpu.max": "150000 100000"})
    b = read(fs)
    assert (b.host_cpus, b.quota_cpus, b.cpus) == (2, 1.5, 1.5)
    assert workers_for(b, "gunicorn") == 5  # ceil(1.5) = 2 -> 2*2+1
    assert workers_for(b, "swoole") == 2


def test_quota_above_host_cpus_is_capped_by_host(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg("", SERVICE, {"cpu.max": "400000 100000"})
    b = read(fs)
    assert b.quota_cpus == 4.0
    assert b.cpus == 2.0


# --------------------------------------------------------------------------- nesting


def test_v2_nested_parent_slice_tighter_than_child_wins(fs: FakeSys) -> None:
    fs.v2("/app.slice/web.slice/web@1.service")
    fs.cg("", "app.slice", {"cpu.max": "100000 100000", "memory.max": str(GIB), "pids.max": "64"})
    fs.cg("", "app.slice/web.slice", {"cpu.max": "max 100000", "memory.max": "max"})
    fs.cg(
        "",
        "app.slice/web.slice/web@1.service",
        {"cpu.max": "150000 100000", "memory.max": str(2 * GIB), "pids.max": "1000"},
    )
    b = read(fs)
    assert b.quota_cpus == 1.0
    assert b.memory_max == GIB
    assert b.tasks_max == 64


def test_v1_nested_parent_slice_tighter_than_child_wins(fs: FakeSys) -> None:
    service = "/app.slice/web.service"
    fs.v1(service)
    fs.cg("cpu,cpuacct", "app.slice", {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"})
    fs.cg("cpu,cpuacct", service, {"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000"})
    fs.cg("memory", "app.slice", {"memory.limit_in_bytes": str(512 * MIB)})
    fs.cg("memory", service, {"memory.limit_in_bytes": V1_UNLIMITED})
    fs.cg("pids", "app.slice", {"pids.max": "32"})
    fs.cg("pids", service, {"pids.max": "max"})
    b = read(fs)
    assert (b.quota_cpus, b.memory_max, b.memory_budget, b.tasks_max) == (
        0.5,
        512 * MIB,
        512 * MIB,
        32,
    )


def test_v1_different_paths_per_controller(fs: FakeSys) -> None:
    fs.v1("/", paths={"memory": "/process_api/abc"})
    fs.cg("memory", "process_api/abc", {"memory.limit_in_bytes": str(300 * MIB)})
    b = read(fs)
    assert b.memory_max == 300 * MIB
    assert b.cgroup_path == "/"  # the v1 cpu controller's path


# --------------------------------------------------------------------------- affinity / cpuset


def test_affinity_narrower_than_quota_wins(tmp_path: Path) -> None:
    fs = fake_sys(tmp_path, online="0-7").v2(SERVICE)
    fs.cg("", SERVICE, {"cpu.max": "400000 100000", "cpuset.cpus.effective": "0-5"})
    b = read(fs, affinity=[2, 3])
    assert (b.host_cpus, b.affinity_cpus, b.quota_cpus, b.cpus) == (8, 2, 4.0, 2.0)
    assert b.allowed_cpus == (2, 3)
    assert workers_for(b, "gunicorn") == 5


def test_fake_root_affinity_defaults_to_host_cpus(tmp_path: Path) -> None:
    fs = fake_sys(tmp_path, online="0-3,8-11").v2("/")
    b = read(fs)
    assert b.host_cpus == 8
    assert b.affinity_cpus == 8
    assert b.allowed_cpus == ()  # no cpuset file and no known affinity


def test_v1_cpuset_intersected_with_affinity(tmp_path: Path) -> None:
    fs = fake_sys(tmp_path, online="0-7").v1(SERVICE)
    fs.cg("cpuset", "", {"cpuset.cpus": "0-7"})
    fs.cg("cpuset", SERVICE, {"cpuset.cpus": "4-7"})
    assert read(fs).allowed_cpus == (4, 5, 6, 7)
    assert read(fs, affinity=[1, 5, 6]).allowed_cpus == (5, 6)


# --------------------------------------------------------------------------- odd files


def test_max_values_mean_unlimited(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg(
        "",
        SERVICE,
        {"cpu.max": "max 100000", "memory.max": "max", "memory.high": "max", "pids.max": "max"},
    )
    b = read(fs)
    assert (b.quota_cpus, b.memory_max, b.memory_high, b.memory_budget, b.tasks_max) == (None,) * 5


@pytest.mark.parametrize(
    "garbage",
    ["", "banana", "-5", "1.5", "100000 0", "0 100000", "1 2 3", "\x00\x01", "12abc 100000"],
)
def test_garbage_in_limit_files_means_no_limit_at_that_level(fs: FakeSys, garbage: str) -> None:
    fs.v2(SERVICE)
    fs.cg("", "system.slice", {"memory.max": str(GIB)})
    fs.cg(
        "",
        SERVICE,
        {
            "cpu.max": garbage,
            "memory.max": garbage,
            "memory.high": garbage,
            "pids.max": garbage,
            "cpuset.cpus.effective": garbage,
        },
    )
    b = read(fs)
    assert (b.quota_cpus, b.memory_high, b.tasks_max) == (None, None, None)
    assert b.memory_max == GIB  # the parent's limit still counts
    assert b.cpus == 2.0


def test_non_utf8_bytes_in_a_file_are_ignored(fs: FakeSys) -> None:
    fs.v1(SERVICE)
    directory = fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_period_us": "100000"})
    (directory / "cpu.cfs_quota_us").write_bytes(b"\xff\xfe50000")
    assert read(fs).quota_cpus is None


def test_unreadable_limit_file_means_no_limit(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    directory = fs.cg("", SERVICE, {"memory.high": str(GIB)})
    (directory / "memory.max").mkdir()  # reading it raises IsADirectoryError
    b = read(fs)
    assert b.memory_max is None
    assert b.memory_high == GIB


def test_missing_proc_and_sys_files_give_version_0_and_no_limits(tmp_path: Path) -> None:
    b = read_budget(root=str(tmp_path))  # completely empty tree
    assert b.cgroup_version == 0
    assert b.cgroup_path == ""
    assert b.host_cpus >= 1  # falls back to os.cpu_count()
    assert b.cpus == float(b.host_cpus)
    assert (b.quota_cpus, b.memory_max, b.memory_budget, b.tasks_max) == (None,) * 4


def test_missing_limit_files_mean_no_limit(fs: FakeSys) -> None:
    fs.v1(SERVICE)  # directories exist, but no limit files in them
    fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_quota_us": "50000"})  # period missing
    b = read(fs)
    assert b.cgroup_version == 1
    assert (b.quota_cpus, b.memory_max, b.tasks_max) == (None, None, None)


def test_garbage_proc_files_do_not_crash(fs: FakeSys) -> None:
    fs.write("proc/self/cgroup", "nonsense\n::\n7:cpu:relative/path\n")
    fs.write("proc/self/mountinfo", "garbage line\n1 2 3\n- cgroup2\n")
    b = read(fs)
    assert b.cgroup_version == 0
    assert b.cpus == 2.0


# --------------------------------------------------------------------------- memory.high


def test_v2_memory_high_tighter_than_memory_max_sets_the_budget(fs: FakeSys) -> None:
    fs.v2(SERVICE)
    fs.cg("", SERVICE, {"memory.max": str(2 * GIB), "memory.high": str(GIB + GIB // 2)})
    b = read(fs)
    assert b.memory_max == 2 * GIB
    assert b.memory_high == GIB + GIB // 2
    assert b.memory_budget == GIB + GIB // 2


def test_v1_has_no_memory_high(fs: FakeSys) -> None:
    fs.v1(SERVICE)
    fs.cg("memory", SERVICE, {"memory.limit_in_bytes": str(GIB), "memory.high": str(MIB)})
    b = read(fs)
    assert (b.memory_max, b.memory_high, b.memory_budget) == (GIB, None, GIB)


# --------------------------------------------------------------------------- layouts


def test_hybrid_layout_uses_v1_controllers_not_the_empty_unified_mount(fs: FakeSys) -> None:
    fs.v1(SERVICE, unified=True)
    fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"})
    fs.cg("memory", SERVICE, {"memory.limit_in_bytes": str(GIB)})
    # Decoys in the unified hierarchy must not be read: v1 owns these controllers.
    fs.cg("unified", SERVICE, {"cpu.max": "10000 100000", "memory.max": str(MIB)})
    b = read(fs)
    assert b.cgroup_version == 1
    assert b.cgroup_path == SERVICE
    assert (b.quota_cpus, b.memory_max) == (1.0, GIB)
    assert workers_for(b, "gunicorn") == 3  # 100% quota on a 2-core host: 3, not 5


def test_hybrid_controller_missing_from_v1_is_read_from_unified(fs: FakeSys) -> None:
    fs.v1(SERVICE, hierarchies=("cpu,cpuacct", "memory"), unified=True)
    fs.cg("unified", SERVICE, {"pids.max": "100"})
    b = read(fs)
    assert b.cgroup_version == 1
    assert b.tasks_max == 100


def test_container_mountinfo_root_subpath_maps_to_the_mount_point(fs: FakeSys) -> None:
    container = "/docker/0123abcd"
    fs.v1(container, mount_root=container)
    # The mount point *is* the container's cgroup; a limit file above it must not be read.
    fs.cg("cpu,cpuacct", "", {"cpu.cfs_quota_us": "200000", "cpu.cfs_period_us": "100000"})
    fs.cg("memory", "", {"memory.limit_in_bytes": str(768 * MIB)})
    fs.write("sys/fs/cgroup/memory.limit_in_bytes", str(MIB))
    fs.write("sys/fs/cgroup/memory/docker/0123abcd/memory.limit_in_bytes", str(MIB))
    b = read(fs)
    assert b.cgroup_path == container
    assert (b.quota_cpus, b.memory_max) == (2.0, 768 * MIB)


def test_container_subcgroup_below_mount_root_is_walked_up_to_the_mount_point(
    fs: FakeSys,
) -> None:
    fs.v2("/kubepods/pod1/ctr/app", mount_root="/kubepods/pod1/ctr")
    fs.cg("", "", {"memory.max": str(GIB)})
    fs.cg("", "app", {"memory.max": str(2 * GIB), "cpu.max": "50000 100000"})
    b = read(fs)
    assert (b.memory_max, b.quota_cpus) == (GIB, 0.5)


def test_cgroup_path_missing_under_mount_falls_back_to_mount_root(fs: FakeSys) -> None:
    fs.v2("/does/not/exist.service")
    fs.cg("", "elsewhere", {"memory.max": str(MIB), "cpu.max": "1000 100000"})
    b = read(fs)
    assert b.cgroup_version == 2
    assert (b.memory_max, b.quota_cpus, b.cpus) == (None, None, 2.0)


def test_cgroup_path_outside_namespace_falls_back_to_mount_root(fs: FakeSys) -> None:
    fs.v1("/../../outside", unified=False)
    fs.cg("memory", "", {"memory.limit_in_bytes": str(GIB)})
    fs.cg("memory", "outside", {"memory.limit_in_bytes": str(MIB)})
    assert read(fs).memory_max == GIB


def test_mountinfo_octal_escaped_mount_point(fs: FakeSys) -> None:
    fs.cgroup_lines.append("0::/")
    fs.mount_lines.append("30 24 0:26 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw")
    fs.flush()
    fs.write("sys/fs/my cgroup/pids.max", "10\n")
    assert read(fs).tasks_max == 10


# --------------------------------------------------------------------------- workers_for


@pytest.mark.parametrize(
    ("cpus", "gunicorn", "aio"),
    [(0.5, 3, 1), (1.0, 3, 1), (1.5, 5, 2), (2.0, 5, 2), (4.0, 9, 4), (2.0000000001, 5, 2)],
)
def test_workers_for_cpu_formula(cpus: float, gunicorn: int, aio: int) -> None:
    b = budget(cpus=cpus)
    assert workers_for(b, "gunicorn") == gunicorn
    assert workers_for(b, "aio") == aio
    assert workers_for(b, "swoole") == aio


def test_workers_for_memory_cap() -> None:
    b = budget(cpus=8.0, memory_max=GIB, memory_budget=GIB)
    # gunicorn leaves half a share for the master: (1024 - 128) // 256 = 3
    assert workers_for(b, "gunicorn", per_worker_memory=256 * MIB) == 3
    assert workers_for(b, "aio", per_worker_memory=256 * MIB) == 4
    assert workers_for(b, "aio", per_worker_memory=300 * MIB) == 3
    # a worker bigger than the whole budget still gets one worker
    assert workers_for(b, "gunicorn", per_worker_memory=4 * GIB) == 1
    assert workers_for(b, "aio", per_worker_memory=4 * GIB) == 1
    # no per-worker size, or no budget: no memory cap
    assert workers_for(b, "gunicorn") == 17
    assert workers_for(budget(cpus=8.0), "gunicorn", per_worker_memory=GIB) == 17


def test_workers_for_tasks_cap() -> None:
    assert workers_for(budget(cpus=8.0, tasks_max=10), "gunicorn") == 6
    assert workers_for(budget(cpus=8.0, tasks_max=10), "aio") == 6
    assert workers_for(budget(cpus=8.0, tasks_max=3), "gunicorn") == 1
    assert workers_for(budget(cpus=2.0, tasks_max=100), "gunicorn") == 5


def test_workers_for_memory_and_tasks_caps_combine() -> None:
    b = budget(cpus=16.0, memory_high=2 * GIB, memory_budget=2 * GIB, tasks_max=9)
    assert workers_for(b, "gunicorn", per_worker_memory=256 * MIB) == 5  # tasks: 9-4
    assert workers_for(b, "gunicorn", per_worker_memory=512 * MIB) == 3  # memory: 1792M//512M


def test_workers_for_clamps_to_minimum_and_maximum() -> None:
    b = budget(cpus=4.0, tasks_max=5)
    assert workers_for(b, "gunicorn") == 1
    assert workers_for(b, "gunicorn", minimum=3) == 3
    assert workers_for(budget(cpus=4.0), "gunicorn", maximum=4) == 4
    assert workers_for(budget(cpus=4.0), "aio", minimum=2, maximum=2) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "uwsgi"},
        {"model": "gunicorn", "per_worker_memory": 0},
        {"model": "gunicorn", "minimum": 0},
        {"model": "gunicorn", "minimum": 4, "maximum": 2},
    ],
)
def test_workers_for_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        workers_for(budget(), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- per worker


def test_memory_limit_per_worker() -> None:
    b = budget(memory_max=GIB, memory_budget=GIB)
    assert memory_limit_per_worker(b, 3) == (GIB * 9 // 10) // 4  # 241591910
    assert memory_limit_per_worker(b, 3, headroom=1.0) == GIB // 4
    assert memory_limit_per_worker(b, 0) == int(GIB * 0.9)
    assert memory_limit_per_worker(budget(), 3) is None


# --------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("0", 0),
        ("512M", 512 * MIB),
        ("2G", 2 * GIB),
        ("1.5g", GIB + GIB // 2),
        ("64MiB", 64 * MIB),
        ("64mb", 64 * MIB),
        ("100K", 102400),
        ("1T", 1024**4),
        (" 256 M ", 256 * MIB),
        ("10B", 10),
        (".5k", 512),
        ("512Mi", 512 * MIB),
        ("2P", 2 * 1024**5),
    ],
)
def test_parse_size_accepts_human_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["2 gigs", "", "   ", "-1G", "G", "1.2.3M", "1X", "1ib", "1 M B", "1e6", "nan", "1.5"]
)
def test_parse_size_rejects_garbage_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a .*; write bytes or a number with K, M, G, T"):
        parse_size(text)


# --------------------------------------------------------------------------- affinity map


def test_cpu_affinity_map_round_robins_over_allowed_cpus() -> None:
    b = budget(allowed_cpus=(2, 5, 7))
    assert cpu_affinity_map(b, 5) == [(2,), (5,), (7,), (2,), (5,)]
    assert cpu_affinity_map(b, 0) == []


def test_cpu_affinity_map_falls_back_to_host_cpus() -> None:
    b = budget(host_cpus=2, allowed_cpus=())
    assert cpu_affinity_map(b, 3) == [(0,), (1,), (0,)]


# --------------------------------------------------------------------------- as_dict / CLI


def test_as_dict_is_json_serialisable() -> None:
    data = budget(allowed_cpus=(0, 1)).as_dict()
    assert data["allowed_cpus"] == [0, 1]
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {f.name for f in dataclasses.fields(Budget)}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="procslice")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_limits.add_parser(subparsers)
    return parser.parse_args(argv)


def test_cli_json_output_for_a_fake_root(fs: FakeSys, capsys: pytest.CaptureFixture[str]) -> None:
    fs.v2(SERVICE)
    fs.cg(
        "",
        SERVICE,
        {"cpu.max": "150000 100000", "memory.max": str(GIB), "cpuset.cpus.effective": "0-1"},
    )
    args = _parse(["limits", "--json", "--root", str(fs.root), "--per-worker-memory", "256M"])
    assert args.func is cli_limits.run
    assert cli_limits.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["quota_cpus"] == 1.5
    assert out["budget"]["cpus"] == 1.5
    assert out["budget"]["memory_budget"] == GIB
    assert out["budget"]["cgroup_version"] == 2
    assert out["budget"]["allowed_cpus"] == [0, 1]
    assert out["per_worker_memory"] == 256 * MIB
    assert set(out["models"]) == {"gunicorn", "aio", "swoole"}
    gunicorn = out["models"]["gunicorn"]
    assert gunicorn["workers"] == 3  # cpu says 5, memory (1024-128)//256 = 3
    assert gunicorn["memory_limit_per_worker"] == (GIB * 9 // 10) // 4
    assert gunicorn["cpu_affinity"] == [[0], [1], [0]]
    assert out["models"]["aio"]["workers"] == 2


def test_cli_model_filter_and_table_output(fs: FakeSys, capsys: pytest.CaptureFixture[str]) -> None:
    fs.v1(SERVICE)
    fs.cg("cpu,cpuacct", SERVICE, {"cpu.cfs_quota_us": "100000", "cpu.cfs_period_us": "100000"})
    assert cli_limits.run(_parse(["limits", "--model", "gunicorn", "--root", str(fs.root)])) == 0
    out = capsys.readouterr().out
    assert "cpu quota" in out and "v1 " + SERVICE in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("gunicorn", "aio"))]
    assert rows == [["gunicorn", "3", "unlimited"]]


def test_cli_rejects_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["limits", "--per-worker-memory", "2 gigs"])
    assert '"2 gigs" is not a size; write bytes' in capsys.readouterr().err
    # a hand-built Namespace with a bad string is reported, not raised
    assert cli_limits.run(argparse.Namespace(per_worker_memory="lots", root="/")) == 2


# --------------------------------------------------------------------------- real machine


def _mounted_cgroup_version() -> int:
    """This machine's cgroup version, read from /proc/self/mountinfo on its own."""
    kinds = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)[1].split()
        mount_point = line.split(" - ", 1)[0].split()[4]
        if fields[0] == "cgroup2" and mount_point == "/sys/fs/cgroup":
            return 2
        kinds.add(fields[0])
    return 1 if "cgroup" in kinds else 2 if "cgroup2" in kinds else 0


def test_read_budget_on_the_real_machine_matches_what_the_kernel_says() -> None:
    """Each figure against another reading of the same fact (os, mountinfo, cpu.max)."""
    b = read_budget()
    affinity = sorted(os.sched_getaffinity(0))
    assert b.host_cpus == os.cpu_count()
    assert b.affinity_cpus == len(affinity)
    assert b.cgroup_version == _mounted_cgroup_version()
    assert set(b.allowed_cpus) <= set(affinity) and b.allowed_cpus, (b.allowed_cpus, affinity)
    expected_cpus = float(len(affinity))
    if b.quota_cpus is not None:
        expected_cpus = min(expected_cpus, b.quota_cpus)
    assert b.cpus == pytest.approx(expected_cpus)
    if b.cgroup_version == 2:
        own = Path("/proc/self/cgroup").read_text().strip().splitlines()[-1].split(":", 2)[2]
        cpu_max = Path("/sys/fs/cgroup", own.lstrip("/"), "cpu.max")
        if cpu_max.is_file() and cpu_max.read_text().split()[0] != "max":
            quota, period = cpu_max.read_text().split()
            assert b.quota_cpus is not None and b.quota_cpus <= int(quota) / int(period)
    assert workers_for(b, "gunicorn") >= 1
    json.dumps(b.as_dict())
