"""procslice against its peers, measured in one run on this machine.

    PYTHONPATH=src .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]]

Every server runs 2 workers on a free 127.0.0.1 port, started as its own process
group, waited for (an HTTP GET answered 200), measured with wrk, then stopped
(SIGTERM to the group, SIGKILL after a grace) even when something fails.

* serving: a 2 s wrk warm-up, then ``wrk -t1 -c64 -d8s --latency``: requests/s and
  p99.  ASGI servers serve bench/apps/hello_asgi.py, gunicorn sync and gthread its
  WSGI twin; ratio = requests/s / gunicorn + uvicorn-worker's.
* raw: procslice ``--interface raw`` with bench/apps/raw_hello.py against the same
  protocol on bare uvloop (bench/apps/uvloop_reuseport.py, 2 SO_REUSEPORT
  processes); ratio = requests/s / bare uvloop's.
* reload: ``wrk -c64 -d8s`` while the master gets SIGHUP three times, 2 s apart:
  requests, socket errors and non-2xx responses (ratio null).

The figures are one run on a shared machine, so read the ratios, not the absolute
numbers (bench/results/latest.json records the load average around the run).  Goals
are reported, never asserted.  Results: bench/results/latest.json and latest.md;
server logs: bench/results/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
HOST = "127.0.0.1"
WORKERS = 2
WARMUP = 2.0
READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
RELOADS = 3
RELOAD_GAP = 2.0
RELOAD_SETTLE = 8.0  # seconds after the load for the last reload to finish

ASGI_BASELINE = "gunicorn-uvicorn"
RAW_BASELINE = "uvloop-reuseport"
GOAL_SERVING = 1.1  # procslice aio/swoole vs gunicorn + uvicorn-worker
GOAL_RAW = 0.9  # procslice raw vs bare uvloop

Argv = Callable[[int], list[str]]


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _procslice(model: str, app: str, *extra: str) -> Argv:
    def argv(port: int) -> list[str]:
        return _python(
            "-m",
            "procslice",
            model,
            app,
            "--workers",
            str(WORKERS),
            "--listen",
            f"{HOST}:{port}",
            "--log-level",
            "warning",
            *extra,
        )

    return argv


def _gunicorn(app: str, *extra: str) -> Argv:
    def argv(port: int) -> list[str]:
        return _python(
            "-m",
            "gunicorn",
            app,
            "--workers",
            str(WORKERS),
            "--bind",
            f"{HOST}:{port}",
            "--log-level",
            "warning",
            *extra,
        )

    return argv


def _uvicorn(port: int) -> list[str]:
    return _python(
        "-m",
        "uvicorn",
        "hello_asgi:app",
        "--workers",
        str(WORKERS),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    )


def _granian(port: int) -> list[str]:
    return _python(
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--workers",
        str(WORKERS),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "hello_asgi:app",
    )


def _uvloop_reuseport(port: int) -> list[str]:
    script = str(APPS / "uvloop_reuseport.py")
    return _python(script, "--host", HOST, "--port", str(port), "--workers", str(WORKERS))


@dataclass(frozen=True)
class Server:
    """A server under test: its label in the tables and how to start it on a port."""

    label: str
    argv: Argv


SERVERS: dict[str, Server] = {
    "procslice-aio": Server("procslice aio", _procslice("aio", "hello_asgi:app")),
    "procslice-swoole": Server("procslice swoole", _procslice("swoole", "hello_asgi:app")),
    "gunicorn-uvicorn": Server(
        "gunicorn + uvicorn-worker",
        _gunicorn("hello_asgi:app", "--worker-class", "uvicorn_worker.UvicornWorker"),
    ),
    "uvicorn": Server("uvicorn --workers 2", _uvicorn),
    "granian": Server("granian --workers 2 (asgi)", _granian),
    "gunicorn-sync": Server("gunicorn sync (WSGI)", _gunicorn("hello_wsgi:app")),
    "gunicorn-gthread": Server(
        "gunicorn gthread, 4 threads (WSGI)",
        _gunicorn("hello_wsgi:app", "--worker-class", "gthread", "--threads", "4"),
    ),
    "procslice-aio-raw": Server(
        "procslice aio --interface raw",
        _procslice("aio", "raw_hello:factory", "--interface", "raw"),
    ),
    "procslice-swoole-raw": Server(
        "procslice swoole --interface raw",
        _procslice("swoole", "raw_hello:factory", "--interface", "raw"),
    ),
    "uvloop-reuseport": Server("bare uvloop, 2 SO_REUSEPORT processes", _uvloop_reuseport),
}


@dataclass(frozen=True)
class Case:
    """One row: a bench kind, the server, and what its ratio is measured against."""

    bench: str  # serving | raw | reload
    server: str
    baseline: str | None

    @property
    def name(self) -> str:
        """The name ``--only`` matches: the server, prefixed ``reload-`` for reloads."""
        return f"reload-{self.server}" if self.bench == "reload" else self.server


CASES: list[Case] = [
    # The baselines first, so every ratio's denominator exists when a row is printed.
    Case("serving", ASGI_BASELINE, ASGI_BASELINE),
    Case("serving", "procslice-aio", ASGI_BASELINE),
    Case("serving", "procslice-swoole", ASGI_BASELINE),
    Case("serving", "uvicorn", ASGI_BASELINE),
    Case("serving", "granian", ASGI_BASELINE),
    Case("serving", "gunicorn-sync", ASGI_BASELINE),
    Case("serving", "gunicorn-gthread", ASGI_BASELINE),
    Case("raw", RAW_BASELINE, RAW_BASELINE),
    Case("raw", "procslice-aio-raw", RAW_BASELINE),
    Case("raw", "procslice-swoole-raw", RAW_BASELINE),
    Case("reload", "procslice-swoole", None),
    Case("reload", "procslice-aio", None),
    Case("reload", "gunicorn-uvicorn", None),
    Case("reload", "uvicorn", None),
    Case("reload", "granian", None),
    Case("reload", "gunicorn-sync", None),
]


# ----------------------------------------------------------------------------- processes

_RUNNING: set[int] = set()  # process groups started and not yet reaped


def free_port() -> int:
    """A port on HOST nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; it may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's group, SIGKILL whatever is left after STOP_GRACE."""
    pgid = proc.pid
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
        if proc.returncode is not None and not group_alive(pgid):
            break
    if group_alive(pgid):
        print(f"    (still running after {STOP_GRACE:.0f} s: SIGKILL)", flush=True)
        kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _RUNNING.discard(pgid)


