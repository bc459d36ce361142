"""The leak section: a leaking app under MemoryMax, gunicorn against swoole's recycling.

On procslice-bfleet1 (a systemd host container of the bench fleet, bench/fleet.py),
examples/hello_asgi runs with 2 workers in a transient unit::

    systemd-run --unit procslice-bench-leak-<case> -p MemoryMax=256M -p MemorySwapMax=0 \\
        -p OOMPolicy=continue -p Restart=on-failure -p RestartSec=2 <server>

under gunicorn + uvicorn-worker (nothing recycles the workers), gunicorn with
``--max-requests`` (its own answer to leaks: recycle after a request count), and
``procslice swoole --memory-limit auto`` (recycle a worker above its share of the
budget, gracefully, before the kernel OOM-kills it).  bench/leak_host.py, run on the
same host, sends a mix of leaking and normal requests for the run's duration and
samples the unit's cgroup; then the unit, its journal and procslice's metrics are
read.  Reported: OOM kills (the kernel's counter in the unit's cgroup), failed
requests, worker replacements and unit restarts.

The software comes from the wheelhouse roles/procslice_build makes for deploys
(wheelhouse.py, .cache/wheelhouse/bench-leak/<hash>), installed with
``pip install --no-index`` into /opt/procslice-bench/<hash>/venv on the host.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fleet

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = f"{fleet.PREFIX}1"
REMOTE = "/opt/procslice-bench"
PORT = 8090
METRICS_PORT = 9090
WORKERS = 2
BASELINE = "gunicorn-uvicorn"
MAX_REQUESTS = 400  # about 50 MiB of this leak per worker: what a budget of 256M / 3 holds
MAX_REQUESTS_JITTER = 40

# What wheelhouse.py builds for the bench: the service shape deploy.yml would build.
SERVICE_SPEC = {
    "name": "bench-leak",
    "model": "gunicorn",
    "worker_class": "uvicorn",
    "package": {"source": "examples/hello_asgi"},
    "state": "present",
}


@dataclass
class Options:
    """The leak section's knobs (bench/run.py's command line)."""

    duration: float = 60.0
    rate: float = 200.0
    leak_every: int = 20
    leak_mb: int = 2
    normal_path: str = "/slow?ms=50"
    memory_max: str = "256M"


@dataclass(frozen=True)
class Case:
    """One server under the leak: its row's name and label, its recycling, its command."""

    subject: str
    label: str
    recycling: str
    argv: Callable[[str], list[str]]  # venv -> argv
    metrics: bool = False

    @property
    def name(self) -> str:
        """The name ``--only`` matches."""
        return f"leak-{self.subject}"

    @property
    def unit(self) -> str:
        """The transient unit's name on the host."""
        return f"procslice-bench-leak-{self.subject}"


def _gunicorn(*extra: str) -> Callable[[str], list[str]]:
    def argv(venv: str) -> list[str]:
        return [
            f"{venv}/bin/python",
            "-m",
            "gunicorn",
            "hello_asgi:app",
            "--workers",
            str(WORKERS),
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--log-level",
            "info",
            *extra,
        ]

    return argv


def _swoole(venv: str) -> list[str]:
    return [
        f"{venv}/bin/procslice",
        "swoole",
        "hello_asgi:app",
        "--workers",
        str(WORKERS),
        "--memory-limit",
        "auto",
        "--max-wait-time",
        "5",
        "--listen",
        f"127.0.0.1:{PORT}",
        "--metrics-listen",
        f"127.0.0.1:{METRICS_PORT}",
        "--log-level",
        "info",
    ]


CASES: list[Case] = [
    Case(BASELINE, "gunicorn + uvicorn-worker", "none", _gunicorn()),
    Case(
        "gunicorn-uvicorn-max-requests",
        "gunicorn + uvicorn-worker, --max-requests",
        f"after {MAX_REQUESTS} (+0-{MAX_REQUESTS_JITTER}) requests",
        _gunicorn(
            "--max-requests", str(MAX_REQUESTS), "--max-requests-jitter", str(MAX_REQUESTS_JITTER)
        ),
    ),
    Case("procslice-swoole", "procslice swoole", "memory_limit auto", _swoole, metrics=True),
]
NAMES = [case.name for case in CASES]


