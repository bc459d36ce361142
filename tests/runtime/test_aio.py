"""``procslice aio`` as real processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from conftest import StartSupervisor, wait_until


def test_aio_crashed_child_is_restarted(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "2")
    victim = int(sup.get("/pid")[1])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(sup.children()) == 2 and victim not in sup.children(), 15, "a new child")
    assert all(sup.get("/pid")[0] == 200 for _ in range(5))
    assert f"(pid {victim}) was killed by SIGKILL" in sup.log()


def test_aio_crash_loop_backs_off_exponentially(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "1")
    for _ in range(3):
        (child,) = sup.children() or [0]
        if child:
            os.kill(child, signal.SIGKILL)
        wait_until(lambda c=child: sup.children() and c not in sup.children(), 15, "a respawn")
    assert "flapping; waiting" in sup.log()
    sup.wait_serving()


def test_aio_concurrency_bound_holds(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "1", "--max-concurrency", "2")
    results: list[tuple[int, str]] = []

    def slow() -> None:
        results.append(sup.get("/slow?t=0.5", timeout=20))

    threads = [threading.Thread(target=slow) for _ in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    elapsed = time.monotonic() - started
    assert results == [(200, "slow done")] * 6
    assert sup.get("/stats") == (200, "2")  # never more than 2 at once in the process
    assert elapsed >= 1.4  # 6 requests, 2 at a time, 0.5 s each


def test_aio_loop_lag_warning_is_logged(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "1", "--loop-lag-warn-ms", "100")
    assert sup.get("/block?t=0.4") == (200, "blocked")
    sup.wait_log("exceeds loop_lag_warn_ms 100")
    assert "WARNING procslice.worker: event loop lag" in sup.log()


def test_aio_raw_protocol_factory_serves(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(
        "aio", "--workers", "1", "--interface", "raw", app="rawecho:factory", wait=False
    )

    def echoed() -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", sup.port), timeout=2) as sock:
                sock.sendall(b"ping\n")
                return sock.recv(100)
        except OSError:
            return None

    wait_until(echoed, 20, "an echo")
    reply = echoed()
    assert reply is not None and reply.endswith(b" ping\n")
    assert int(reply.split()[0]) in sup.children()


def test_aio_app_import_error_halts_parent(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "2", app="broken:app", wait=False)
    assert sup.proc.wait(timeout=10) == 4


def test_aio_refuses_swoole_only_setting(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    toml = tmp_path / "procslice.toml"
    toml.write_text('app = "hello:app"\nmax_request = 100\n')
    sup = start_supervisor("aio", "--config", str(toml), app=None, wait=False)
    assert sup.proc.wait(timeout=10) == 2
    assert "procslice.toml: max_request: is a procslice swoole setting" in sup.log()


def test_aio_app_factory_is_called_in_each_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "2", app="hello:make_app('hi', times=2)")
    builders = set()
    for _ in range(20):
        status, body = sup.get("/greeting")
        assert status == 200 and body.startswith("hi hi "), body
        builders.add(int(body.split()[-1]))
    assert builders and builders <= set(sup.children()), (builders, sup.children())