def kill_leftovers() -> None:
    """SIGKILL every process group this run started and did not stop."""
    for pgid in list(_RUNNING):
        kill_group(pgid, signal.SIGKILL)
        _RUNNING.discard(pgid)


def http_ok(port: int, timeout: float = 1.0) -> bool:
    """Whether ``GET /`` on HOST:port answers 200."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def workers_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid``, less multiprocessing's resource tracker."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and b"resource_tracker" not in cmdline:
            found.add(int(entry.name))
    return found


@contextlib.contextmanager
def running(name: str, port: int, log_name: str = "") -> Iterator[subprocess.Popen[bytes]]:
    """Start server ``name`` on ``port``, wait until it answers, stop it on exit.

    Its output goes to bench/results/logs/<log_name or name>.log.
    """
    argv = SERVERS[name].argv(port)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS), str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name or name}.log"
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches every worker
        )
    _RUNNING.add(proc.pid)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not http_ok(port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"exited with {proc.returncode} before serving; {tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"not serving after {READY_TIMEOUT:.0f} s; {tail(log_path)}")
            time.sleep(0.1)
        yield proc
    finally:
        stop_server(proc)


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return f"log {path.relative_to(ROOT)}: " + " | ".join(text[-lines:])


# ----------------------------------------------------------------------------- wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, duration, requests/s, p50/p99 (ms), socket errors and non-2xx from wrk."""
    result: dict[str, Any] = {
        "requests": 0,
        "duration_s": None,
        "rps": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "non_2xx": 0,
    }
    if match := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output):
        result["requests"] = int(match.group(1))
        result["duration_s"] = round(_ms(match.group(2) + match.group(3)) / 1000, 3)
    if match := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(match.group(1))
    for percentile, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if match := re.search(rf"^\s+{percentile}%\s+(\S+)", output, re.MULTILINE):
            result[key] = round(_ms(match.group(1)), 3)
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        keys = ("connect", "read", "write", "timeout")
        result["errors"] = {
            key: int(value) for key, value in zip(keys, match.groups(), strict=True)
        }
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result["non_2xx"] = int(match.group(1))
    return result


