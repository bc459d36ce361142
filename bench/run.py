"""procslice against its peers, measured on this machine.

    PYTHONPATH=src .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]]
    make bench [BENCH_ONLY=serving,leak,deploy-1] [BENCH_ARGS=--quick]

Every server runs 2 workers on a free 127.0.0.1 port, started as its own process
group, waited for (an HTTP GET answered 200), measured with wrk, then stopped
(SIGTERM to the group, SIGKILL after a grace) even when something fails.

* serving: a 2 s wrk warm-up, then ``wrk -t1 -c64 -d8s --latency``: requests/s and
  p99.  procslice aio and swoole run on both listener paths: socket-activated, as
  every deployed unit runs (one listening socket made here like the .socket unit's
  and passed as fd 3 with LISTEN_FDS/LISTEN_PID by bench/activate.py; the workers
  share it), and ``--listen`` (the master binds the address, one SO_REUSEPORT socket
  per worker slot).  Their ``--listen`` twins with ``--request-metrics false`` give
  the per-request metrics' cost (the ratio of the two rows).  ASGI servers serve
  bench/apps/hello_asgi.py, gunicorn sync and gthread its WSGI twin; ratio =
  requests/s / gunicorn + uvicorn-worker's; each procslice row also carries its
  ratio to uvicorn's and granian's of the same run (``peer_ratios``).
* raw: procslice ``--interface raw`` with bench/apps/raw_hello.py against the same
  protocol on bare uvloop (bench/apps/uvloop_reuseport.py, 2 SO_REUSEPORT
  processes); ratio = requests/s / bare uvloop's.
* reload: ``wrk -c64 -d8s`` while the master gets SIGHUP three times, 2 s apart:
  requests, socket errors and non-2xx responses (ratio null).
* leak (bench/leak.py): a leaking app under MemoryMax on a host of the bench fleet,
  gunicorn against procslice swoole's memory recycling: OOM kills, failed requests,
  worker replacements; ratio = failed requests / gunicorn + uvicorn-worker's.
* deploy (bench/deploy_times.py): deploy.yml on fresh fleets of 1, 3 and 6 hosts:
  first deploy, no-op re-deploy, --check --diff, a live limit change (deploy.yml, then
  playbooks/limits.yml) and a code change of one service under load (its failed
  requests counted); ratio = seconds / the floor (a one-task playbook on the same fleet).

The leak and deploy sections start their own fleet (bench/fleet.py: containers
procslice-bfleet<i>) and destroy it at the end (``--keep-fleet`` keeps it).

The figures are one run on a shared machine, so read the ratios, not the absolute
numbers (bench/results/latest.json records the load average around each section).
Goals are reported, never asserted.  Results: bench/results/latest.json, latest.md
and serving.png (the serving figures, drawn with matplotlib); logs:
bench/results/logs/.  A run replaces the rows it measured in latest.json and keeps
the others (each row and section carries its date), so one section can be measured
again alone; ``--no-merge`` writes the files from this run only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

import activate
import chart
import deploy_times
import fleet
import leak

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
SECTIONS = ("serving", "raw", "reload", "leak", "deploy")  # the order of latest.md

Argv = Callable[[int], list[str]]


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _procslice(model: str, app: str, *extra: str, listen: bool = True) -> Argv:
    """procslice ``model`` on ``--listen HOST:port``, or (``listen=False``) on no address
    of its own: socket-activated, it serves on the socket it inherits (bench/activate.py)."""

    def argv(port: int) -> list[str]:
        address = ["--listen", f"{HOST}:{port}"] if listen else []
        return _python(
            "-m",
            "procslice",
            model,
            app,
            "--workers",
            str(WORKERS),
            *address,
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
    """A server under test: its label in the tables and how to start it on a port.

    ``activated``: started as systemd starts a socket unit's service, the port's one
    listening socket made here and passed as fd 3 (bench/activate.py).
    """

    label: str
    argv: Argv
    activated: bool = False


# procslice aio and swoole on both listener paths: socket-activated, one socket shared by
# the workers, as every deployed aio and swoole unit runs (its .socket unit sets
# ReusePort=false); and --listen, where the master binds the address with SO_REUSEPORT
# and opens one more socket in its group per worker slot.
ACTIVATED = "socket-activated, as deployed"
LISTEN = "--listen, a socket per worker"
PEERS = ("gunicorn-uvicorn", "uvicorn", "granian")  # the ASGI peers every ratio line names

SERVERS: dict[str, Server] = {
    "procslice-aio-activated": Server(
        f"procslice aio ({ACTIVATED})", _procslice("aio", "hello_asgi:app", listen=False), True
    ),
    "procslice-swoole-activated": Server(
        f"procslice swoole ({ACTIVATED})",
        _procslice("swoole", "hello_asgi:app", listen=False),
        True,
    ),
    "procslice-aio": Server(f"procslice aio ({LISTEN})", _procslice("aio", "hello_asgi:app")),
    "procslice-swoole": Server(
        f"procslice swoole ({LISTEN})", _procslice("swoole", "hello_asgi:app")
    ),
    # the same, without the per-request metrics (procslice_http_*): their cost
    "procslice-aio-no-request-metrics": Server(
        "procslice aio --request-metrics false (--listen)",
        _procslice("aio", "hello_asgi:app", "--request-metrics", "false"),
    ),
    "procslice-swoole-no-request-metrics": Server(
        "procslice swoole --request-metrics false (--listen)",
        _procslice("swoole", "hello_asgi:app", "--request-metrics", "false"),
    ),
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
    Case("serving", "procslice-aio-activated", ASGI_BASELINE),
    Case("serving", "procslice-swoole-activated", ASGI_BASELINE),
    Case("serving", "procslice-aio", ASGI_BASELINE),
    Case("serving", "procslice-swoole", ASGI_BASELINE),
    Case("serving", "procslice-aio-no-request-metrics", ASGI_BASELINE),
    Case("serving", "procslice-swoole-no-request-metrics", ASGI_BASELINE),
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

    A socket-activated server gets the port's listening socket from here, as fd 3
    (bench/activate.py); the bench closes its own copy once the server has started.
    Its output goes to bench/results/logs/<log_name or name>.log.
    """
    server = SERVERS[name]
    argv = server.argv(port)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS), str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name or name}.log"
    listener = activate.listening_socket(HOST, port) if server.activated else None
    try:
        if listener is not None:
            argv = activate.command(listener.fileno(), argv)
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
                pass_fds=() if listener is None else (listener.fileno(),),
            )
    finally:
        if listener is not None:
            listener.close()
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
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"log {shown}: " + " | ".join(text[-lines:])


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
    leak_options: leak.Options = field(default_factory=leak.Options)
    deploy_sizes: list[int] = field(default_factory=list)
    keep_fleet: bool = False
    merge: bool = True
    render_only: bool = False


