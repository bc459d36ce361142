"""``procslice status`` (src/procslice/status/): the parsers on fixture text from real
hosts (cgroup v1 hybrid, systemd 252) and on cgroup v2 text, the collector on fake host
trees with a fake ``systemctl``, the table, the --json schema and the Prometheus text.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from procslice import cli, status
from procslice.status import (
    ServiceStatus,
    collect,
    detect_model,
    format_size,
    format_table,
    parse_activate_args,
    parse_applied,
    parse_cpu_stat,
    parse_exec_argv,
    parse_io_bytes,
    parse_mountinfo,
    parse_oom_kills,
    parse_proc_stat,
    parse_show,
    parse_timespan_usec,
    prometheus_text,
    unit_slices,
)

MIB = 1024**2

# `systemctl show -p ... procslice-hello-swoole.service procslice-web.slice` on a fleet
# host (Debian 12, systemd 252, cgroup v1 hybrid, inside a podman container).
SHOW_V1 = """\
MainPID=1988
StatusText=workers 1/1 up
Result=success
NRestarts=0
ExecMainCode=0
ExecMainStatus=0
ExecStart={ path=/srv/procslice/hello-swoole/current/venv/bin/python ; argv[]=/srv/procslice/hello-swoole/current/venv/bin/python -m procslice swoole --config /etc/procslice/hello-swoole/procslice.toml ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
Slice=procslice-web.slice
ControlGroup=/libpod_parent/libpod-30c5/procslice.slice/procslice-web.slice/procslice-hello-swoole.service
MemoryCurrent=26972160
CPUUsageNSec=[not set]
TasksCurrent=2
CPUQuotaPerSecUSec=infinity
MemoryHigh=infinity
MemoryMax=201326592
TasksMax=64
Id=procslice-hello-swoole.service
Description=procslice service hello-swoole (swoole)
LoadState=loaded
ActiveState=active
SubState=running

Slice=procslice.slice
ControlGroup=/libpod_parent/libpod-30c5/procslice.slice/procslice-web.slice
MemoryCurrent=125243392
CPUUsageNSec=[not set]
TasksCurrent=13
CPUQuotaPerSecUSec=1s
MemoryHigh=734003200
MemoryMax=805306368
TasksMax=256
Id=procslice-web.slice
Description=procslice slice web
LoadState=loaded
ActiveState=active
SubState=active
"""  # noqa: E501

PODMAN_EXEC_START = (
    "{ path=/usr/bin/podman ; argv[]=/usr/bin/podman run --rm --replace "
    "--name=procslice-hello-podman --cgroups=split --sdnotify=conmon --detach "
    "--publish=8004:8000 --cpus=0.5 localhost/procslice-demo:1 ; ignore_errors=no ; "
    "start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
)

# /proc/self/mountinfo of a fleet host: cgroup v1 hybrid, cpu and cpuacct mounted apart.
MOUNTINFO_V1 = """\
1093 1080 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,size=4096k,mode=755
1094 1093 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
1095 1093 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
1097 1093 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
1098 1093 0:33 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
1101 1093 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
1102 1093 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
1103 1093 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A Debian 12 host booted with cgroup v2 only.
MOUNTINFO_V2 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""  # noqa: E501

CPU_STAT_V1 = (
    "nr_periods 120\nnr_throttled 7\nthrottled_time 350000000\nnr_bursts 0\nburst_time 0\n"
)
CPU_STAT_V2 = (
    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\n"
    "nr_throttled 3\nthrottled_usec 125000\nnr_bursts 0\nburst_usec 0\n"
)
OOM_CONTROL_V1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
MEMORY_EVENTS_V2 = "low 0\nhigh 12\nmax 40\noom 1\noom_kill 1\noom_group_kill 0\n"


# --------------------------------------------------------------------------- parsers


def test_show_output_gives_one_dict_per_unit() -> None:
    units = parse_show(SHOW_V1)
    assert [u["Id"] for u in units] == ["procslice-hello-swoole.service", "procslice-web.slice"]
    assert units[0]["StatusText"] == "workers 1/1 up"
    assert units[0]["CPUUsageNSec"] == "[not set]"
    assert units[1]["CPUQuotaPerSecUSec"] == "1s"


@pytest.mark.parametrize(
    ("text", "usec"),
    [
        ("1s", 1_000_000),
        ("500ms", 500_000),
        ("1.500000s", 1_500_000),
        ("1min 30s", 90_000_000),
        ("250000", 250_000),
        ("infinity", None),
        ("", None),
        ("[not set]", None),
        ("fast", None),
        ("2s fast", None),
    ],
)
def test_timespans_read_as_microseconds(text: str, usec: int | None) -> None:
    assert parse_timespan_usec(text) == usec


@pytest.mark.parametrize(
    ("exec_start", "description", "model"),
    [
        (parse_show(SHOW_V1)[0]["ExecStart"], "", "swoole"),
        (
            "{ path=/x ; argv[]=/srv/procslice/a/current/venv/bin/python -m gunicorn "
            "--config /etc/procslice/a/gunicorn.conf.py ; ignore_errors=no ; start_time=[n/a] }",
            "",
            "gunicorn",
        ),
        (
            "{ path=/x ; argv[]=/srv/procslice/a/current/venv/bin/python -m procslice aio "
            "--config c ; ignore_errors=no ; start_time=[n/a] }",
            "",
            "aio",
        ),
        (PODMAN_EXEC_START, "", "podman"),
        ("", "procslice service b (gunicorn)", "gunicorn"),
        ("", "procslice service c (podman localhost/x:1)", "podman"),
        ("{ path=/bin/true ; argv[]=/bin/true ; ignore_errors=no }", "something else", "?"),
    ],
)
def test_model_is_read_from_what_the_unit_runs(
    exec_start: str, description: str, model: str
) -> None:
    assert detect_model(parse_exec_argv(exec_start), description) == model


def test_exec_start_argv_is_the_command_line() -> None:
    argv = parse_exec_argv(parse_show(SHOW_V1)[0]["ExecStart"])
    assert argv == [
        "/srv/procslice/hello-swoole/current/venv/bin/python",
        "-m",
        "procslice",
        "swoole",
        "--config",
        "/etc/procslice/hello-swoole/procslice.toml",
    ]
    assert status.current_link(argv) == "/srv/procslice/hello-swoole/current"


def test_cpu_stat_v1_throttling_in_nanoseconds() -> None:
    stat = parse_cpu_stat(CPU_STAT_V1)
    assert (stat.usage_ns, stat.nr_throttled, stat.throttled_ns) == (None, 7, 350_000_000)


def test_cpu_stat_v2_usage_and_throttling_in_microseconds() -> None:
    stat = parse_cpu_stat(CPU_STAT_V2)
    assert (stat.usage_ns, stat.nr_throttled, stat.throttled_ns) == (2_500_000_000, 3, 125_000_000)


BLKIO_V1 = (
    "7:0 Read 4096\n7:0 Write 1048576\n7:0 Sync 0\n7:0 Total 1052672\n8:0 Read 512\nTotal 1053184\n"
)
IO_STAT_V2 = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n7:0 rbytes=1 wbytes=2\n"


def test_io_bytes_from_v1_blkio_and_v2_io_stat() -> None:
    assert parse_io_bytes(BLKIO_V1) == (4096 + 512, 1048576)
    assert parse_io_bytes(IO_STAT_V2) == (4097, 8194)
    assert parse_io_bytes("") is None


def test_oom_kills_from_v1_oom_control_and_v2_memory_events() -> None:
    assert parse_oom_kills(OOM_CONTROL_V1) == 2
    assert parse_oom_kills(MEMORY_EVENTS_V2) == 1
    assert parse_oom_kills("oom_kill_disable 0\n") is None


def test_proc_stat_with_spaces_and_parens_in_the_command_name() -> None:
    assert parse_proc_stat("4242 (my (odd) worker) S 17 4242 4242 0 -1") == (
        4242,
        "my (odd) worker",
        17,
    )
    assert parse_proc_stat("garbage") is None


def test_applied_state_gives_the_release_and_args_the_health_url() -> None:
    state = "a" * 64 + "\n" + "b" * 64 + "\n" + "c" * 64 + "\nreleases/20261127T1252Z-0e57\n"
    assert parse_applied(state) == "20261127T1252Z-0e57"
    assert parse_applied("a\nb\nc\n\n") is None
    args = (
        "procslice-api\n--restart-on\n/etc/systemd/system/procslice-api.service\n"
        "--health-url\nhttp://127.0.0.1:8000/healthz\n--health-timeout\n30\n"
        "--link\n/srv/procslice/api/current\n"
    )
    assert parse_activate_args(args) == {
        "--health-url": "http://127.0.0.1:8000/healthz",
        "--health-timeout": "30",
        "--link": "/srv/procslice/api/current",
    }


def test_slice_ancestors_innermost_first() -> None:
    assert unit_slices("procslice-web.slice") == ["procslice-web.slice", "procslice.slice"]
    assert unit_slices("procslice.slice") == ["procslice.slice"]
    assert unit_slices("-.slice") == []


def test_mountinfo_v1_hybrid_and_v2() -> None:
    v1 = parse_mountinfo(MOUNTINFO_V1)
    assert [(m.mountpoint, m.version) for m in v1][-1] == ("/sys/fs/cgroup/unified", 2)
    assert any("cpuacct" in m.options for m in v1)
    v2 = parse_mountinfo(MOUNTINFO_V2)
    assert [(m.mountpoint, m.version) for m in v2] == [("/sys/fs/cgroup", 2)]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "-"),
        (512, "512B"),
        (1536, "1.5K"),
        (41 * MIB, "41M"),
        (256 * MIB, "256M"),
        (1024 * MIB, "1G"),
        (1536 * MIB, "1.5G"),
    ],
)
def test_sizes_are_humanised(size: int | None, text: str) -> None:
    assert format_size(size) == text