# ----------------------------------------------------------------------------- set-up


def wheelhouse() -> dict[str, Any]:
    """Build (or reuse) the bench's wheelhouse with roles/procslice_build's wheelhouse.py."""
    spec = {
        "services": [SERVICE_SPEC],
        "base_dir": str(ROOT),
        "runtime_source": str(ROOT),
        "constraints": str(ROOT / "requirements" / "service.txt"),
        "cache_dir": str(ROOT / ".cache" / "wheelhouse"),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "roles" / "procslice_build" / "files" / "wheelhouse.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the bench wheelhouse failed: {done.stderr.strip()[-800:]}")
    built: dict[str, Any] = json.loads(done.stdout)["wheelhouses"][SERVICE_SPEC["name"]]
    return built


def install(built: dict[str, Any]) -> str:
    """Install the wheelhouse into a venv on the host (once per release hash); the venv."""
    base = f"{REMOTE}/{built['hash']}"
    venv = f"{base}/venv"
    marker = fleet.exec_(HOST, ["sh", "-c", f"test -f {base}/.installed && echo yes"], check=False)
    if marker.strip() != "yes":
        fleet.exec_(
            HOST,
            [
                "sh",
                "-c",
                "dpkg -s python3-venv >/dev/null 2>&1 || "
                "{ apt-get update -q && apt-get install -y -q python3-venv; }",
            ],
        )
        fleet.exec_(HOST, ["mkdir", "-p", f"{base}/wheels"])
        fleet.copy_to(HOST, Path(built["archive"]), f"{base}/wheelhouse.tar")
        fleet.exec_(
            HOST,
            [
                "sh",
                "-c",
                f"set -e; cd {base}; tar xf wheelhouse.tar -C wheels; rm -rf venv; "
                "python3 -m venv venv; venv/bin/pip install --quiet --disable-pip-version-check "
                f"--no-index --find-links wheels {' '.join(built['install'])}; touch .installed",
            ],
        )
    fleet.exec_(HOST, ["mkdir", "-p", REMOTE])
    fleet.copy_to(HOST, BENCH / "leak_host.py", f"{REMOTE}/leak_host.py")
    return venv


# ----------------------------------------------------------------------------- one case


def stop(unit: str) -> None:
    """Stop the transient unit and forget it (it may not exist)."""
    fleet.exec_(HOST, ["systemctl", "stop", unit], check=False)
    fleet.exec_(HOST, ["systemctl", "reset-failed", unit], check=False)


def measure(case: Case, venv: str, options: Options) -> dict[str, Any]:
    """Run the case's server under the leak; its raw figures."""
    stop(case.unit)
    since = float(fleet.exec_(HOST, ["date", "+%s"]).strip()) - 1
    unit_argv = [
        "systemd-run",
        "--unit",
        case.unit,
        "--collect",
        "-p",
        f"MemoryMax={options.memory_max}",
        "-p",
        "MemorySwapMax=0",
        "-p",
        "OOMPolicy=continue",
        "-p",
        "Restart=on-failure",
        "-p",
        "RestartSec=2",
        "-p",
        f"WorkingDirectory={REMOTE}",
        *case.argv(venv),
    ]
    fleet.exec_(HOST, unit_argv)
    try:
        load_argv = [
            "python3",
            f"{REMOTE}/leak_host.py",
            "load",
            "--port",
            str(PORT),
            "--unit",
            case.unit,
            "--duration",
            f"{options.duration:g}",
            "--rate",
            f"{options.rate:g}",
            "--leak-every",
            str(options.leak_every),
            "--leak-mb",
            str(options.leak_mb),
            "--normal-path",
            options.normal_path,
        ]
        load = json.loads(fleet.exec_(HOST, load_argv, timeout=options.duration + 180))
        probe_argv = ["python3", f"{REMOTE}/leak_host.py", "probe", "--unit", case.unit]
        probe_argv += ["--since", f"{since:.0f}"]
        if case.metrics:
            probe_argv += ["--metrics", f"http://127.0.0.1:{METRICS_PORT}/metrics"]
        probe = json.loads(fleet.exec_(HOST, probe_argv, timeout=60))
    finally:
        stop(case.unit)
    journal = probe.pop("journal", "")
    fleet.LOGS.mkdir(parents=True, exist_ok=True)
    (fleet.LOGS / f"{case.name}.log").write_text(f"$ {' '.join(unit_argv)}\n{journal}")
    return summarise(case, options, load, probe, journal, unit_argv)