def known_names() -> list[str]:
    """Every name ``--only`` takes: sections, wrk cases, leak cases, deploy sizes."""
    names = [*SECTIONS, *(case.name for case in CASES), *leak.NAMES, *deploy_times.NAMES]
    return list(dict.fromkeys(names))


def wants(only: set[str], section: str, names: list[str]) -> bool:
    """Whether ``--only`` (empty: everything) asks for any of a section's names."""
    return not only or section in only or bool(only & set(names))


def select(only: set[str]) -> list[Case]:
    """The wrk cases ``--only`` names (a case name or a bench kind), plus their baselines.

    Names of the leak and deploy sections are accepted and select no wrk case.
    """
    if not only:
        return list(CASES)
    known = set(known_names())
    unknown = only - known
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(known_names())})"
        )
    wanted = [case for case in CASES if case.name in only or case.bench in only]
    baselines = {(case.bench, case.baseline) for case in wanted if case.baseline}
    return [case for case in CASES if case in wanted or (case.bench, case.server) in baselines]


def measure(case: Case, options: Options) -> dict[str, Any]:
    """Start the case's server, warm it up, measure it, stop it; the raw figures."""
    port = free_port()
    server = SERVERS[case.server]
    argv = [Path(arg).name if arg == sys.executable else arg for arg in server.argv(port)]
    if server.activated:  # what running() does, as one would type it
        argv = [argv[0], "bench/activate.py", "--listen", f"{HOST}:{port}", "--", *argv]
    with running(case.server, port, case.name) as proc:
        run_wrk(port, options.warmup, options.connections, latency=False)
        if case.bench == "reload":
            result = run_reload(proc, port, options)
        else:
            result = run_wrk(port, options.duration, options.connections)
    result["command"] = " ".join(argv)
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
    combined = {(case.bench, case.server): combine(results[case]) for case in cases}
    for case in cases:
        raw = combined[(case.bench, case.server)]
        ratio: float | None = None
        base_raw = combined.get((case.bench, case.baseline or ""))
        if (
            case.bench != "reload"
            and base_raw
            and "error" not in raw
            and "error" not in base_raw
            and base_raw["rps"]
        ):
            ratio = round(raw["rps"] / base_raw["rps"], 3)
        row = {
            "bench": case.bench,
            "subject": case.server,
            "label": SERVERS[case.server].label,
            "baseline": case.baseline,
            "ratio": ratio,
            "raw": raw,
        }
        if case.bench == "serving" and case.server.startswith("procslice") and "error" not in raw:
            row["peer_ratios"] = peer_ratios(raw, combined)
        rows.append(row)
    return rows


