#!/usr/bin/python3
"""A keep-alive HTTP client loop that counts every failed request, while steps run.

    keepalive-client URL [--seconds S] [--at T 'SHELL COMMAND'] ...

One persistent HTTP/1.1 connection (http.client) sends GET requests back to back for S
seconds; each --at command runs T seconds after the start, in a thread. The client
itself never retries: a request fails when it gets no complete 200 answer (a refused
or reset connection, a connection closed under the request, a timeout, another
status), and the next request opens a new connection. A `Connection: close` answer is
a success, followed by a new connection (counted as a reconnect). It prints one JSON
object: ok (per body), failed (per reason), reconnects, and each step's output.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import threading
import time
import urllib.parse


def run_steps(steps: list[tuple[float, str]], started: float, results: list[dict]) -> None:
    for at, cmd in sorted(steps):
        time.sleep(max(0.0, started + at - time.monotonic()))
        done = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
        results.append({"at": at, "cmd": cmd, "rc": done.returncode, "out": done.stdout})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--at", nargs=2, action="append", default=[], metavar=("T", "CMD"))
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    ok: dict[str, int] = {}
    failed: dict[str, int] = {}
    reconnects = -1  # the first connection is not a reconnect
    steps: list[dict] = []
    started = time.monotonic()
    thread = threading.Thread(
        target=run_steps, args=([(float(t), c) for t, c in args.at], started, steps)
    )
    thread.start()
    while time.monotonic() - started < args.seconds:
        if conn.sock is None:
            reconnects += 1
        try:
            conn.request("GET", url.path or "/")
            response = conn.getresponse()
            body = response.read().decode().strip()
            if response.status == 200:
                ok[body] = ok.get(body, 0) + 1
            else:
                failed[f"status {response.status}"] = failed.get(f"status {response.status}", 0) + 1
        except (OSError, http.client.HTTPException) as error:
            failed[type(error).__name__] = failed.get(type(error).__name__, 0) + 1
            conn.close()
            time.sleep(0.01)
    conn.close()
    thread.join()
    result = {
        "ok": ok,
        "failed": failed,
        "total_failed": sum(failed.values()),
        "reconnects": reconnects,
        "steps": steps,
    }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