# --------------------------------------------------------------------------- fake hosts


@dataclass
class FakeHost:
    """A host tree under ``root`` and the ``systemctl`` answers for its units."""

    root: Path
    mountinfo: str
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def process(self, pid: int, comm: str, ppid: int) -> None:
        self.write(f"proc/{pid}/stat", f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560\n")

    def link(self, relative: str, target: str) -> None:
        path = self.root / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def systemctl(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        if argv[1] in ("list-units", "list-unit-files"):
            names = [n for n in self.units if n.endswith(".service")]
            if argv[1] == "list-units":
                return "".join(f"{n} loaded active running desc\n" for n in names)
            return "".join(f"{n} enabled enabled\n" for n in names)
        assert argv[1] == "show"
        properties = argv[3].split(",")
        blocks = []
        for name in argv[4:]:
            props = self.units.get(name, {"Id": name, "LoadState": "not-found"})
            blocks.append("".join(f"{k}={v}\n" for k, v in props.items() if k in properties))
        return "\n".join(blocks)


def service_props(name: str, cgroup: str, **extra: str) -> dict[str, str]:
    props = {
        "Id": f"procslice-{name}.service",
        "LoadState": "loaded",
        "Description": f"procslice service {name} (gunicorn)",
        "Slice": "procslice-web.slice",
        "ControlGroup": cgroup,
        "ExecStart": (
            f"{{ path=/srv/procslice/{name}/current/venv/bin/python ; argv[]=/srv/procslice/"
            f"{name}/current/venv/bin/python -m gunicorn --config /etc/procslice/{name}/"
            "gunicorn.conf.py ; ignore_errors=no ; start_time=[n/a] }"
        ),
        "ActiveState": "active",
        "SubState": "running",
        "Result": "success",
        "MainPID": "100",
        "ExecMainCode": "0",
        "ExecMainStatus": "0",
        "StatusText": "Gunicorn arbiter booted",
        "NRestarts": "0",
        "MemoryCurrent": str(41 * MIB),
        "MemoryMax": str(384 * MIB),
        "MemoryHigh": "infinity",
        "CPUUsageNSec": "[not set]",
        "CPUQuotaPerSecUSec": "infinity",
        "TasksCurrent": "5",
        "TasksMax": "64",
    }
    props.update(extra)
    return props


def slice_props(name: str, cgroup: str, **extra: str) -> dict[str, str]:
    props = {
        "Id": name,
        "LoadState": "loaded",
        "Slice": "-.slice",
        "ControlGroup": cgroup,
        "CPUQuotaPerSecUSec": "infinity",
        "MemoryMax": "infinity",
        "MemoryHigh": "infinity",
        "TasksMax": "infinity",
    }
    props.update(extra)
    return props


WEB = "/procslice.slice/procslice-web.slice"
API = WEB + "/procslice-api.service"


def fake_v1(tmp_path: Path) -> FakeHost:
    """A v1 hybrid host: one gunicorn service, 3 workers, its slice at CPUQuota=100%."""
    host = FakeHost(tmp_path, MOUNTINFO_V1)
    host.write("proc/self/mountinfo", MOUNTINFO_V1)
    host.units["procslice-api.service"] = service_props("api", API, NRestarts="2")
    host.units["procslice-web.slice"] = slice_props(
        "procslice-web.slice", WEB, CPUQuotaPerSecUSec="1s", MemoryHigh=str(700 * MIB)
    )
    host.units["procslice.slice"] = slice_props("procslice.slice", "/procslice.slice")
    host.write(f"sys/fs/cgroup/cpuacct{API}/cpuacct.usage", "1000000000\n")
    host.write(f"sys/fs/cgroup/cpu{API}/cpu.stat", "nr_periods 0\nnr_throttled 0\n")
    host.write(f"sys/fs/cgroup/cpu{WEB}/cpu.stat", CPU_STAT_V1)
    host.write(f"sys/fs/cgroup/memory{API}/memory.oom_control", OOM_CONTROL_V1)
    host.write(f"sys/fs/cgroup/blkio{API}/blkio.throttle.io_service_bytes", BLKIO_V1)
    # not hierarchical on v1: a child cgroup's IO is summed in
    host.write(f"sys/fs/cgroup/blkio{API}/child/blkio.throttle.io_service_bytes", "7:0 Write 10\n")
    host.write(f"sys/fs/cgroup/pids{API}/pids.current", "5\n")
    host.write(f"sys/fs/cgroup/unified{API}/cgroup.procs", "100\n101\n102\n103\n")
    host.process(100, "python", 1)
    for pid in (101, 102, 103):
        host.process(pid, "python", 100)
    host.link("srv/procslice/api/current", "releases/20261127T125243Z-cd8b283bfafb")
    return host


def test_collector_on_a_v1_hybrid_host(tmp_path: Path) -> None:
    host = fake_v1(tmp_path)

    def sleep(seconds: float) -> None:  # half a CPU used during the sample
        host.write(f"sys/fs/cgroup/cpuacct{API}/cpuacct.usage", "1500000000\n")
        host.write(f"sys/fs/cgroup/cpu{WEB}/cpu.stat", CPU_STAT_V1.replace(" 7\n", " 9\n"))

    clock = iter([10.0, 11.0])
    [api] = collect(
        root=str(tmp_path), runner=host.systemctl, sleep=sleep, clock=lambda: next(clock)
    )
    assert (api.service, api.model) == ("api", "gunicorn")
    assert api.release == "20261127T125243Z-cd8b283bfafb"
    assert api.workers == 3
    assert api.cpu_seconds == 1.5
    assert api.cpu_percent == 50.0
    assert (api.cpu_quota_percent, api.cpu_quota_from) == (100.0, "procslice-web.slice")
    # throttling is the slice's: it holds the quota
    assert (api.cpu_throttled_periods, api.cpu_throttled_recent) == (9, 2)
    assert api.cpu_throttled_seconds == 0.35
    assert (api.memory_bytes, api.memory_max_bytes) == (41 * MIB, 384 * MIB)
    assert (api.memory_high_bytes, api.memory_high_from) == (700 * MIB, "procslice-web.slice")
    assert (api.tasks, api.tasks_max, api.restarts, api.oom_kills) == (5, 64, 2, 2)
    assert (api.io_read_bytes, api.io_write_bytes) == (4608, 1048586)
    assert api.health == "none"
    # one systemctl show for the units, one for their slices; the sample reads files
    assert [c[1] for c in host.calls] == ["list-units", "list-unit-files", "show", "show"]


def test_collector_on_a_v2_host_with_a_podman_service(tmp_path: Path) -> None:
    batch = "/procslice.slice/procslice-batch.slice"
    unit = batch + "/procslice-box.service"
    host = FakeHost(tmp_path, MOUNTINFO_V2)
    host.write("proc/self/mountinfo", MOUNTINFO_V2)
    host.units["procslice-box.service"] = service_props(
        "box",
        unit,
        Slice="procslice-batch.slice",
        Description="procslice service box (podman localhost/box:2)",
        ExecStart=PODMAN_EXEC_START,
        MainPID="300",
        CPUQuotaPerSecUSec="500ms",
        MemoryMax=str(96 * MIB),
        Result="oom-kill",
        NRestarts="1",
    )
    host.units["procslice-batch.slice"] = slice_props("procslice-batch.slice", batch)
    host.units["procslice.slice"] = slice_props("procslice.slice", "/procslice.slice")
    cgroup = f"sys/fs/cgroup{unit}"
    host.write(f"{cgroup}/cpu.stat", CPU_STAT_V2)
    host.write(f"{cgroup}/memory.events", MEMORY_EVENTS_V2)
    host.write(f"{cgroup}/cgroup.procs", "300\n")
    host.write(f"{cgroup}/runtime/cgroup.procs", "290\n")
    host.write(f"{cgroup}/libpod-payload-abc/cgroup.procs", "310\n311\n")
    host.process(300, "conmon", 1)
    host.process(290, "fuse-overlayfs", 1)
    host.process(310, "python3", 300)
    host.process(311, "python3", 310)

    [box] = collect(root=str(tmp_path), runner=host.systemctl, interval=0)
    assert (box.model, box.release, box.workers) == ("podman", "localhost/box:2", 2)
    assert (box.cpu_seconds, box.cpu_percent) == (2.5, None)
    assert (box.cpu_quota_percent, box.cpu_quota_from) == (50.0, "procslice-box.service")
    assert (box.cpu_throttled_periods, box.cpu_throttled_seconds) == (3, 0.125)
    assert (box.oom_kills, box.result, box.restarts) == (1, "oom-kill", 1)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_health_from_the_activate_args_and_from_the_command_line(
    tmp_path: Path, health_server: int
) -> None:
    host = fake_v1(tmp_path)
    host.units["procslice-bad.service"] = service_props("bad", WEB + "/procslice-bad.service")
    host.units["procslice-gone.service"] = service_props("gone", WEB + "/procslice-gone.service")
    host.write(
        "var/lib/procslice/applied/procslice-api.args",
        f"procslice-api\n--health-url\nhttp://127.0.0.1:{health_server}/healthz\n",
    )
    with socket_closed() as dead_port:
        statuses = collect(
            root=str(tmp_path),
            runner=host.systemctl,
            interval=0,
            health_urls={
                "bad": f"http://127.0.0.1:{health_server}/broken",
                "gone": f"http://127.0.0.1:{dead_port}/healthz",
            },
        )
    health = {s.service: (s.health, s.health_detail) for s in statuses}
    assert health == {
        "api": ("ok", None),
        "bad": ("failing", "HTTP 503"),
        "gone": ("failing", "connection refused"),
    }


class socket_closed:  # noqa: N801 (a context manager used like a function)
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        return None


def test_an_inactive_service_has_no_workers_and_its_last_exit(tmp_path: Path) -> None:
    host = fake_v1(tmp_path)
    host.units["procslice-api.service"].update(
        ActiveState="failed",
        SubState="failed",
        MainPID="0",
        Result="signal",
        ExecMainCode="2",
        ExecMainStatus="9",
    )
    [api] = collect(root=str(tmp_path), runner=host.systemctl, interval=0)
    assert (api.state, api.workers, api.main_pid) == ("failed", 0, None)
    assert api.last_exit == "killed by SIGKILL"


# --------------------------------------------------------------------------- --json


def test_json_document_schema(tmp_path: Path) -> None:
    host = fake_v1(tmp_path)
    statuses = collect(root=str(tmp_path), runner=host.systemctl, interval=0)
    document = json.loads(json.dumps(status.host_document(statuses, 0.0, host="h1")))
    assert document["schema"] == status.SCHEMA
    assert set(document) == {"schema", "host", "time", "interval", "drained", "services"}
    assert document["drained"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["time"])
    [service] = document["services"]
    assert set(service) == {
        "service", "unit", "slice", "model", "release", "state", "sub_state", "main_pid",
        "workers", "cpu", "memory", "tasks", "io", "requests", "restarts", "health",
    }  # fmt: skip
    assert set(service["cpu"]) == {
        "seconds", "percent", "quota_percent", "quota_from", "throttled_periods",
        "throttled_seconds", "throttled_in_sample",
    }  # fmt: skip
    assert set(service["memory"]) == {"bytes", "max_bytes", "max_from", "high_bytes", "high_from"}
    assert set(service["tasks"]) == {"current", "max", "max_from"}
    assert set(service["io"]) == {"read_bytes", "write_bytes"}
    assert set(service["requests"]) == {"per_second", "error_ratio", "p99_seconds"}
    assert set(service["restarts"]) == {
        "count", "result", "last_exit", "oom_kills", "last_recycle", "status_text",
    }  # fmt: skip
    assert set(service["health"]) == {"state", "url", "detail"}
    assert service["memory"]["max_bytes"] == 384 * MIB
    assert service["health"]["state"] in ("ok", "failing", "none")


# --------------------------------------------------------------------------- table


def service_doc(name: str, **changes: Any) -> dict[str, Any]:
    base = ServiceStatus(
        service=name,
        unit=f"procslice-{name}.service",
        slice="procslice-web.slice",
        model="gunicorn",
        release="20261127T125243Z-cd8b283bfafb",
        state="active",
        sub_state="running",
        workers=3,
        cpu_percent=12.5,
        cpu_quota_percent=100.0,
        cpu_quota_from="procslice-web.slice",
        memory_bytes=41 * MIB,
        memory_max_bytes=256 * MIB,
        memory_max_from=f"procslice-{name}.service",
        tasks=5,
        tasks_max=64,
        tasks_max_from=f"procslice-{name}.service",
        health="ok",
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base.as_json()


def test_table_is_one_aligned_row_per_service_host_first() -> None:
    documents = [
        {"host": "host1", "services": [service_doc("hello-wsgi"), service_doc("a")]},
        {
            "host": "a-much-longer-host",
            "services": [
                service_doc(
                    "hello-swoole",
                    model="swoole",
                    restarts=2,
                    result="oom-kill",
                    oom_kills=1,
                    last_recycle="memory (worker 1, rss 180M)",
                    health="failing",
                    health_detail="HTTP 503",
                )
            ],
        },
    ]
    lines = format_table(documents).splitlines()
    header = lines[0]
    assert header.split() == list(status.COLUMNS)
    starts = [header.index(column) for column in status.COLUMNS]
    for line in lines[1:4]:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " "
    assert lines[1].split()[:2] == ["host1", "hello-wsgi"]
    assert "41M/256M" in lines[1] and "12%/100%^" in lines[1] and "5/64" in lines[1]
    assert "2 (oom-kill; oom_kill=1; recycled: memory (worker 1, rss 180M))" in lines[3]
    assert lines[3].endswith("failing: HTTP 503")
    assert lines[-1].startswith("^ the limit of its slice")


def test_an_unreachable_host_is_a_row_saying_so() -> None:
    table = format_table(
        [
            {"host": "host1", "services": [service_doc("api")]},
            {"host": "host2", "error": "unreachable: ssh: connect to host port 22: refused"},
            {"host": "host3", "services": []},
        ]
    )
    lines = table.splitlines()
    assert lines[2].split(maxsplit=1) == [
        "host2",
        "(unreachable: ssh: connect to host port 22: refused)",
    ]
    assert lines[3].split(maxsplit=1) == ["host3", "(no procslice services)"]


def test_status_from_a_json_file_prints_the_table_through_the_package_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "fleet.json"
    saved.write_text(json.dumps([{"host": "host1", "services": [service_doc("api")]}]))
    assert cli.main(["status", "--from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["host1", "api", "gunicorn"]
    assert status.main(["status", "--from", str(tmp_path / "missing.json")]) == 2


# --------------------------------------------------------------------------- Prometheus

# (prometheus_client writes a sample's labels in their sorted order)
_LABEL_TEXT = r'[a-z]+="(?:[^"\\]|\\.)*"'
_SAMPLE_RE = re.compile(
    rf"^procslice_unit_[a-z_]+\{{{_LABEL_TEXT}(?:,{_LABEL_TEXT})*\}} -?[0-9.e+-]+$"
)


def test_prometheus_text_is_well_formed(tmp_path: Path) -> None:
    host = fake_v1(tmp_path)
    statuses = collect(root=str(tmp_path), runner=host.systemctl, interval=0)
    statuses[0].release = 'odd "release"\\name'
    text = prometheus_text(statuses)
    assert text.endswith("\n")
    seen_types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in seen_types and kind in ("counter", "gauge")
            seen_types[name] = kind
            continue
        assert _SAMPLE_RE.match(line), line
        assert line.split("{")[0] in seen_types
        labels = re.findall(r'([a-z]+)="', line.split("{", 1)[1].rsplit("}", 1)[0])
        assert sorted(labels) == ["model", "release", "service", "slice"], line
    assert {name.removeprefix("procslice_unit_") for name in seen_types} >= {
        "cpu_seconds_total", "cpu_quota_cores", "cpu_throttled_periods_total",
        "cpu_throttled_seconds_total", "memory_bytes", "memory_max_bytes", "memory_high_bytes",
        "tasks", "tasks_max", "restarts_total", "oom_kills_total", "io_read_bytes_total",
        "io_write_bytes_total", "up", "health", "workers",
    }  # fmt: skip
    assert all(kind == "counter" for name, kind in seen_types.items() if name.endswith("_total"))
    assert 'release="odd \\"release\\"\\\\name"' in text


def test_prometheus_client_parses_the_exposition(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    host = fake_v1(tmp_path)
    statuses = collect(root=str(tmp_path), runner=host.systemctl, interval=0)
    families = {f.name: f for f in parser.text_string_to_metric_families(prometheus_text(statuses))}
    quota = families["procslice_unit_cpu_quota_cores"].samples[0]
    assert quota.labels == {
        "service": "api",
        "slice": "web",
        "model": "gunicorn",
        "release": "20261127T125243Z-cd8b283bfafb",
    }
    assert quota.value == 1.0
    assert families["procslice_unit_workers"].samples[0].value == 3
    assert families["procslice_unit_oom_kills"].type == "counter"
    # the v1 blkio counters of the unit and its child cgroup, summed
    assert families["procslice_unit_io_read_bytes"].samples[0].value == 4608
    assert families["procslice_unit_io_write_bytes"].samples[0].value == 1048586


def test_exporter_serves_metrics_over_http() -> None:
    statuses = [ServiceStatus(service="api", unit="procslice-api.service", workers=2)]
    server = status.make_server("127.0.0.1:0", lambda: statuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        body = answer.read().decode()
        assert answer.status == 200
        assert answer.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        (workers,) = [
            family
            for family in text_string_to_metric_families(body)
            if family.name == "procslice_unit_workers"
        ]
        assert [(sample.labels, sample.value) for sample in workers.samples] == [
            ({"service": "api", "slice": "", "model": "?", "release": ""}, 2)
        ]
        conn.request("GET", "/other")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address", ["9100", "host:", "host:99999", "[::1]"])
def test_bad_listen_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        status.parse_listen(address)


# ------------------------------------------------------------- runtime metrics


def _runtime_text(workers: int, rss: int) -> str:
    from prometheus_client import generate_latest

    from procslice.metrics import Snapshot, WorkerSample, registry_for

    snap = Snapshot(
        workers=workers,
        restarts={"memory": 2},
        samples=[
            WorkerSample(slot=i, pid=100 + i, rss=rss, lag=0.001, inflight=0)
            for i in range(workers)
        ],
    )
    return generate_latest(registry_for(lambda: snap)).decode()


@contextlib.contextmanager
def runtime_endpoint(workers: int) -> Iterator[int]:
    """A real HTTP server on loopback answering the runtime's metrics; its port."""
    with metrics_endpoint(lambda: _runtime_text(workers, 1)) as port:
        yield port


@contextlib.contextmanager
def metrics_endpoint(text: Callable[[], str]) -> Iterator[int]:
    """A real HTTP server on loopback answering text() to every GET; its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = text().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_runtime_metrics_address_reads_metrics_listen():
    assert status.runtime_metrics_address('metrics_listen = "127.0.0.1:9003"\n') == "127.0.0.1:9003"
    assert status.runtime_metrics_address('metrics_listen = ""\n') is None
    assert status.runtime_metrics_address("workers = 2\n") is None
    assert status.runtime_metrics_address("not toml [") is None


def test_merged_runtime_metrics_declare_each_family_once_with_a_service_label():
    merged = status.merge_expositions(
        {"hello-swoole": _runtime_text(2, 50_000_000), "hello-aio": _runtime_text(1, 40_000_000)}
    )
    lines = merged.splitlines()
    assert lines.count("# TYPE procslice_workers gauge") == 1
    assert lines.count("# TYPE procslice_worker_restarts_total counter") == 1
    assert 'procslice_workers{service="hello-swoole"} 2.0' in lines
    assert 'procslice_workers{service="hello-aio"} 1.0' in lines
    assert 'procslice_worker_rss_bytes{service="hello-swoole",worker="1"} 5e+07' in lines
    assert 'procslice_worker_restarts_total{reason="memory",service="hello-aio"} 2.0' in lines
    # Every sample follows its own family's TYPE line.
    family = ""
    for line in lines:
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(family), (family, line)


def test_runtime_metrics_are_fetched_from_each_active_runtime(tmp_path):
    def service(name: str, model: str) -> status.ServiceStatus:
        return status.ServiceStatus(
            service=name, unit=f"procslice-{name}.service", model=model, state="active"
        )

    with runtime_endpoint(2) as port:
        (tmp_path / "hello-swoole").mkdir()
        (tmp_path / "hello-swoole" / "procslice.toml").write_text(
            f'metrics_listen = "0.0.0.0:{port}"\n'
        )
        (tmp_path / "hello-aio").mkdir()
        (tmp_path / "hello-aio" / "procslice.toml").write_text('metrics_listen = ""\n')
        statuses = [
            service("hello-swoole", "swoole"),
            service("hello-aio", "aio"),
            service("hello-wsgi", "gunicorn"),
        ]
        text = status.runtime_metrics(statuses, etc=str(tmp_path))
    assert 'procslice_workers{service="hello-swoole"} 2.0' in text
    assert "hello-aio" not in text and "hello-wsgi" not in text


def test_gunicorn_metrics_address_reads_the_rendered_assignment():
    text = 'import os\nmetrics_listen = "127.0.0.1:9004"\ngunicorn_metrics.configure()\n'
    assert status.gunicorn_metrics_address(text) == "127.0.0.1:9004"
    assert status.gunicorn_metrics_address('metrics_listen = ""\n') is None
    assert status.gunicorn_metrics_address("workers = 2\n") is None
    assert status.gunicorn_metrics_address("def broken(:\n") is None


def test_a_gunicorn_services_metrics_are_fetched_like_a_runtimes(tmp_path):
    statuses = [
        status.ServiceStatus(
            service="hello-wsgi",
            unit="procslice-hello-wsgi.service",
            model="gunicorn",
            state="active",
        )
    ]
    with runtime_endpoint(2) as port:
        (tmp_path / "hello-wsgi").mkdir()
        (tmp_path / "hello-wsgi" / "gunicorn.conf.py").write_text(
            f'workers = 2\nmetrics_listen = "127.0.0.1:{port}"\n'
        )
        text = status.runtime_metrics(statuses, etc=str(tmp_path))
    assert 'procslice_workers{service="hello-wsgi"} 2.0' in text


def test_tcp_health_url_is_a_connection_check():
    import socket as socket_module

    listener = socket_module.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert status.check_health(f"tcp://127.0.0.1:{port}") == ("ok", None)
    finally:
        listener.close()
    assert status.check_health(f"tcp://127.0.0.1:{port}", timeout=1) == (
        "failing",
        "connection refused",
    )


def test_runtime_metrics_addresses_given_on_the_command_line_win(tmp_path):
    # The exporter cannot read /etc/procslice/<name>/ (0750): no config file here.
    statuses = [
        status.ServiceStatus(
            service="hello-aio", unit="procslice-hello-aio.service", model="aio", state="active"
        )
    ]
    with runtime_endpoint(3) as port:
        text = status.runtime_metrics(
            statuses,
            etc=str(tmp_path / "unreadable"),
            addresses={"hello-aio": f"127.0.0.1:{port}"},
        )
    assert 'procslice_workers{service="hello-aio"} 3.0' in text
    assert status._address_arg("hello-aio=127.0.0.1:9002") == ("hello-aio", "127.0.0.1:9002")
    with pytest.raises(argparse.ArgumentTypeError):
        status._address_arg("hello-aio=nowhere")


def test_a_drained_host_is_named_under_the_table_with_the_reason(tmp_path: Path) -> None:
    marker = tmp_path / "drained"
    assert status.read_drained(str(marker)) is None
    marker.write_text('api: drained by a deploy run at T and left out\nbecause "x" failed: gate\n')
    why = status.read_drained(str(marker))
    assert why == 'api: drained by a deploy run at T and left out because "x" failed: gate'
    document = status.host_document([], 0.0, host="h1", drained=why)
    lines = format_table([document, {"host": "h2", "services": []}]).splitlines()
    assert lines[-1] == f"h1 has services out of the front's rotation: {why}"
    assert not any(line.startswith("h2 has") for line in lines)


def _request_text(two: int, five: int, buckets: list[int]) -> str:
    """A runtime's per-request metrics: answers by code class, and the response-time
    histogram's cumulative counts over the bounds below."""
    bounds = ["0.005", "0.01", "0.025", "0.05", "+Inf"]
    lines = [
        "# TYPE procslice_http_requests_total counter",
        f'procslice_http_requests_total{{code="2xx",method="GET"}} {two}.0',
        f'procslice_http_requests_total{{code="5xx",method="POST"}} {five}.0',
        "# TYPE procslice_http_request_duration_seconds histogram",
    ]
    lines += [
        f'procslice_http_request_duration_seconds_bucket{{le="{bound}"}} {count}.0'
        for bound, count in zip(bounds, buckets, strict=True)
    ]
    return "\n".join(lines) + "\n"


def test_request_figures_are_rate_5xx_share_and_interpolated_p99() -> None:
    before = status.parse_request_counts(_request_text(100, 0, [50, 90, 100, 100, 100]))
    after = status.parse_request_counts(_request_text(290, 10, [100, 180, 290, 300, 300]))
    assert before is not None and after is not None
    rate, ratio, p99 = status.request_figures(before, after, 2.0)
    # 200 answers in 2 s, 10 of them 5xx; the 198th fastest is in (0.025, 0.05], 8/10 in
    assert (rate, ratio) == (100.0, 0.05)
    assert p99 == pytest.approx(0.045)
    assert status.request_figures(after, before, 2.0) == (None, None, None)  # restarted
    assert status.parse_request_counts("procslice_workers 2.0\n") is None


def test_status_shows_requests_per_second_errors_and_p99_of_a_runtime(tmp_path: Path) -> None:
    texts = [_request_text(100, 0, [50, 90, 100, 100, 100])]
    with metrics_endpoint(lambda: texts[-1]) as port:
        host = fake_v1(tmp_path)
        host.units["procslice-api.service"]["ExecStart"] = (
            "{ path=/srv/procslice/api/current/venv/bin/python ; argv[]=/srv/procslice/api/"
            "current/venv/bin/python -m procslice swoole --config /etc/procslice/api/"
            "procslice.toml ; ignore_errors=no ; start_time=[n/a] }"
        )
        host.write("etc/procslice/api/procslice.toml", f'metrics_listen = "0.0.0.0:{port}"\n')

        def sleep(seconds: float) -> None:  # 200 answers during the 2 s sample
            texts.append(_request_text(290, 10, [100, 180, 290, 300, 300]))

        clock = iter([10.0, 12.0])
        [api] = collect(
            root=str(tmp_path), runner=host.systemctl, sleep=sleep, clock=lambda: next(clock)
        )
    assert api.model == "swoole"
    assert (api.requests_per_second, api.requests_error_ratio) == (100.0, 0.05)
    assert api.requests_p99_seconds == pytest.approx(0.045)
    document = status.host_document([api], 2.0, host="h1")
    row = format_table([document]).splitlines()[1]
    assert "100/s 5.0% p99 45ms" in row


def test_status_reads_a_podman_services_metrics_address_from_the_exporters_unit(
    tmp_path: Path,
) -> None:
    # The image's own /metrics (metrics_listen on podman): procslice writes no
    # configuration for it, the exporter's unit names it (--runtime-metrics).
    texts = [_request_text(100, 0, [50, 90, 100, 100, 100])]
    with metrics_endpoint(lambda: texts[-1]) as port:
        host = fake_v1(tmp_path)
        host.units["procslice-api.service"]["ExecStart"] = PODMAN_EXEC_START
        host.write(
            status.EXPORTER_UNIT,
            "[Service]\nExecStart=/usr/local/bin/procslice status --serve 0.0.0.0:9100 "
            f"--runtime-metrics other=127.0.0.1:1 --runtime-metrics api=127.0.0.1:{port}\n",
        )
        assert status.exporter_addresses(str(tmp_path)) == {
            "other": "127.0.0.1:1",
            "api": f"127.0.0.1:{port}",
        }

        def sleep(seconds: float) -> None:
            texts.append(_request_text(300, 20, [100, 180, 290, 300, 300]))

        clock = iter([10.0, 12.0])
        [api] = collect(
            root=str(tmp_path), runner=host.systemctl, sleep=sleep, clock=lambda: next(clock)
        )
    assert api.model == "podman"
    assert api.requests_per_second == 110.0  # (200 + 20) answers in the 2 s sample
    assert api.requests_error_ratio == pytest.approx(20 / 220)