def wrk_argv(port: int, duration: float, connections: int, latency: bool) -> list[str]:
    """The wrk command line: one thread, ``connections`` keep-alive connections."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    if latency:
        argv.append("--latency")
    return [*argv, f"http://{HOST}:{port}/"]


def connections_per_process(port: int) -> list[int]:
    """Established connections to ``port`` per server process, largest first (from ss)."""
    try:
        done = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", done.stdout):
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


def run_wrk(port: int, duration: float, connections: int, latency: bool = True) -> dict[str, Any]:
    """Run wrk to completion; its parsed figures, and how the server spread the connections.

    Keep-alive connections stay where they were accepted, so ``connections_per_worker``
    (sampled halfway) shows whether both workers had a share of the load.
    """
    argv = wrk_argv(port, duration, connections, latency)
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(duration / 2)
        spread = connections_per_process(port)
        out, err = wrk.communicate(timeout=duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk exited with {wrk.returncode}: {err.strip()}")
    result = parse_wrk(out)
    result["connections_per_worker"] = spread
    return result


def hup_times(duration: float) -> list[float]:
    """When to send the reloads: RELOADS of them RELOAD_GAP apart, all well inside the run."""
    gap = min(RELOAD_GAP, duration / (RELOADS + 1))
    return [round(gap * 0.75 + i * gap, 3) for i in range(RELOADS)]


def run_reload(proc: subprocess.Popen[bytes], port: int, options: Options) -> dict[str, Any]:
    """wrk for the run's duration while the master gets SIGHUP at :func:`hup_times`."""
    argv = wrk_argv(port, options.duration, options.connections, latency=False)
    before = workers_of(proc.pid)
    wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        sent: list[float] = []
        for at in hup_times(options.duration):
            time.sleep(max(0.0, start + at - time.monotonic()))
            os.kill(proc.pid, signal.SIGHUP)
            sent.append(round(time.monotonic() - start, 3))
        out, err = wrk.communicate(timeout=options.duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk exited with {wrk.returncode}: {err.strip()}")
    # A reload may still be under way (granian waits between respawns): give it
    # RELOAD_SETTLE seconds to replace every worker that was serving before.
    deadline = time.monotonic() + RELOAD_SETTLE
    after = workers_of(proc.pid)
    while before & after and time.monotonic() < deadline:
        time.sleep(0.2)
        after = workers_of(proc.pid)
    result = parse_wrk(out)
    result["hup_at_s"] = sent
    result["workers_before"] = len(before)
    result["workers_replaced"] = len(before - after)
    result["reloaded"] = bool(before - after)
    return result


# ----------------------------------------------------------------------------- the run


@dataclass
class Options:
    """What the command line chose."""

    duration: float
    warmup: float
    connections: int
    rounds: int = 1
    only: set[str] = field(default_factory=set)


def select(only: set[str]) -> list[Case]:
    """The cases ``--only`` names (a case name or a bench kind), plus their baselines."""
    if not only:
        return list(CASES)
    known = {case.name for case in CASES} | {case.bench for case in CASES}
    unknown = only - known
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    wanted = [case for case in CASES if case.name in only or case.bench in only]
    baselines = {(case.bench, case.baseline) for case in wanted if case.baseline}
    return [case for case in CASES if case in wanted or (case.bench, case.server) in baselines]


def measure(case: Case, options: Options) -> dict[str, Any]:
    """Start the case's server, warm it up, measure it, stop it; the raw figures."""
    port = free_port()
    argv = SERVERS[case.server].argv(port)
    with running(case.server, port, case.name) as proc:
        run_wrk(port, options.warmup, options.connections, latency=False)
        if case.bench == "reload":
            result = run_reload(proc, port, options)
        else:
            result = run_wrk(port, options.duration, options.connections)
    result["command"] = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
    return result


def describe(case: Case, raw: dict[str, Any]) -> str:
    """One progress line's figures."""
    if "error" in raw:
        return f"FAILED: {raw['error']}"
    if case.bench == "reload":
        errors = raw["errors"]
        return (
            f"{raw['requests']:,} requests, socket errors connect {errors['connect']} "
            f"read {errors['read']} write {errors['write']} timeout {errors['timeout']}, "
            f"non-2xx {raw['non_2xx']}, {raw['workers_replaced']} worker(s) replaced"
        )
    spread = "/".join(map(str, raw.get("connections_per_worker", []))) or "?"
    return f"{raw['rps']:,.0f} req/s, p99 {raw['p99_ms']} ms, connections per worker {spread}"


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's figures over its rounds: the medians, with every round kept."""
    if len(results) == 1:
        return results[0]
    good = [result for result in results if "error" not in result]
    if not good:
        return {"error": results[-1]["error"], "rounds": results}
    combined = dict(good[len(good) // 2])
    for key in ("rps", "p50_ms", "p99_ms"):
        values = [result[key] for result in good if result[key] is not None]
        combined[key] = statistics.median(values) if values else None
    combined["requests"] = sum(result["requests"] for result in good)
    combined["errors"] = {
        key: sum(result["errors"][key] for result in good) for key in good[0]["errors"]
    }
    combined["non_2xx"] = sum(result["non_2xx"] for result in good)
    combined["rounds"] = results
    return combined


def run(cases: list[Case], options: Options) -> list[dict[str, Any]]:
    """Measure every case (serving and raw ones ``rounds`` times, interleaved); its rows.

    A failed measurement records its error and the run goes on.
    """
    rounds = max(1, options.rounds)
    plan = [
        (number, case)
        for number in range(1, rounds + 1)
        for case in cases
        if case.bench != "reload" or number == rounds
    ]
    results: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    for index, (number, case) in enumerate(plan, 1):
        label = SERVERS[case.server].label
        suffix = f" (round {number}/{rounds})" if rounds > 1 and case.bench != "reload" else ""
        print(f"[{index}/{len(plan)}] {case.bench}: {label}{suffix} ...", flush=True)
        try:
            raw = measure(case, options)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raw = {"error": str(exc)}
        results[case].append(raw)
        line = describe(case, raw)
        base = results.get(Case(case.bench, case.baseline or "", case.baseline))
        if case.bench != "reload" and "error" not in raw and base and "error" not in base[-1]:
            line += f", {raw['rps'] / base[-1]['rps']:.2f}x {case.baseline}"
        print(f"    {line}", flush=True)
    rows: list[dict[str, Any]] = []
    for case in cases:
        raw = combine(results[case])
        ratio: float | None = None
        base = results.get(Case(case.bench, case.baseline or "", case.baseline))
        if case.bench != "reload" and base and "error" not in raw:
            base_raw = combine(base)
            if "error" not in base_raw and base_raw["rps"]:
                ratio = round(raw["rps"] / base_raw["rps"], 3)
        rows.append(
            {
                "bench": case.bench,
                "subject": case.server,
                "label": SERVERS[case.server].label,
                "baseline": case.baseline,
                "ratio": ratio,
                "raw": raw,
            }
        )
    return rows


def versions() -> dict[str, str]:
    """Versions of every server and library measured, and of wrk."""
    found: dict[str, str] = {}
    for dist in ("procslice", "gunicorn", "uvicorn", "uvicorn-worker", "granian", "uvloop"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    with contextlib.suppress(ImportError):
        import procslice

        found["procslice"] = procslice.__version__
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found["httptools"] = importlib.metadata.version("httptools")
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    found["wrk"] = first[0].split(" Copyright")[0].removeprefix("wrk ") if first else "unknown"
    return found


def machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    """The machine section of the results (the end load average is read now)."""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "load_average_start": [round(value, 2) for value in load_start],
        "load_average_end": [round(value, 2) for value in os.getloadavg()],
    }


# ----------------------------------------------------------------------------- reports


def find(rows: list[dict[str, Any]], bench: str, subject: str) -> dict[str, Any] | None:
    """The row of ``subject`` in ``bench``, if measured."""
    for row in rows:
        if row["bench"] == bench and row["subject"] == subject:
            return row
    return None


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal, the figure this run measured for it, and whether it was met."""
    checks: list[dict[str, Any]] = []
    for bench, subject, target, against in (
        ("serving", "procslice-aio", GOAL_SERVING, "gunicorn + uvicorn-worker"),
        ("serving", "procslice-swoole", GOAL_SERVING, "gunicorn + uvicorn-worker"),
        ("raw", "procslice-aio-raw", GOAL_RAW, "bare uvloop"),
        ("raw", "procslice-swoole-raw", GOAL_RAW, "bare uvloop"),
    ):
        row = find(rows, bench, subject)
        if row is None:
            continue
        ratio = row["ratio"]
        checks.append(
            {
                "goal": f"{row['label']} >= {target}x {against}",
                "measured": "not measured" if ratio is None else f"{ratio:.2f}x",
                "met": None if ratio is None else ratio >= target,
            }
        )
    for subject in ("procslice-swoole", "procslice-aio"):
        row = find(rows, "reload", subject)
        if row is None:
            continue
        raw = row["raw"]
        goal = f"{row['label']}: zero socket errors across {RELOADS} reloads"
        if "error" in raw:
            checks.append({"goal": goal, "measured": "failed", "met": None})
            continue
        errors = sum(raw["errors"].values())
        measured = (
            f"{errors} socket errors, {raw['non_2xx']} non-2xx, "
            f"{raw['workers_replaced']} of {raw['workers_before']} worker(s) replaced"
        )
        # A server that did not reload has not met the goal, whatever its error count.
        checks.append({"goal": goal, "measured": measured, "met": errors == 0 and raw["reloaded"]})
    return checks


def _fmt_ratio(row: dict[str, Any]) -> str:
    return "—" if row["ratio"] is None else f"{row['ratio']:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    """bench/results/latest.md: the tables and the goals."""
    info = report["machine"]
    options = report["options"]
    rows: list[dict[str, Any]] = report["rows"]
    versions_line = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"# procslice benchmarks: one run, {report['date']}",
        "",
        f"{info['cpus']} CPUs ({info['cpus_usable']} usable), Python {info['python']}; "
        f"{versions_line}.",
        f"{WORKERS} workers per server on {HOST}, load generator on the same machine: "
        f"`wrk -t1 -c{options['connections']} -d{options['duration']:g}s` after a "
        f"{options['warmup']:g} s warm-up"
        + (
            f", serving and raw cases measured {options['rounds']} times interleaved (medians)"
            if options["rounds"] > 1
            else ""
        )
        + f". Load average (1/5/15 min) at start "
        f"{'/'.join(map(str, info['load_average_start']))}, at end "
        f"{'/'.join(map(str, info['load_average_end']))}: other work shared the machine, "
        "so read the ratios, not the absolute figures.",
        "",
    ]
    for bench, title, baseline in (
        ("serving", "Serving: hello world", "gunicorn + uvicorn-worker"),
        ("raw", "Raw mode: an asyncio.Protocol hello-HTTP responder", "bare uvloop"),
    ):
        chosen = [row for row in rows if row["bench"] == bench]
        if not chosen:
            continue
        lines += [
            f"## {title}",
            "",
            f"| server ({WORKERS} workers) | requests/s | p99 | ratio vs {baseline} "
            "| connections per worker |",
            "|---|---:|---:|---:|---|",
        ]
        for row in chosen:
            raw = row["raw"]
            if "error" in raw:
                lines.append(f"| {row['label']} | failed: {raw['error'][:80]} | | | |")
                continue
            p99 = "—" if raw["p99_ms"] is None else f"{raw['p99_ms']:.2f} ms"
            spread = "/".join(map(str, raw.get("connections_per_worker", []))) or "—"
            lines.append(
                f"| {row['label']} | {raw['rps']:,.0f} | {p99} | {_fmt_ratio(row)} | {spread} |"
            )
        lines.append("")
    chosen = [row for row in rows if row["bench"] == "reload"]
    if chosen:
        lines += [
            "## Reloads under keep-alive load",
            "",
            f"`wrk -c{options['connections']} -d{options['duration']:g}s` while the master "
            f"gets SIGHUP {RELOADS} times, at "
            f"{', '.join(f'{at:g}' for at in hup_times(options['duration']))} s.",
            "",
            "| server | requests | socket errors (connect/read/write/timeout) | non-2xx "
            "| workers replaced |",
            "|---|---:|---|---:|---:|",
        ]
        for row in chosen:
            raw = row["raw"]
            if "error" in raw:
                lines.append(f"| {row['label']} | failed: {raw['error'][:80]} | | | |")
                continue
            errors = raw["errors"]
            total = sum(errors.values())
            detail = "/".join(str(errors[k]) for k in ("connect", "read", "write", "timeout"))
            replaced = (
                f"{raw['workers_replaced']} of {raw['workers_before']}"
                if raw["reloaded"]
                else "no reload"
            )
            lines.append(
                f"| {row['label']} | {raw['requests']:,} | {total} ({detail}) "
                f"| {raw['non_2xx']} | {replaced} |"
            )
        lines.append("")
    checks = report["goals"]
    if checks:
        lines += [
            "## Goals",
            "",
            f"procslice aio and swoole >= {GOAL_SERVING}x gunicorn + uvicorn-worker; "
            f">= {GOAL_RAW}x bare uvloop in raw mode; zero socket errors across reloads. "
            "In this run:",
            "",
        ]
        for check in checks:
            verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
            lines.append(f"- {check['goal']}: {check['measured']} — **{verdict}**")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Options:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per measured wrk run (8)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk keep-alive connections (64)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 s warm-up, 1 s per wrk run"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure serving and raw cases this many times, interleaved, and report the "
        "medians (1); steadier ratios on a busy machine",
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help="measure only these (case names, or serving/raw/reload); baselines are added. "
        "Names: " + ", ".join(dict.fromkeys(case.name for case in CASES)),
    )
    args = parser.parse_args(argv)
    warmup = 1.0 if args.quick else WARMUP
    duration = float(args.duration or (1 if args.quick else 8))
    if duration < 1 or args.connections < 1:
        parser.error("--duration and --connections must be at least 1")
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    return Options(
        duration=duration,
        warmup=warmup,
        connections=args.connections,
        rounds=args.rounds,
        only=only,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases; write bench/results/latest.json and latest.md."""
    options = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    cases = select(options.only)
    signal.signal(signal.SIGTERM, _terminate)
    load_start = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC)
    print(
        f"bench: {len(cases)} case(s), wrk -t1 -c{options.connections} -d{options.duration:g}s "
        f"after {options.warmup:g} s warm-up; load average {load_start[0]:.2f}",
        flush=True,
    )
    try:
        rows = run(cases, options)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()
    report: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load_start),
        "options": {
            "duration": options.duration,
            "warmup": options.warmup,
            "connections": options.connections,
            "workers": WORKERS,
            "rounds": options.rounds,
            "only": sorted(options.only),
        },
        "rows": rows,
    }
    report["goals"] = goals(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / "latest.md").write_text(text)
    print(f"\n{text}")
    print(f"bench: wrote {(RESULTS / 'latest.json').relative_to(ROOT)} and latest.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