def peer_ratios(
    raw: dict[str, Any], combined: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, float]:
    """A procslice serving row's requests/s over each ASGI peer's measured in this run."""
    ratios: dict[str, float] = {}
    for peer in PEERS:
        peer_raw = combined.get(("serving", peer))
        if peer_raw and "error" not in peer_raw and peer_raw["rps"]:
            ratios[peer] = round(raw["rps"] / peer_raw["rps"], 3)
    return ratios


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
    if shutil.which("wrk") is None:
        found["wrk"] = "not installed"
        return found
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
        ("serving", "procslice-aio-activated", GOAL_SERVING, "gunicorn + uvicorn-worker"),
        ("serving", "procslice-swoole-activated", GOAL_SERVING, "gunicorn + uvicorn-worker"),
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
    row = find(rows, "leak", "procslice-swoole")
    if row is not None:
        raw = row["raw"]
        goal = f"{row['label']}: no OOM kill and no failed request under the leak"
        if "error" in raw:
            checks.append({"goal": goal, "measured": "failed", "met": None})
        else:
            replaced = sum(raw["workers_replaced"].values())
            checks.append(
                {
                    "goal": goal,
                    "measured": f"{raw['oom_kills']} OOM kills, {raw['failed']} failed of "
                    f"{raw['requests']:,}, {replaced} worker(s) recycled",
                    "met": raw["oom_kills"] == 0 and raw["failed"] == 0,
                }
            )
    return checks


def _fmt_ratio(row: dict[str, Any]) -> str:
    return "—" if row["ratio"] is None else f"{row['ratio']:.2f}x"


def _loads(meta: dict[str, Any]) -> str:
    info = meta.get("machine", {})
    start, end = info.get("load_average_start"), info.get("load_average_end")
    if not start or not end:
        return "Load average not recorded"
    return (
        f"Load average (1/5/15 min) at start {'/'.join(map(str, start))}, "
        f"at end {'/'.join(map(str, end))}"
    )