def summarise(
    case: Case,
    options: Options,
    load: dict[str, Any],
    probe: dict[str, Any],
    journal: str,
    unit_argv: list[str],
) -> dict[str, Any]:
    """The row's raw figures from the load generator's and the probe's reports."""
    counts = probe["journal_counts"]
    restarts = probe.get("restarts_by_reason") or {}
    if case.metrics:
        replaced = {k: int(v) for k, v in restarts.items() if isinstance(v, float) and v}
    else:
        # gunicorn logs every worker boot: the first WORKERS are the start.
        boots = max(0, counts["gunicorn_worker_boots"] - WORKERS)
        killed = counts["gunicorn_sigkill"]
        other = "max_requests" if "max-requests" in case.subject else "other"
        pairs = (("SIGKILL (OOM)", killed), (other, max(0, boots - killed)))
        replaced = {reason: count for reason, count in pairs if count}
    limit = re.search(r"recycling workers above ([\d.]+) MiB RSS", journal)
    memory = probe.get("memory") or {}
    oom_logged = counts["gunicorn_sigkill"] + counts["procslice_sigkill"]
    return {
        "host": HOST,
        "cgroup_version": memory.get("cgroup"),
        "memory_max": options.memory_max,
        "memory_limit_mib": float(limit.group(1)) if limit else None,
        "duration_s": load["duration_s"],
        "rate": options.rate,
        "leak_every": options.leak_every,
        "leak_mb": options.leak_mb,
        "normal_path": options.normal_path,
        "requests": load["sent"],
        "ok": load["ok"],
        "failed": load["failed"],
        "failed_by_kind": load["failed_by_kind"],
        "by_request": load["by_request"],
        "failed_per_second": load["failed_per_second"],
        "oom_kills": load["oom_kills_sampled"],
        "oom_kills_logged": oom_logged,
        "systemd_oom_lines": counts["systemd_oom"],
        "workers_replaced": replaced,
        "unit_restarts": int(probe["unit"].get("NRestarts") or 0),
        "unit_state": f"{probe['unit'].get('ActiveState')}/{probe['unit'].get('SubState')}",
        "memory_peak_mib": load["memory_peak_mib"],
        "ready_after_s": load["ready_after_s"],
        "timeline": load["timeline"],
        "command": " ".join(unit_argv),
    }


def describe(raw: dict[str, Any]) -> str:
    """One progress line."""
    if "error" in raw:
        return f"FAILED: {raw['error']}"
    replaced = ", ".join(f"{v} {k}" for k, v in raw["workers_replaced"].items()) or "none"
    return (
        f"{raw['requests']:,} requests, {raw['failed']} failed, {raw['oom_kills']} OOM kill(s), "
        f"workers replaced: {replaced}, unit restarts {raw['unit_restarts']}, "
        f"memory peak {raw['memory_peak_mib']} MiB"
    )


# ----------------------------------------------------------------------------- the section


def select(only: set[str]) -> list[Case]:
    """The cases named (all for ``leak``), with the baseline first."""
    if not only or "leak" in only:
        return list(CASES)
    wanted = [case for case in CASES if case.name in only]
    if wanted and CASES[0] not in wanted:
        wanted.insert(0, CASES[0])
    return wanted


