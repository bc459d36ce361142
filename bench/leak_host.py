"""The leak bench's host side: copied to the fleet host and run there (standard library only).

    python3 leak_host.py load --port 8000 --unit NAME [--duration 60 --rate 200 ...]
    python3 leak_host.py probe --unit NAME --since EPOCH [--metrics URL]

``load`` waits until ``GET /healthz`` answers 200, then drives the service open loop:
request ``i`` starts at ``i / rate`` seconds whatever happened to the earlier ones, so
a server that stalls or loses a worker meets the arrivals a real one would.  Every
``leak_every``-th request is ``GET /leak?mb=N`` (the app keeps N MiB more in the
worker that served it), the others ``GET <normal_path>`` (by default ``/slow?ms=50``:
a request that waits 50 ms, like an app waiting on its database, so a worker always
has some in flight).  Each request opens its own connection (``Connection: close``):
a failure is the server's, never a stale keep-alive connection's.  Every second it
also reads the unit's cgroup: memory in use and the kernel's OOM-kill counter
(cgroup v1 ``memory.oom_control``, v2 ``memory.events``), summed across a cgroup
that is recreated by a unit restart.

``probe`` reports what systemd and the service say afterwards: the unit's state and
NRestarts, its cgroup's OOM kills and memory peak, the journal's OOM and worker-boot
lines since ``EPOCH``, and (``--metrics``) procslice's worker restarts by reason.

Both print one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

KINDS = ("connect", "reset", "timeout", "status")
CGROUP = Path("/sys/fs/cgroup")


# ----------------------------------------------------------------------------- cgroup


def control_group(unit: str) -> str:
    """The unit's cgroup path, as systemd reports it ("" when it has none)."""
    done = subprocess.run(
        ["systemctl", "show", "-P", "ControlGroup", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def read_memory(cgroup: str) -> dict[str, int] | None:
    """The cgroup's memory in use, peak and OOM-kill count (v1 or v2), or None if gone."""
    if not cgroup:
        return None
    v1 = CGROUP / "memory" / cgroup.lstrip("/")
    v2 = CGROUP / cgroup.lstrip("/")
    try:
        if (v1 / "memory.oom_control").is_file():
            control = (v1 / "memory.oom_control").read_text()
            return {
                "cgroup": 1,
                "usage": int((v1 / "memory.usage_in_bytes").read_text()),
                "peak": int((v1 / "memory.max_usage_in_bytes").read_text()),
                "oom_kill": _field(control, "oom_kill"),
            }
        if (v2 / "memory.events").is_file():
            peak = v2 / "memory.peak"
            return {
                "cgroup": 2,
                "usage": int((v2 / "memory.current").read_text()),
                "peak": int(peak.read_text()) if peak.is_file() else 0,
                "oom_kill": _field((v2 / "memory.events").read_text(), "oom_kill"),
            }
    except (OSError, ValueError):
        return None
    return None


def _field(text: str, key: str) -> int:
    match = re.search(rf"^{key} (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


class MemoryWatch:
    """Samples a unit's cgroup; counts OOM kills across a recreated cgroup."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.cgroup = control_group(unit)
        self.oom_kills = 0
        self.peak = 0
        self._last_count: int | None = None

    def sample(self) -> dict[str, int] | None:
        """One reading; the OOM kills so far."""
        reading = read_memory(self.cgroup)
        if reading is None:  # restarted: systemd made the cgroup again
            self.cgroup = control_group(self.unit)
            self._last_count = None
            reading = read_memory(self.cgroup)
            if reading is None:
                return None
        count = reading["oom_kill"]
        if self._last_count is None or count < self._last_count:  # a new cgroup counts from 0
            self._last_count = 0
        self.oom_kills += count - self._last_count
        self._last_count = count
        self.peak = max(self.peak, reading["peak"], reading["usage"])
        return reading


# ----------------------------------------------------------------------------- load


async def one(host: str, port: int, path: str, timeout: float) -> str:
    """One request on a new connection: "ok" or the kind of failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return "timeout"
    except OSError:
        return "connect"
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        if not status:
            return "reset"
        await asyncio.wait_for(reader.read(), timeout)
        parts = status.split()
        return "ok" if len(parts) > 1 and parts[1] == b"200" else "status"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "reset"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def wait_ready(host: str, port: int, timeout: float) -> float:
    """Seconds until ``GET /healthz`` answered 200; SystemExit after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        url = f"http://{host}:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return round(time.monotonic() - start, 2)
        time.sleep(0.2)
    raise SystemExit(f"the service on {host}:{port} did not answer /healthz in {timeout:.0f} s")


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Send the requests on schedule, sample the cgroup every second; the counts."""
    counts: dict[str, dict[str, int]] = {
        kind: {"sent": 0, "ok": 0, **dict.fromkeys(KINDS, 0)} for kind in ("normal", "leak")
    }
    seconds = int(args.duration)
    failed_per_second = [0] * (seconds + 1)
    watch = MemoryWatch(args.unit)
    timeline: list[dict[str, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set[asyncio.Task[None]] = set()

    async def request(index: int) -> None:
        leak = args.leak_every and index % args.leak_every == args.leak_every - 1
        kind = "leak" if leak else "normal"
        path = f"/leak?mb={args.leak_mb}" if leak else args.normal_path
        second = min(int(loop.time() - start), seconds)
        counts[kind]["sent"] += 1
        outcome = await one(args.host, args.port, path, args.timeout)
        counts[kind][outcome] += 1
        if outcome != "ok":
            failed_per_second[second] += 1

    async def sampler() -> None:
        while True:
            reading = watch.sample()
            timeline.append(
                {
                    "t": round(loop.time() - start, 1),
                    "memory_mib": round(reading["usage"] / 2**20, 1) if reading else -1,
                    "oom_kills": watch.oom_kills,
                }
            )
            await asyncio.sleep(1.0)

    sampling = asyncio.create_task(sampler())
    for index in range(int(args.duration * args.rate)):
        delay = start + index / args.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(request(index))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    elapsed = loop.time() - start
    await asyncio.sleep(1.5)  # an OOM kill at the very end shows in the counter a bit later
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    watch.sample()
    failed = {kind: sum(group[kind] for group in counts.values()) for kind in KINDS}
    return {
        "duration_s": round(elapsed, 3),
        "sent": sum(group["sent"] for group in counts.values()),
        "ok": sum(group["ok"] for group in counts.values()),
        "failed": sum(failed.values()),
        "failed_by_kind": failed,
        "by_request": counts,
        "failed_per_second": failed_per_second,
        "oom_kills_sampled": watch.oom_kills,
        "memory_peak_mib": round(watch.peak / 2**20, 1),
        "timeline": timeline,
    }


def load(args: argparse.Namespace) -> dict[str, Any]:
    """``load``: wait for the service, then drive it."""
    ready = wait_ready(args.host, args.port, args.ready_timeout)
    result = asyncio.run(drive(args))
    result["ready_after_s"] = ready
    return result


# ----------------------------------------------------------------------------- probe

OOM_LINES = {
    # gunicorn's arbiter on a worker that died of SIGKILL
    "gunicorn_sigkill": r"was sent SIGKILL! Perhaps out of memory",
    # procslice's master on the same (house style: logged as a possible OOM kill)
    "procslice_sigkill": r"killed by SIGKILL: possible OOM kill",
    # systemd on a unit whose process the kernel OOM-killed (cgroup v2 only)
    "systemd_oom": r"killed by the OOM killer|Failed with result 'oom-kill'",
}
BOOT_LINES = {
    "gunicorn_worker_boots": r"Booting worker with pid",
    "procslice_memory_recycles": r"crossed memory_limit",
}


def metrics_restarts(url: str) -> dict[str, float]:
    """procslice_worker_restarts_total by reason, from the master's metrics endpoint."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for reason, value in re.findall(
        r'^procslice_worker_restarts_total\{reason="([^"]+)"\} (\S+)$', text, re.MULTILINE
    ):
        found[reason] = float(value)
    return found


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """``probe``: the unit, its cgroup, its journal and its metrics, after the load."""
    props = ("ActiveState", "SubState", "Result", "NRestarts", "MemoryMax", "OOMPolicy")
    done = subprocess.run(
        ["systemctl", "show", args.unit, *(f"--property={name}" for name in props)],
        capture_output=True,
        text=True,
        check=False,
    )
    unit = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    journal = subprocess.run(
        ["journalctl", "-u", args.unit, "--since", f"@{args.since:.0f}", "-o", "cat", "--no-pager"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    lines = {
        name: len(re.findall(pattern, journal, re.MULTILINE))
        for name, pattern in {**OOM_LINES, **BOOT_LINES}.items()
    }
    result: dict[str, Any] = {
        "unit": unit,
        "memory": read_memory(control_group(args.unit)),
        "journal_counts": lines,
        "journal": journal,
    }
    if args.metrics:
        try:
            result["restarts_by_reason"] = metrics_restarts(args.metrics)
        except OSError as exc:
            result["restarts_by_reason"] = {"error": str(exc)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("load", help="drive the service, sample its cgroup")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--unit", required=True, help="the service's systemd unit")
    run.add_argument("--duration", type=float, default=60.0)
    run.add_argument("--rate", type=float, default=200.0, help="requests per second")
    run.add_argument("--leak-every", type=int, default=20, help="every Nth request leaks")
    run.add_argument("--leak-mb", type=int, default=2, help="MiB each leaking request keeps")
    run.add_argument("--normal-path", default="/slow?ms=50", help="the other requests' path")
    run.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    run.add_argument("--ready-timeout", type=float, default=60.0)
    look = commands.add_parser("probe", help="the unit's state, OOM kills and restarts")
    look.add_argument("--unit", required=True)
    look.add_argument("--since", type=float, required=True, help="epoch seconds")
    look.add_argument("--metrics", default="", help="procslice's metrics URL")
    args = parser.parse_args()
    result = load(args) if args.command == "load" else probe(args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
