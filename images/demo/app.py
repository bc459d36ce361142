"""procslice demo container app: a tiny HTTP service with misbehaviour switches.

    GET /healthz        -> "ok"
    GET /               -> "procslice demo <VERSION> <hostname>"
    GET /leak?mb=N      -> keeps N more MiB (touched, so it is really resident) and
                           answers how much it holds: past the container's --memory
                           the kernel OOM-kills the process (exit 137).
    GET /fork?n=N       -> forks up to N children that sleep, answers how many it got
                           ("forked 57 of 500: [Errno 11] ..."), then reaps them: the
                           container's --pids-limit stops a fork bomb.
    GET /env?name=X     -> the value of environment variable X.
    GET /version        -> "<VERSION> demo" (what a deploy changed).
    GET /metrics        -> Prometheus text: the requests answered so far by status class
                           and method, under procslice's own name
                           (procslice_http_requests_total{code,method}), which the host's
                           exporter passes on when the service sets metrics_listen.

HELLO_FAIL makes it misbehave, for the health-gate tests: "500" (every answer a 500),
"hang" (no answer at all) or "after:N" (N answers, then 500s).

Standard library only; it listens on $PORT (default 8000) and stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HELD: list[bytes] = []
MIB = 1 << 20
# (status class, method) -> requests answered; /metrics itself is not counted.
COUNTS: dict[tuple[str, str], int] = {}
COUNTS_LOCK = threading.Lock()
FAIL = os.environ.get("HELLO_FAIL", "")
ANSWERED = [0]


def metrics_text() -> str:
    lines = [
        "# HELP procslice_http_requests_total Requests answered, by status class and method.",
        "# TYPE procslice_http_requests_total counter",
    ]
    with COUNTS_LOCK:
        for (code, method), count in sorted(COUNTS.items()):
            lines.append(
                f'procslice_http_requests_total{{code="{code}",method="{method}"}} {count}'
            )
    return "\n".join(lines)


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(0, int(query.get(name, [str(default)])[0]))
    except ValueError:
        return default


def fork_children(wanted: int) -> str:
    """Fork up to `wanted` sleeping children; report how many; reap them all."""
    children: list[int] = []
    error = ""
    for _ in range(wanted):
        try:
            pid = os.fork()
        except OSError as exc:
            error = str(exc)
            break
        if pid == 0:  # the child: sleep until killed
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return f"forked {len(children)} of {wanted}" + (f": {error}" if error else "")


class Handler(BaseHTTPRequestHandler):
    server_version = "procslice-demo/1"

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        if urlparse(self.path).path != "/metrics":
            with COUNTS_LOCK:
                key = (f"{status // 100}xx", self.command)
                COUNTS[key] = COUNTS.get(key, 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlparse(self.path)
        query = parse_qs(url.query)
        with COUNTS_LOCK:
            ANSWERED[0] += 1
            answered = ANSWERED[0]
        if FAIL == "hang":
            time.sleep(3600)
        if FAIL == "500" or (FAIL.startswith("after:") and answered > int(FAIL[6:])):
            self._answer(500, f"failing on purpose (HELLO_FAIL={FAIL})")
        elif url.path == "/healthz":
            self._answer(200, "ok")
        elif url.path == "/":
            version = os.environ.get("VERSION", "0")
            self._answer(200, f"procslice demo {version} {socket.gethostname()}")
        elif url.path == "/leak":
            mb = _int(query, "mb", 10)
            HELD.append(b"\x01" * (mb * MIB))
            held = sum(len(block) for block in HELD) // MIB
            self._answer(200, f"holding {held} MiB")
        elif url.path == "/fork":
            self._answer(200, fork_children(_int(query, "n", 10)))
        elif url.path == "/version":
            self._answer(200, f"{os.environ.get('VERSION', '0')} demo")
        elif url.path == "/env":
            name = query.get("name", [""])[0]
            self._answer(200, os.environ.get(name, ""))
        elif url.path == "/metrics":
            self._answer(200, metrics_text())
        else:
            self._answer(404, "not found")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: object) -> None:
        # Only record it: shutdown() waits for serve_forever, so it runs elsewhere.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"procslice demo listening on :{port}\n")
    server.serve_forever()
    sys.stderr.write("procslice demo stopped\n")


if __name__ == "__main__":
    main()