def run(cases: list[Case], options: Options) -> list[dict[str, Any]]:
    """Start (or reuse) the one-host bench fleet, install, measure every case; the rows."""
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"leak: bench fleet host {HOST} ...", flush=True)
    if HOST not in fleet.existing():
        fleet.up(1)
    built = wheelhouse()
    venv = install(built)
    results: dict[str, dict[str, Any]] = {}
    for index, case in enumerate(cases, 1):
        print(
            f"[leak {index}/{len(cases)}] {case.label}: {options.duration:g} s at "
            f"{options.rate:g} req/s, MemoryMax={options.memory_max} ...",
            flush=True,
        )
        try:
            raw = measure(case, venv, options)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            raw = {"error": str(exc)}
        results[case.subject] = raw
        print(f"    {describe(raw)}", flush=True)
        time.sleep(1)
    base = results.get(BASELINE, {})
    rows = []
    for case in cases:
        raw = results[case.subject]
        ratio = None
        if "error" not in raw and base.get("failed"):
            ratio = round(raw["failed"] / base["failed"], 3)
        rows.append(
            {
                "bench": "leak",
                "subject": case.subject,
                "label": case.label,
                "baseline": BASELINE,
                "ratio": ratio,
                "date": date,
                "recycling": case.recycling,
                "raw": raw,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The section's lines in latest.md."""
    if not rows:
        return []
    first = next((row["raw"] for row in rows if "error" not in row["raw"]), {})
    opts = meta.get("options", {}).get("leak", {})
    duration = first.get("duration_s", opts.get("duration", 0))
    cgroup = first.get("cgroup_version")
    lines = [
        "## A leaking app under MemoryMax",
        "",
        f"Measured {_dates(rows)} on {first.get('host', HOST)}, a systemd host container of the "
        f"bench fleet (cgroup v{cgroup or '?'}); load average {_load(meta)}. "
        f"examples/hello_asgi with {WORKERS} workers in a transient unit "
        f"`systemd-run -p MemoryMax={first.get('memory_max', '?')} -p MemorySwapMax=0 "
        "-p OOMPolicy=continue -p Restart=on-failure`; bench/leak_host.py on the same host "
        f"sends {first.get('rate', 0):g} requests/s for {duration:.0f} s, each on a new "
        f"connection: every {first.get('leak_every', '?')}th is `/leak?mb={first.get('leak_mb')}` "
        f"(the worker keeps {first.get('leak_mb')} MiB more), the others "
        f"`{first.get('normal_path', '')}`. OOM kills: the kernel's counter in the unit's cgroup. "
        "Ratio: failed requests against gunicorn + uvicorn-worker's.",
        "",
        "| server (2 workers) | recycling | requests | failed | OOM kills | workers replaced "
        "| unit restarts | memory peak | ratio (failed) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        raw = row["raw"]
        if "error" in raw:
            lines.append(f"| {row['label']} | failed: {raw['error'][:80]} | | | | | | | |")
            continue
        recycling = row.get("recycling", "")
        if raw.get("memory_limit_mib"):
            recycling += f" ({raw['memory_limit_mib']:g} MiB RSS per worker)"
        replaced = ", ".join(f"{v} {k}" for k, v in raw["workers_replaced"].items()) or "0"
        share = 100 * raw["failed"] / raw["requests"] if raw["requests"] else 0
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        lines.append(
            f"| {row['label']} | {recycling} | {raw['requests']:,} | {raw['failed']:,} "
            f"({share:.2f}%) | {raw['oom_kills']} | {replaced} | {raw['unit_restarts']} "
            f"| {raw['memory_peak_mib']:.0f} MiB | {ratio} |"
        )
    lines += [
        "",
        "OOMPolicy=continue, as procslice's own units set it: a worker the kernel kills is "
        "its master's to replace (gunicorn's arbiter respawns it). On cgroup v2, systemd's "
        "default OOMPolicy=stop would stop the whole unit on each kill instead; on a cgroup "
        "v1 host like this one systemd does not see kernel OOM kills at all.",
        "",
    ]
    return lines


def _dates(rows: list[dict[str, Any]]) -> str:
    dates = sorted({row.get("date", "") for row in rows} - {""})
    return " and ".join(dates) if dates else "(undated)"


def _load(meta: dict[str, Any]) -> str:
    machine = meta.get("machine", {})
    start = machine.get("load_average_start")
    end = machine.get("load_average_end")
    if not start or not end:
        return "unknown"
    return f"{start[0]} at start, {end[0]} at end"