def _dated(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The newest date of a section's rows, and how to say when they were measured."""
    dates = sorted({row.get("date", "") for row in rows} - {""})
    if not dates:
        return "", "Measured on an unrecorded date"
    if len(dates) == 1:
        return dates[0], f"Measured {dates[0]}"
    return dates[-1], (
        f"Measured in {len(dates)} runs, {dates[0]} to {dates[-1]}; rows from an earlier run "
        "carry their date, and what follows describes the newest run"
    )


def _label(row: dict[str, Any], newest: str) -> str:
    date = row.get("date", "")
    return row["label"] if not date or date == newest else f"{row['label']} ({date})"


def _wrk_line(meta: dict[str, Any]) -> str:
    options = meta.get("options", {})
    line = (
        f"{WORKERS} workers per server on {HOST}, load generator on the same machine: "
        f"`wrk -t1 -c{options.get('connections', '?')} -d{options.get('duration', 0):g}s` "
        f"after a {options.get('warmup', 0):g} s warm-up"
    )
    if options.get("rounds", 1) > 1:
        line += f", measured {options['rounds']} times interleaved (medians)"
    return line


def _paths(rows: list[dict[str, Any]]) -> list[str]:
    """The serving section's two listener paths, and procslice against each ASGI peer."""
    mine = [row for row in rows if "peer_ratios" in row and "error" not in row["raw"]]
    if not mine:
        return []
    peers = [SERVERS[peer].label for peer in PEERS]
    lines = [
        "procslice aio and swoole on both listener paths. **Socket-activated, as deployed**: "
        "the one listening socket made by the bench as the service's .socket unit makes it "
        "(no SO_REUSEPORT, backlog 2048) and passed as fd 3 with LISTEN_FDS and LISTEN_PID "
        "(bench/activate.py), every worker accepting on it; this is how every deployed aio "
        "and swoole unit runs, and the figure the docs quote. **--listen**: the master binds "
        "the address with SO_REUSEPORT and opens one more socket in its group per worker "
        "slot, so the kernel spreads the connections evenly. The same app, workers and load "
        "otherwise. Each procslice row against each ASGI peer, measured in the same run "
        "(— : the peer was not measured in that run):",
        "",
        "| procslice (2 workers) | requests/s | " + " | ".join(f"vs {p}" for p in peers) + " |",
        "|---|---:|" + "---:|" * len(peers),
    ]
    for row in mine:
        ratios = row["peer_ratios"]
        cells = [f"{ratios[peer]:.2f}x" if peer in ratios else "—" for peer in PEERS]
        lines.append(f"| {row['label']} | {row['raw']['rps']:,.0f} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(report: dict[str, Any]) -> str:
    """bench/results/latest.md: the tables, each section dated, and the goals."""
    info = report["machine"]
    rows: list[dict[str, Any]] = report["rows"]
    sections: dict[str, Any] = report.get("sections", {})
    versions_line = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        "# procslice benchmarks",
        "",
        f"Latest run {report['date']}; every section says when it was measured "
        "(`make bench BENCH_ONLY=<section>` measures one again and keeps the others). "
        f"{info['cpus']} CPUs ({info['cpus_usable']} usable), Python {info['python']}; "
        f"{versions_line}. Other work shared the machine, so read the ratios, not the "
        "absolute figures.",
        "",
    ]
    for bench, title, baseline in (
        ("serving", "Serving: hello world", "gunicorn + uvicorn-worker"),
        ("raw", "Raw mode: an asyncio.Protocol hello-HTTP responder", "bare uvloop"),
    ):
        chosen = [row for row in rows if row["bench"] == bench]
        if not chosen:
            continue
        meta = sections.get(bench, {})
        newest, when = _dated(chosen)
        lines += [
            f"## {title}",
            "",
            f"{when}: {_wrk_line(meta)}. {_loads(meta)}.",
            "",
            f"| server ({WORKERS} workers) | requests/s | p99 | ratio vs {baseline} "
            "| connections per worker |",
            "|---|---:|---:|---:|---|",
        ]
        for row in chosen:
            raw = row["raw"]
            label = _label(row, newest)
            if "error" in raw:
                lines.append(f"| {label} | failed: {raw['error'][:80]} | | | |")
                continue
            p99 = "—" if raw["p99_ms"] is None else f"{raw['p99_ms']:.2f} ms"
            spread = "/".join(map(str, raw.get("connections_per_worker", []))) or "—"
            lines.append(f"| {label} | {raw['rps']:,.0f} | {p99} | {_fmt_ratio(row)} | {spread} |")
        lines.append("")
        if bench == "serving":
            lines += _paths(chosen)
        if bench == "raw" and report.get("chart"):
            lines += [f"![requests/s per server, with the ratios]({report['chart']})", ""]
    if report.get("chart") and not any(row["bench"] == "raw" for row in rows):
        lines += [f"![requests/s per server, with the ratios]({report['chart']})", ""]
    chosen = [row for row in rows if row["bench"] == "reload"]
    if chosen:
        meta = sections.get("reload", {})
        options = meta.get("options", {})
        newest, when = _dated(chosen)
        duration = float(options.get("duration", 8))
        lines += [
            "## Reloads under keep-alive load",
            "",
            f"{when}: `wrk -c{options.get('connections', '?')} -d{duration:g}s` while the "
            f"master gets SIGHUP {RELOADS} times, at "
            f"{', '.join(f'{at:g}' for at in hup_times(duration))} s. {_loads(meta)}.",
            "",
            "| server | requests | socket errors (connect/read/write/timeout) | non-2xx "
            "| workers replaced |",
            "|---|---:|---|---:|---:|",
        ]
        for row in chosen:
            raw = row["raw"]
            label = _label(row, newest)
            if "error" in raw:
                lines.append(f"| {label} | failed: {raw['error'][:80]} | | | |")
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
                f"| {label} | {raw['requests']:,} | {total} ({detail}) "
                f"| {raw['non_2xx']} | {replaced} |"
            )
        lines.append("")
    lines += leak.markdown(
        [row for row in rows if row["bench"] == "leak"], sections.get("leak", {})
    )
    lines += deploy_times.markdown(
        [row for row in rows if row["bench"] == "deploy"], sections.get("deploy", {})
    )
    checks = report["goals"]
    if checks:
        lines += [
            "## Goals",
            "",
            f"procslice aio and swoole >= {GOAL_SERVING}x gunicorn + uvicorn-worker on both "
            "listener paths (socket-activated is what deployments run); "
            f">= {GOAL_RAW}x bare uvloop in raw mode; zero socket errors across reloads; "
            "swoole under a leak: no OOM kill, no failed request. Measured:",
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
        "--quick",
        action="store_true",
        help="a smoke run: 1 s warm-up, 1 s per wrk run, 10 s of leak, 1-host deploy only",
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
        help="measure only these (sections, or case names); wrk and leak baselines are "
        "added. Names: " + ", ".join(known_names()),
    )
    parser.add_argument(
        "--leak-duration", type=int, default=None, help="seconds of load per leak case (60)"
    )
    parser.add_argument(
        "--keep-fleet",
        action="store_true",
        help="leave the bench fleet (procslice-bfleet*) running after the leak and deploy sections",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: write latest.md and serving.png again from latest.json",
    )
    parser.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="write latest.json and latest.md from this run only, instead of replacing the "
        "rows it measured and keeping the others",
    )
    args = parser.parse_args(argv)
    warmup = 1.0 if args.quick else WARMUP
    duration = float(args.duration or (1 if args.quick else 8))
    if duration < 1 or args.connections < 1:
        parser.error("--duration and --connections must be at least 1")
    leak_duration = float(args.leak_duration or (10 if args.quick else 60))
    if leak_duration < 5:
        parser.error("--leak-duration must be at least 5")
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    sizes: list[int] = []
    if wants(only, "deploy", deploy_times.NAMES):
        sizes = deploy_times.select(only)
        if args.quick and not only & set(deploy_times.NAMES):
            sizes = sizes[:1]
    return Options(
        duration=duration,
        warmup=warmup,
        connections=args.connections,
        rounds=args.rounds,
        only=only,
        leak_options=leak.Options(duration=leak_duration),
        deploy_sizes=sizes,
        keep_fleet=args.keep_fleet,
        merge=args.merge,
        render_only=args.render_only,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def section_meta(
    started: datetime.datetime, load_start: tuple[float, float, float], options: dict[str, Any]
) -> dict[str, Any]:
    """A section's date, machine (load average around it) and options."""
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load_start),
        "options": options,
    }


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def previous_report(path: Path) -> dict[str, Any] | None:
    """latest.json as the last runs left it, with every row and section dated."""
    try:
        report: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report.get("rows"), list):
        return None
    sections = report.setdefault("sections", {})
    for row in report["rows"]:
        # Files from before sections were dated: the whole run had one date.
        row.setdefault("date", report.get("date", ""))
        sections.setdefault(
            row["bench"],
            {
                "date": report.get("date", ""),
                "machine": report.get("machine", {}),
                "options": report.get("options", {}),
            },
        )
    return report


