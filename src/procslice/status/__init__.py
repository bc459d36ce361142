"""``procslice status``: every procslice service of this host against its limits.

What ``docker stats`` and ``systemd-cgtop`` show, for procslice services: per service
its model, release, workers, CPU use against its quota, memory against MemoryMax and
MemoryHigh, tasks against TasksMax, restarts and their reasons, and health.

    procslice status                      # a table (CPU sampled over 1 s)
    procslice status --json               # the same figures for scripts
    procslice status --from fleet.json    # a table from JSON collected earlier
    procslice status --serve 0.0.0.0:9100 # a Prometheus exporter (GET /metrics)

Part of the runtime package: the procslice_service role installs the runtime once per
host (a virtualenv of its own, /usr/local/lib/procslice/runtime/current/venv) and
``/usr/local/bin/procslice`` runs ``procslice status`` from it, as does the exporter's
unit; the runtime's ``procslice`` command offers the same ``status`` subcommand
(``procslice.cli``). By concern:

* :mod:`procslice.status.systemd`: what systemd says (``systemctl show``, unit lists,
  ExecStart, the records of procslice-activate);
* :mod:`procslice.status.collection`: the figures of each service (its cgroup, read
  with the cgroup reader of :mod:`procslice.limits`; its processes, health and request
  rates) and the host's JSON document;
* :mod:`procslice.status.table`: the table;
* :mod:`procslice.status.exporter`: the Prometheus exposition (a prometheus_client
  collector) and its HTTP server;
* :mod:`procslice.status.cli`: the ``status`` subcommand.

Where each figure comes from (the parsers are pure functions, tested on fixture text):

* The services: the units ``procslice-<name>.service`` that systemd has loaded or has
  a unit file for (``systemctl list-units`` and ``list-unit-files``).
* Their state and limits: one ``systemctl show`` for every unit and its slices
  (ActiveState, MainPID, NRestarts, Result, ExecMainCode/Status, StatusText,
  MemoryCurrent, MemoryMax, MemoryHigh, CPUQuotaPerSecUSec, TasksCurrent, TasksMax).
  These work on cgroup v1 and v2.  A limit set on none of the unit, its slice and
  procslice.slice is "-"; the tightest of them is shown, and one that comes from a
  slice (shared with the slice's other services) is marked ``^`` in the table.
* The model: from the unit's ExecStart, what systemd really runs: ``-m gunicorn``,
  ``procslice aio``, ``procslice swoole``, or ``podman``; else the "(model)" suffix of
  the Description every procslice unit template writes.
* The release: the ``current`` link named in ExecStart
  (``/srv/procslice/<name>/current/venv/bin/python``), read with readlink; else the last
  release recorded by procslice-activate in /var/lib/procslice/applied/<unit> (line 4).
  For podman, the image of the unit's Description.
* Workers: children of MainPID (gunicorn, aio, swoole: the master's workers and task
  workers); for podman, the processes of the container's cgroup (libpod-payload-<id>
  under ``--cgroups=split``), else those of the unit's cgroup tree that are not podman's
  (conmon, podman, catatonit, fuse-overlayfs, ...).
* CPU: the cumulative usage counter, read twice ``--interval`` seconds apart for all
  units together (v1 ``cpuacct.usage``; the cgroup2 ``cpu.stat`` usage_usec, present on
  v2 and in the hybrid ``unified`` tree; else CPUUsageNSec).  Throttling from the cpu
  controller's ``cpu.stat`` of the cgroup that holds the quota, the unit's or its
  slice's: a unit under a slice's quota is throttled as a part of the slice and only the
  slice counts it (v1 nr_throttled and throttled_time in ns, v2 nr_throttled and
  throttled_usec).  100% is one CPU.
* OOM kills: v1 ``memory.oom_control`` (oom_kill, summed over the unit's subtree), v2
  ``memory.events`` (oom_kill, hierarchical).  The counters start again when the unit
  restarts (a new cgroup); systemd's Result=oom-kill says the last stop was one.
* The last recycle reason of an aio or swoole worker: the "last recycle: ..." part of
  the master's STATUS= text (StatusText).
* Health: the HTTP health URL is GET with a 2 s timeout: "ok" on 200, "failing:
  <why>" otherwise, "none" without a URL.  The URL is the ``--health-url`` that
  procslice-activate last ran the unit's health gate with (it keeps its arguments in
  /var/lib/procslice/applied/<unit>.args, one a line), unless ``--health NAME=URL``
  names another (playbooks/status.yml passes the inventory's, so a fleet activated
  before the .args files existed shows its health too).
"""

from __future__ import annotations

from procslice.limits import CgroupMount, parse_mountinfo
from procslice.status.cli import _address_arg, add_parser, main, run
from procslice.status.collection import (
    EXPORTER_UNIT,
    RUNTIME_ADDRESSES,
    SCHEMA,
    CpuStat,
    RequestCounts,
    ServiceStatus,
    check_health,
    collect,
    exporter_addresses,
    gunicorn_metrics_address,
    host_document,
    parse_cpu_stat,
    parse_io_bytes,
    parse_oom_kills,
    parse_proc_stat,
    parse_request_counts,
    read_drained,
    request_figures,
    runtime_metrics_address,
    unix_socket_url,
)
from procslice.status.exporter import (
    StatusCollector,
    make_server,
    merge_expositions,
    parse_listen,
    prometheus_text,
    runtime_metrics,
)
from procslice.status.systemd import (
    current_link,
    detect_model,
    parse_activate_args,
    parse_applied,
    parse_exec_argv,
    parse_show,
    parse_timespan_usec,
    unit_slices,
)
from procslice.status.table import COLUMNS, format_size, format_table

__all__ = [
    "COLUMNS",
    "EXPORTER_UNIT",
    "RUNTIME_ADDRESSES",
    "SCHEMA",
    "CgroupMount",
    "CpuStat",
    "RequestCounts",
    "ServiceStatus",
    "StatusCollector",
    "_address_arg",
    "add_parser",
    "check_health",
    "collect",
    "current_link",
    "detect_model",
    "exporter_addresses",
    "format_size",
    "format_table",
    "gunicorn_metrics_address",
    "host_document",
    "main",
    "make_server",
    "merge_expositions",
    "parse_activate_args",
    "parse_applied",
    "parse_cpu_stat",
    "parse_exec_argv",
    "parse_io_bytes",
    "parse_listen",
    "parse_mountinfo",
    "parse_oom_kills",
    "parse_proc_stat",
    "parse_request_counts",
    "parse_show",
    "parse_timespan_usec",
    "prometheus_text",
    "read_drained",
    "request_figures",
    "run",
    "runtime_metrics",
    "runtime_metrics_address",
    "unit_slices",
    "unix_socket_url",
]
