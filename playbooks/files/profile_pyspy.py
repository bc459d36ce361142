#!/usr/bin/python3
"""The host side of playbooks/profile.yml: find a unit's Python processes, sample them.

    profile_pyspy.py pids CONTROL_GROUP MAIN_PID all|main
    profile_pyspy.py record CONTROL_GROUP MAIN_PID all|main PY_SPY DIR SERVICE SECONDS RATE IDLE

``pids`` (read-only: it only reads /proc) prints {"pids": [{"pid", "ppid", "role", "exe",
"cmdline"}, ...]}, the main process first. A process belongs to the unit when its cgroup
(on any hierarchy: the v2 ``0::`` line or the v1 ``name=systemd`` one) is the unit's
ControlGroup or below it: the python of a podman container started with
--cgroups=split is found too, under its host pid (the container's pid namespace is a
child of the host's). A Python process is one whose executable is named python,
python3 or python3.N. ``all``: every Python process of the unit, the master and its
workers; ``main``: the unit's MainPID when it is a Python process, otherwise the
topmost Python processes (for podman, MainPID is conmon and the app is below it).

``record`` finds the processes the same way at that moment (workers recycled by
max_requests come and go, so a list made earlier may be stale), starts one
``py-spy record --nonblocking`` per process, all at once so that they sample the same
window, waits for all of them, and prints {"pids": [...], "results": [{"pid", "status",
"rc", "svg", "samples", "errors", "output"}, ...], "unsampled": [pid, ...]}. status is
"ok" (an svg was written; py-spy also writes one when the process exits while it is
sampled), "idle" (the process was idle the whole time: without --idle py-spy has no
stack to draw), "exited" (the process ended before py-spy attached) or "failed".
"unsampled" lists the Python processes that started during the window. Only "failed"
is an error: then it exits 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON = re.compile(r"^python[0-9.]*$")
NO_STACKS = "No stack counts found"


def in_unit(pid: str, control_group: str) -> bool:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    below = control_group.rstrip("/") + "/"
    for line in lines:
        path = line.split(":", 2)[-1]
        if path == control_group or path.startswith(below):
            return True
    return False


def describe(pid: str) -> dict[str, Any] | None:
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or a kernel thread or zombie without an executable
        return None
    if not PYTHON.match(os.path.basename(exe)):
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    if state == "Z":
        return None
    text = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return {"pid": int(pid), "ppid": int(ppid), "exe": exe, "cmdline": text[:200]}


def find(control_group: str, main_pid: int, mode: str) -> list[dict[str, Any]]:
    """The unit's Python processes, the main one(s) first."""
    if not control_group.startswith("/"):
        raise SystemExit(f"no control group ({control_group!r}): is the unit running?")
    found = [
        proc
        for pid in os.listdir("/proc")
        if pid.isdigit() and in_unit(pid, control_group)
        for proc in [describe(pid)]
        if proc is not None
    ]
    python_pids = {proc["pid"] for proc in found}
    if main_pid in python_pids:
        tops = {main_pid}
    else:
        tops = {proc["pid"] for proc in found if proc["ppid"] not in python_pids}
    for proc in found:
        proc["role"] = "main" if proc["pid"] in tops else "worker"
    if mode == "main":
        found = [proc for proc in found if proc["role"] == "main"]
    found.sort(key=lambda proc: (proc["role"] != "main", proc["pid"]))
    if not found:
        raise SystemExit(f"no Python process in the cgroup {control_group}")
    return found


def alive(pid: int) -> bool:
    """Whether pid still runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def record(
    procs: list[dict[str, Any]],
    py_spy: str,
    out_dir: str,
    service: str,
    seconds: int,
    rate: int,
    idle: bool,
) -> list[dict[str, Any]]:
    started = []
    for proc in procs:
        pid = proc["pid"]
        svg = Path(out_dir, f"{service}-{pid}.svg")
        log = Path(out_dir, f"{service}-{pid}.log")
        command = [
            py_spy,
            "record",
            f"--pid={pid}",
            f"--duration={seconds}",
            f"--rate={rate}",
            "--format=flamegraph",
            f"--output={svg}",
            # Read the process's memory while it runs: it is never stopped.
            "--nonblocking",
        ]
        if idle:
            command.append("--idle")
        with log.open("wb") as handle:
            started.append(
                (
                    pid,
                    subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT
                    ),
                    svg,
                    log,
                )
            )
    results = []
    for pid, spy, svg, log in started:
        try:
            rc = spy.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            rc = spy.wait()
        output = log.read_text(errors="replace")
        samples = re.search(r"Samples: (\d+)", output)
        errors = re.search(r"Errors: (\d+)", output)
        if rc == 0 and svg.is_file():
            status = "ok"
        elif NO_STACKS in output:
            status = "idle"
        elif not alive(pid):
            status = "exited"
        else:
            status = "failed"
        results.append(
            {
                "pid": pid,
                "status": status,
                "rc": rc,
                "svg": str(svg) if status == "ok" else None,
                "samples": int(samples.group(1)) if samples else 0,
                "errors": int(errors.group(1)) if errors else 0,
                "output": output[-2000:],
            }
        )
    return results


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "pids":
        json.dump({"pids": find(argv[1], int(argv[2]), argv[3])}, sys.stdout)
        return 0
    if len(argv) == 10 and argv[0] == "record":
        control_group, main_pid, mode = argv[1], int(argv[2]), argv[3]
        py_spy, out_dir, service, seconds, rate, idle = argv[4:10]
        procs = find(control_group, main_pid, mode)
        results = record(
            procs, py_spy, out_dir, service, int(seconds), int(rate), idle.lower() == "true"
        )
        sampled = {proc["pid"] for proc in procs}
        try:
            after = find(control_group, main_pid, mode)
        except SystemExit:
            after = []
        unsampled = sorted(proc["pid"] for proc in after if proc["pid"] not in sampled)
        json.dump({"pids": procs, "results": results, "unsampled": unsampled}, sys.stdout)
        failed = [result for result in results if result["status"] == "failed"]
        for result in failed:
            print(
                f"py-spy on pid {result['pid']} failed (rc {result['rc']}):\n{result['output']}",
                file=sys.stderr,
            )
        return 1 if failed else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
