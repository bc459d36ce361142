"""procslice lock filters: who is deploying, and whether a lock's holder is gone.

    procslice_lock_holder(what, actor="") -> dict
        this ansible-playbook run as a lock holder: run, actor, controller, pid, what.
    procslice_lock_stale(holder, stale_after) -> bool
        whether a lock read from a host belongs to a run that can no longer finish.

Filters run in Ansible's worker processes, forked from the ansible-playbook process:
the parent PID is the run's own, and its start time (from /proc) makes the run id
unique even when the PID is reused.
"""

from __future__ import annotations

import calendar
import getpass
import os
import socket
import time
from typing import Any


def _start_ticks(pid: int) -> str:
    """The start time of a process in clock ticks since boot, or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return ""
    # Field 22, counted after the command name (which may hold spaces) in parentheses.
    return stat.rsplit(")", 1)[1].split()[19]


def procslice_lock_holder(what: str, actor: str = "") -> dict[str, Any]:
    pid = os.getppid()
    controller = socket.gethostname()
    if not actor:
        user = os.environ.get("PROCSLICE_ACTOR") or getpass.getuser()
        actor = f"{user}@{controller}"
    return {
        "run": f"{controller}:{pid}:{_start_ticks(pid)}",
        "actor": actor,
        "controller": controller,
        "pid": pid,
        "what": what,
    }


def procslice_lock_stale(holder: dict[str, Any], stale_after: int) -> bool:
    """A holder is stale when its run ended on this controller, or it is too old.

    A run of this controller has ended when its process is gone or the PID now
    belongs to another process (another start time). A run of another controller
    cannot be checked from here: it is stale only after stale_after seconds.
    """
    run = str(holder.get("run", ""))
    parts = run.split(":")
    if holder.get("controller") == socket.gethostname() and len(parts) == 3:
        try:
            pid = int(parts[1])
        except ValueError:
            return True
        return _start_ticks(pid) != parts[2]
    try:
        since = calendar.timegm(time.strptime(str(holder.get("since")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return False
    return time.time() - since > int(stale_after)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "procslice_lock_holder": procslice_lock_holder,
            "procslice_lock_stale": procslice_lock_stale,
        }