def merge(previous: dict[str, Any] | None, report: dict[str, Any]) -> dict[str, Any]:
    """This run's rows and sections over the previous ones, in SECTIONS order.

    Within a section the wrk rows follow CASES (a case new to the file lands in its
    place, not last); other rows keep their order.
    """
    if previous is None:
        return report
    fresh = {(row["bench"], row["subject"]): row for row in report["rows"]}
    rows = [fresh.pop((row["bench"], row["subject"]), row) for row in previous["rows"]]
    rows += list(fresh.values())
    order = {name: index for index, name in enumerate(SECTIONS)}
    cases = {(case.bench, case.server): index for index, case in enumerate(CASES)}
    rows.sort(  # stable: rows of equal keys keep their order
        key=lambda row: (
            order.get(row["bench"], len(order)),
            cases.get((row["bench"], row["subject"]), len(cases)),
        )
    )
    merged = dict(report)
    merged["rows"] = rows
    merged["sections"] = {**previous.get("sections", {}), **report["sections"]}
    return merged


def write(report: dict[str, Any]) -> str:
    """Goals, chart, latest.json and latest.md from a report; the markdown."""
    report["goals"] = goals(report["rows"])
    serving = report.get("sections", {}).get("serving", {})
    drawn = chart.draw(
        [row for row in report["rows"] if row["bench"] in ("serving", "raw")],
        RESULTS / "serving.png",
        subtitle=f"procslice bench/results/latest.md, serving measured "
        f"{serving.get('date', '?')}, {report['machine']['cpus']} CPUs, 2 workers per "
        "server, wrk on the same machine",
    )
    report["chart"] = drawn.name if drawn else None
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / "latest.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections; merge them into bench/results/latest.json, latest.md."""
    options = parse_args(argv)
    if options.render_only:
        previous = previous_report(RESULTS / "latest.json")
        if previous is None:
            print("bench: no bench/results/latest.json to render", file=sys.stderr)
            return 2
        write(previous)
        print("bench: wrote bench/results/latest.md and serving.png from latest.json")
        return 0
    cases = select(options.only)
    leak_cases = leak.select(options.only) if wants(options.only, "leak", leak.NAMES) else []
    if cases and shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    load_start = os.getloadavg()
    started = _now()
    print(
        f"bench: {len(cases)} wrk case(s), wrk -t1 -c{options.connections} "
        f"-d{options.duration:g}s after {options.warmup:g} s warm-up; "
        f"{len(leak_cases)} leak case(s) of {options.leak_options.duration:g} s; deploy times on "
        f"{', '.join(map(str, options.deploy_sizes)) or 'no'} host fleet(s); "
        f"load average {load_start[0]:.2f}",
        flush=True,
    )
    wrk_options = {
        "duration": options.duration,
        "warmup": options.warmup,
        "connections": options.connections,
        "workers": WORKERS,
        "rounds": options.rounds,
    }
    rows: list[dict[str, Any]] = []
    sections: dict[str, Any] = {}
    used_fleet = bool(leak_cases or options.deploy_sizes)
    try:
        if cases:
            wrk_rows = run(cases, options)
            meta = section_meta(started, load_start, wrk_options)
            for row in wrk_rows:
                row["date"] = meta["date"]
                sections[row["bench"]] = meta
            rows += wrk_rows
        if leak_cases:
            leak_load, leak_started = os.getloadavg(), _now()
            rows += leak.run(leak_cases, options.leak_options)
            sections["leak"] = section_meta(
                leak_started, leak_load, {"leak": dataclasses.asdict(options.leak_options)}
            )
        if options.deploy_sizes:
            deploy_load, deploy_started = os.getloadavg(), _now()
            rows += deploy_times.run(options.deploy_sizes)
            sections["deploy"] = section_meta(
                deploy_started, deploy_load, {"sizes": options.deploy_sizes}
            )
    except KeyboardInterrupt:
        print("bench: interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()
        if used_fleet and not options.keep_fleet:
            print("bench: destroying the bench fleet", flush=True)
            try:
                fleet.down()
            except (RuntimeError, OSError) as exc:
                print(f"bench: {exc}", file=sys.stderr)
    report: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load_start),
        "options": {**wrk_options, "only": sorted(options.only)},
        "sections": sections,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    if options.merge:
        report = merge(previous_report(latest), report)
    text = write(report)
    print(f"\n{text}")
    print(f"bench: wrote {latest.relative_to(ROOT)}, latest.md and serving.png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
