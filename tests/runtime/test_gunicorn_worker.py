"""procslice's gunicorn worker (procslice.gunicorn_worker.UvicornWorker), as a real
gunicorn on loopback: reloads under keep-alive load close no connection under a request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO, child_env, children_of, free_port, wait_until

LOADGEN = REPO / "tests" / "molecule_support" / "loadgen.py"
# uvicorn-worker is in requirements/controller.txt: a missing one fails here, loudly.
import uvicorn_worker  # noqa: E402,F401


def gunicorn(
    worker_class: str, port: int, log: Path, app: str = "hello:app"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--worker-class",
            worker_class,
            "--keep-alive",
            "5",
            "--graceful-timeout",
            "10",
        ],
        env=child_env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def reloads_under_load(worker_class: str, tmp_path: Path) -> dict:
    port = free_port()
    proc = gunicorn(worker_class, port, tmp_path / "gunicorn.log")
    try:
        wait_until(lambda: len(children_of(proc.pid)) == 2, 20, "2 gunicorn workers")
        time.sleep(1)
        load = subprocess.Popen(
            [
                sys.executable,
                str(LOADGEN),
                "--connections",
                "4",
                "--rate",
                "100",
                "--seconds",
                "9",
                f"t=127.0.0.1:{port}/",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3):
            time.sleep(2)
            os.kill(proc.pid, signal.SIGHUP)
        out, _ = load.communicate(timeout=60)
        return json.loads(out)["t"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_reloads_under_keep_alive_load_close_no_connection_under_a_request(tmp_path):
    tally = reloads_under_load("procslice.gunicorn_worker.UvicornWorker", tmp_path)
    print(f"procslice worker, 3 reloads: {tally}")
    assert tally["ok"] > 500
    assert tally["failed"] == 0, tally
    # Every connection the workers gave up was closed with Connection: close after an
    # answer, none under a request (uvicorn's own worker closes them: retries).
    assert tally["retried"] == 0, tally


def test_an_app_factory_is_built_in_each_worker(tmp_path):
    """app: "module:factory(args)" on the gunicorn model: gunicorn's own parser calls it
    with the literal arguments, once per worker (no preload)."""
    port = free_port()
    proc = gunicorn(
        "procslice.gunicorn_worker.UvicornWorker",
        port,
        tmp_path / "gunicorn.log",
        app="hello:make_app('hi', times=3)",
    )
    try:
        wait_until(lambda: len(children_of(proc.pid)) == 2, 20, "2 gunicorn workers")

        def greeting() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/greeting", timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return None

        wait_until(greeting, 20, "an answer")
        builders = set()
        for _ in range(20):
            body = greeting()
            assert body is not None and body.startswith("hi hi hi "), body
            builders.add(int(body.split()[-1]))
        assert builders <= set(children_of(proc.pid)), builders
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
