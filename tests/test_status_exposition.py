"""The host runtime's shared parts: one cgroup reader (procslice.limits, used by
``procslice status``) and the exporter's exposition (prometheus_client).

The cgroup cases are the ones where status.py's own copy of the reader differed from
limits.py's before they became one: the field count of a mountinfo line, the mount
root's normalisation, and ".." in a cgroup path or a mount root.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from procslice.limits import cgroup_relative, parse_mountinfo, read_budget
from procslice.status import ServiceStatus, prometheus_text
from procslice.status.collection import cgroup_dir

# --------------------------------------------------------------------------- mountinfo


def test_a_mountinfo_line_with_five_fields_before_the_separator_is_not_a_mount() -> None:
    # (status.py took it, reading its mount options as optional fields)
    text = (
        "30 24 0:26 / /sys/fs/cgroup - cgroup2 cgroup2 rw\n"
        "31 24 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert [m.mountpoint for m in parse_mountinfo(text)] == ["/sys/fs/cgroup/unified"]


def test_mountinfo_optional_fields_and_escapes() -> None:
    text = (
        "31 24 0:27 / /sys/fs/cgroup/my\\040tree rw shared:9 master:2 - cgroup cgroup rw,memory\n"
    )
    (mount,) = parse_mountinfo(text)
    assert (mount.mountpoint, mount.version, "memory" in mount.options) == (
        "/sys/fs/cgroup/my tree",
        1,
        True,
    )


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("cgroup_path", "mount_root", "relative"),
    [
        ("/procslice.slice/a.service", "/", "procslice.slice/a.service"),
        ("/", "/", ""),
        ("/docker/abc", "/docker/abc", ""),
        ("/docker/abc/x.service", "/docker/abc", "x.service"),
        # the mount root normalised: a trailing "/", "//" and "." mean nothing
        # (status.py only stripped the ends: "/docker//abc" matched nothing)
        ("/docker/abc/x.service", "/docker//abc/", "x.service"),
        ("/docker/abc/x.service", "/./docker/abc", "x.service"),
        ("//docker/./abc//x.service/", "/docker/abc", "x.service"),
        # outside the mount root
        ("/docker/abcd/x.service", "/docker/abc", None),
        ("/other", "/docker/abc", None),
        # ".." is outside the cgroup namespace (status.py joined it to the mount point)
        ("/../../libpod_parent/x.service", "/", None),
        ("/a/../b", "/", None),
        # a mount root above the namespace ("/.."): where our paths lie under it is not
        # known (limits.py normalised it to "/")
        ("/x.service", "/..", None),
    ],
)
def test_cgroup_relative(cgroup_path: str, mount_root: str, relative: str | None) -> None:
    assert cgroup_relative(cgroup_path, mount_root) == relative


V1_MEMORY = "40 24 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"


def test_status_never_reads_a_cgroup_outside_the_mount(tmp_path: Path) -> None:
    (tmp_path / "sys/fs/cgroup/escape").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory/web.slice").mkdir(parents=True)
    mounts = parse_mountinfo(V1_MEMORY)
    found = cgroup_dir(mounts, str(tmp_path), "/web.slice", "memory")
    assert found == str(tmp_path / "sys/fs/cgroup/memory/web.slice")
    # /sys/fs/cgroup/memory/../escape exists, and is not the memory hierarchy's
    assert cgroup_dir(mounts, str(tmp_path), "/../escape", "memory") is None


def test_limits_and_status_read_one_cgroup_under_a_sub_mounted_root(tmp_path: Path) -> None:
    """A container's view: its hierarchy mounted from /docker/abc (written "/docker//abc/"
    in mountinfo), the cgroup named by its full path. Both readers find the same
    directory, and read_budget its limit."""
    cgroup = tmp_path / "sys/fs/cgroup/memory/web.slice"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.limit_in_bytes").write_text("268435456\n")
    mountinfo = V1_MEMORY.replace(" / /sys", " /docker//abc/ /sys")
    proc = tmp_path / "proc/1"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text("5:memory:/docker/abc/web.slice\n")
    assert read_budget(root=str(tmp_path), pid="1").memory_max == 256 * 1024**2
    found = cgroup_dir(parse_mountinfo(mountinfo), str(tmp_path), "/docker/abc/web.slice", "memory")
    assert found == str(cgroup)


# --------------------------------------------------------------------------- exposition

# The contract of procslice_unit_*: the dashboards, the rules and the fleet scenario's
# Prometheus tests read these names, types and HELP texts (as the parser reports them:
# a counter's family name without _total).
FAMILIES = [
    ("procslice_unit_cpu_seconds", "counter", "CPU time used by the unit's cgroup."),
    (
        "procslice_unit_cpu_quota_cores",
        "gauge",
        "CPU quota in CPUs: the tightest of the unit's and its slices' CPUQuota.",
    ),
    (
        "procslice_unit_cpu_throttled_periods",
        "counter",
        "CFS periods in which the cgroup holding the CPU quota (the unit's or its slice's) "
        "was throttled.",
    ),
    (
        "procslice_unit_cpu_throttled_seconds",
        "counter",
        "Time the cgroup holding the CPU quota (the unit's or its slice's) spent throttled.",
    ),
    ("procslice_unit_memory_bytes", "gauge", "Memory charged to the unit (MemoryCurrent)."),
    (
        "procslice_unit_memory_max_bytes",
        "gauge",
        "The tightest MemoryMax of the unit and its slices.",
    ),
    (
        "procslice_unit_memory_high_bytes",
        "gauge",
        "The tightest MemoryHigh of the unit and its slices.",
    ),
    ("procslice_unit_tasks", "gauge", "Tasks in the unit (TasksCurrent)."),
    ("procslice_unit_tasks_max", "gauge", "The tightest TasksMax of the unit and its slices."),
    ("procslice_unit_restarts", "counter", "Automatic restarts of the unit (NRestarts)."),
    ("procslice_unit_oom_kills", "counter", "OOM kills in the unit's cgroup since it was created."),
    (
        "procslice_unit_io_read_bytes",
        "counter",
        "Bytes the unit read from block devices (v2 io.stat; v1 blkio throttle counters).",
    ),
    (
        "procslice_unit_io_write_bytes",
        "counter",
        "Bytes the unit wrote to block devices (v1: its direct writes only; buffered writes "
        "are written back outside its cgroup).",
    ),
    ("procslice_unit_up", "gauge", "1 when the unit is active."),
    (
        "procslice_unit_health",
        "gauge",
        "1 when the health URL answers 200, 0 when not; absent without one.",
    ),
    (
        "procslice_unit_workers",
        "gauge",
        "Worker processes (children of the main process; podman: the container's processes).",
    ),
]


def _service(**figures: object) -> ServiceStatus:
    status = ServiceStatus(
        service="api",
        unit="procslice-api.service",
        slice="procslice-web.slice",
        model="aio",
        release="20261127T125243Z-cd8b283bfafb",
        state="active",
    )
    for name, value in figures.items():
        setattr(status, name, value)
    return status


def test_the_exposition_declares_every_family_with_its_type_and_help() -> None:
    families = list(text_string_to_metric_families(prometheus_text([_service()])))
    assert [(f.name, f.type, f.documentation) for f in families] == FAMILIES


def test_every_unit_sample_has_the_four_labels() -> None:
    statuses = [
        _service(workers=2, restarts=1, memory_bytes=41 * 1024**2, health="ok"),
        _service(service="batch", slice="procslice.slice", model="podman", release=None),
    ]
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(statuses))}
    up = {s.labels["service"]: s for s in families["procslice_unit_up"].samples}
    assert up["api"].labels == {
        "service": "api",
        "slice": "web",
        "model": "aio",
        "release": "20261127T125243Z-cd8b283bfafb",
    }
    assert up["batch"].labels == {
        "service": "batch",
        "slice": "",
        "model": "podman",
        "release": "",
    }
    assert {s.name for s in families["procslice_unit_restarts"].samples} == {
        "procslice_unit_restarts_total"
    }
    assert families["procslice_unit_memory_bytes"].samples[0].value == 41 * 1024**2
    assert families["procslice_unit_health"].samples[0].value == 1
    # a figure a service does not have is no sample (health without a URL)
    assert [s.labels["service"] for s in families["procslice_unit_health"].samples] == ["api"]
