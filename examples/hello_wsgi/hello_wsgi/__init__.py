"""A WSGI app for procslice's demo and tests.

Paths:
  /           200 "hello from <service> pid <pid>"
  /healthz    200 "ok"
  /version    "<VERSION env> <package version>" (what a deploy changed), both as this
              process read them when it imported the app: the code it really runs
  /leak?mb=N  keeps N MiB more in this worker (a memory leak on demand)
  /burn?ms=N  spins the CPU for N ms
  /fork?n=N   tries to start N sleeping children; reports how many started
  /slow?ms=N  sleeps N ms, then answers
  /visits     counts this visit in $STATE_DIRECTORY/uploads/visits (directories: state:
              [uploads]): the count, kept across restarts and releases

HELLO_FAIL (read at import) makes it misbehave, for the health-gate tests: "500" (every
answer a 500), "hang" (no answer at all) or "after:N" (N answers per process, then 500s).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

_leak: list[bytes] = []
FAIL = os.environ.get("HELLO_FAIL", "")
_answered = 0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hello-wsgi")
    except PackageNotFoundError:
        return "unknown"


# Read once, at import: a process that runs old code answers the old version even
# after the release link moved (importlib.metadata would read the new release's files).
PACKAGE_VERSION = _package_version()
VERSION = os.environ.get("VERSION", "unset")


def _number(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(query.get(key, [str(default)])[0])
    except ValueError:
        return default


def _fork(n: int) -> str:
    started: list[subprocess.Popen[bytes]] = []
    error = ""
    for _ in range(n):
        try:
            started.append(subprocess.Popen(["sleep", "5"]))
        except OSError as exc:
            error = f" error: {exc.strerror}"
            break
    for child in started:
        child.kill()
        child.wait()
    return f"started {len(started)} of {n}{error}"


def _visit() -> tuple[str, str]:
    state = os.environ.get("STATE_DIRECTORY")
    if not state:
        return "404 Not Found", "no state directory (directories: {state: [uploads]})"
    path = os.path.join(state, "uploads", "visits")
    with open(path, "a+", encoding="ascii") as handle:
        handle.write("x")
        handle.seek(0)
        return "200 OK", str(len(handle.read()))


def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    global _answered
    _answered += 1
    if FAIL == "hang":
        time.sleep(3600)
    path = str(environ.get("PATH_INFO", "/"))
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    status = "200 OK"
    if FAIL == "500" or (FAIL.startswith("after:") and _answered > int(FAIL[6:])):
        status, body = "500 Internal Server Error", f"failing on purpose (HELLO_FAIL={FAIL})"
    elif path == "/healthz":
        body = "ok"
    elif path == "/version":
        body = f"{VERSION} {PACKAGE_VERSION}"
    elif path == "/leak":
        _leak.append(b"x" * (_number(query, "mb", 10) * 1024 * 1024))
        body = f"holding {len(_leak)} blocks"
    elif path == "/burn":
        end = time.monotonic() + _number(query, "ms", 100) / 1000
        while time.monotonic() < end:
            pass
        body = "burnt"
    elif path == "/fork":
        body = _fork(_number(query, "n", 10))
    elif path == "/visits":
        status, body = _visit()
    elif path == "/slow":
        time.sleep(_number(query, "ms", 1000) / 1000)
        body = "slept"
    elif path == "/":
        body = f"hello from {os.environ.get('PROCSLICE_SERVICE', 'wsgi')} pid {os.getpid()}"
    else:
        status, body = "404 Not Found", "not found"
    data = (body + "\n").encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
