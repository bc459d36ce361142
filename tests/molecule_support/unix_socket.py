"""Requests over a service's unix socket (listen: ["unix:PATH"]) on a molecule test host.

Shared by the scenarios with such a service (procslice_gunicorn, procslice_supervisor):
their tests import these helpers next to the `host` fixture.
"""

from __future__ import annotations

import json
import shlex
import urllib.parse
from typing import Any


def health_url(socket_path: str, http: str = "/healthz") -> str:
    """The health URL procslice gives a service whose first listen is unix:socket_path."""
    return f"http+unix://{urllib.parse.quote(socket_path, safe='')}{http}"


def unix_get(host, socket_path: str, path: str) -> tuple[int, str]:
    """The HTTP status and body of a GET of path over the socket, from inside the host."""
    out = host.check_output(
        f"curl -sS --max-time 30 --unix-socket {socket_path} -w '\\n%{{http_code}}' "
        f"http://localhost{path}"
    )
    body, _, code = out.rpartition("\n")
    return int(code), body.strip()


def answering_parent(host, socket_path: str, path: str, name: str) -> tuple[int, str]:
    """GET path (the app answers "hello from NAME pid PID") over the socket: the status,
    and the parent PID of the process that answered."""
    code, body = unix_get(host, socket_path, path)
    assert body.startswith(f"hello from {name} pid "), body
    pid = body.rsplit(" ", 1)[1]
    return code, host.check_output(f"ps -o ppid= -p {pid}").strip()


def connect_as(host, user: str, socket_path: str):
    """A connection to the socket by a process of user (the result: rc 0 if accepted)."""
    code = f"import socket; socket.socket(socket.AF_UNIX).connect({socket_path!r})"
    return host.run(f"runuser -u {user} -- python3 -c {shlex.quote(code)}")


def listeners(host, socket_path: str) -> str:
    """The `ss -xlp` lines of the listening socket: which processes hold it."""
    lines = host.check_output("ss -xlpn").splitlines()
    return "\n".join(line for line in lines if f" {socket_path} " in line)


def status_entry(host, name: str) -> dict[str, Any]:
    """The service's entry in `procslice status --json` on the host."""
    report = json.loads(host.check_output("/usr/local/bin/procslice status --json"))
    found = [entry for entry in report["services"] if entry["service"] == name]
    assert found, report
    return dict(found[0])
