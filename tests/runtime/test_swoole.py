"""``procslice swoole`` as real processes on loopback: recycling, crashes, drains, reloads."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import StartSupervisor, free_port, wait_until

from procslice.sdnotify import monotonic_usec


def pids_seen(supervisor: object, count: int) -> list[int]:
    """GET /pid ``count`` times on fresh connections; the pids answering."""
    pids = []
    for _ in range(count):
        status, body = supervisor.get("/pid")  # type: ignore[attr-defined]
        assert status == 200
        pids.append(int(body))
    return pids


def test_worker_recycled_after_max_request(start_supervisor: StartSupervisor) -> None:
    """The replacement serves once the worker asked for it; the old one drains."""
    sup = start_supervisor("swoole", "--workers", "1", "--max-request", "20", metrics=True)
    first = int(sup.get("/pid")[1])
    answered_by_first = 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pid = pids_seen(sup, 1)[0]
        if pid != first:
            break
        answered_by_first += 1
    else:
        raise AssertionError("the worker was never replaced")
    assert answered_by_first >= 20  # it served its max_request before retiring
    wait_until(
        lambda: (sup.metric('procslice_worker_restarts_total{reason="max_request"}') or 0) >= 1,
        10,
        "restarts{reason=max_request}",
    )
    assert "asking for a replacement" in sup.log()


def test_leaky_worker_recycled_by_memory_limit_without_failed_requests(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        "swoole", "--workers", "1", "--memory-limit", "96M", app="leaky:app", metrics=True
    )
    pids = []
    for _ in range(50):  # 4 MiB a request: ~200 MiB if it were never recycled
        status, body = sup.get("/")
        assert status == 200
        pids.append(int(body))
        time.sleep(0.04)
    assert len(set(pids)) >= 2, "the leaking worker was never recycled"
    assert "crossed memory_limit 96.0 MiB: recycling it" in sup.log()
    assert (sup.metric('procslice_worker_restarts_total{reason="memory"}') or 0) >= 1
    rss = sup.metric('procslice_worker_rss_bytes{worker="0"}')
    assert rss is not None and rss < 200 * 1024 * 1024


def test_killed_worker_is_respawned_and_logged_as_possible_oom(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("swoole", "--workers", "1")
    victim = int(sup.get("/pid")[1])
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (r := sup.try_get("/pid")) is not None and r[0] == 200 and int(r[1]) != victim,
        15,
        "a new worker to serve",
    )
    sup.wait_log(f"worker 0 (pid {victim}) was killed by SIGKILL: possible OOM kill (last RSS")


def test_app_import_error_halts_master_with_app_load_exit_code(
    start_supervisor: StartSupervisor,
) -> None:
    started = time.monotonic()
    sup = start_supervisor("swoole", "--workers", "2", app="broken:app", wait=False)
    code = sup.proc.wait(timeout=10)
    assert code == 4
    assert time.monotonic() - started < 10
    assert "could not load the app (exit code 4)" in sup.log()
    assert "this app is broken on purpose" in sup.log()


def test_sigterm_drains_in_flight_slow_request(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("swoole", "--workers", "1")
    result: dict[str, object] = {}

    def slow() -> None:
        result["response"] = sup.get("/slow?t=1.5", timeout=15)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    sup.signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert result["response"] == (200, "slow done")
    assert sup.proc.wait(timeout=15) == 0


def recv_notifications(sock: socket.socket, until: str, timeout: float) -> list[str]:
    """Datagrams received until one contains the line ``until``."""
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        messages.append(message)
        if until in message.splitlines():
            return messages
    raise AssertionError(f"no {until} within {timeout} s; got {messages}")


@pytest.fixture
def notify_socket() -> socket.socket:
    """A bound abstract AF_UNIX datagram socket standing in for systemd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0procslice-test-{os.getpid()}-{time.monotonic_ns()}")
    yield sock
    sock.close()


def notify_env(sock: socket.socket, **extra: str) -> dict[str, str]:
    """NOTIFY_SOCKET pointing at ``sock`` (written with a leading @)."""
    name = sock.getsockname()
    assert isinstance(name, bytes)
    return {"NOTIFY_SOCKET": "@" + name[1:].decode(), **extra}


def test_sd_notify_ready_reloading_status_and_stopping(
    start_supervisor: StartSupervisor, notify_socket: socket.socket
) -> None:
    sup = start_supervisor("swoole", "--workers", "2", env=notify_env(notify_socket), wait=False)
    boot = recv_notifications(notify_socket, "READY=1", 20)
    assert len(sup.children()) == 2
    assert sup.get("/")[0] == 200
    assert any("STATUS=workers 2/2 up" in m for m in boot)

    old = set(sup.children())
    before = monotonic_usec()
    sup.signal(signal.SIGHUP)
    reload = recv_notifications(notify_socket, "READY=1", 20)
    reloading = [m for m in reload if "RELOADING=1" in m.splitlines()]
    assert reloading, reload
    usec = int(re.search(r"^MONOTONIC_USEC=(\d+)$", reloading[0], re.M).group(1))  # type: ignore[union-attr]
    assert before <= usec <= monotonic_usec()
    assert reload.index(reloading[0]) < len(reload) - 1  # READY=1 came after
    wait_until(lambda: not (set(sup.children()) & old), 15, "the old workers to exit")

    sup.signal(signal.SIGTERM)
    stopping = recv_notifications(notify_socket, "STOPPING=1", 15)
    assert stopping
    assert sup.proc.wait(timeout=15) == 0


def test_watchdog_pings_stop_when_a_worker_stops_heartbeating(
    start_supervisor: StartSupervisor, notify_socket: socket.socket
) -> None:
    sup = start_supervisor(
        "swoole",
        "--workers",
        "1",
        env=notify_env(notify_socket, WATCHDOG_USEC="1000000"),
        wait=False,
    )
    recv_notifications(notify_socket, "WATCHDOG=1", 20)
    (worker,) = sup.children()
    os.kill(worker, signal.SIGSTOP)
    try:
        sup.wait_log("sent no heartbeat", timeout=10)
        time.sleep(0.6)  # let a ping already in flight arrive
        notify_socket.setblocking(False)
        while True:
            try:
                notify_socket.recv(4096)
            except BlockingIOError:
                break
        notify_socket.setblocking(True)
        notify_socket.settimeout(1.5)
        silent = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                silent.append(notify_socket.recv(4096).decode())
            except TimeoutError:
                break
        assert not any("WATCHDOG=1" in m for m in silent), silent
    finally:
        os.kill(worker, signal.SIGCONT)
    recv_notifications(notify_socket, "WATCHDOG=1", 10)


def test_listen_fds_socket_activation_is_honoured(start_supervisor: StartSupervisor) -> None:
    activated = socket.socket()
    activated.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    activated.bind(("127.0.0.1", 0))
    activated.listen(128)
    port = activated.getsockname()[1]
    # What systemd does: the socket as fd 3, LISTEN_PID = the exec'd process.
    wrapper = (
        "import os, sys; fd = int(os.environ.pop('TEST_FD')); os.dup2(fd, 3); os.close(fd); "
        "os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
    )
    unused = free_port()
    sup = start_supervisor(
        "swoole",
        "--workers",
        "1",
        "--listen",
        f"127.0.0.1:{unused}",
        listen=False,
        prefix=[sys.executable, "-c", wrapper],
        env={"TEST_FD": str(activated.fileno()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"},
        pass_fds=(activated.fileno(),),
        wait=False,
    )
    activated.close()
    sup.port = port
    sup.wait_serving()
    assert "socket activation" in sup.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", unused), timeout=2).close()


def run_load(sup: object, seconds: float, hup_at: list[float]) -> tuple[int, int, str]:
    """Load the server with keep-alive clients, SIGHUP at ``hup_at``; (requests, errors, report)."""
    port = sup.port  # type: ignore[attr-defined]

    def send_hups() -> None:
        start = time.monotonic()
        for at in hup_at:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            sup.signal(signal.SIGHUP)  # type: ignore[attr-defined]

    hups = threading.Thread(target=send_hups)
    wrk = shutil.which("wrk")
    if wrk:
        hups.start()
        out = subprocess.run(
            [wrk, "-t2", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
        hups.join()
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        errors = 0
        socket_errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        if socket_errors:
            errors += sum(int(n) for n in socket_errors.groups())
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            errors += int(non2xx.group(1))
        return requests, errors, out
    # No wrk: Python keep-alive clients.
    import http.client

    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < end:
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if response.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            with lock:
                counts["ok" if ok else "errors"] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    hups.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hups.join()
    return counts["ok"] + counts["errors"], counts["errors"], str(counts)


def test_reload_under_keepalive_load_has_zero_failed_requests(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("swoole", "--workers", "2")
    before = set(sup.children())
    requests, errors, report = run_load(sup, 6, hup_at=[1.5, 3.5])
    print(report)
    assert errors == 0, report
    assert requests > 1000, report
    assert sup.log().count("reload complete") == 2
    assert not (set(sup.children()) & before)


def test_task_workers_return_results(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(
        "swoole", "--workers", "1", "--task-worker-num", "2", "--task-max-request", "3"
    )
    worker = int(sup.get("/pid")[1])
    task_pids = set()
    for _ in range(8):
        status, body = sup.get("/task")
        assert status == 200
        total, pid = body.split()
        assert total == "5"
        task_pids.add(int(pid))
    assert worker not in task_pids
    assert len(task_pids) >= 3  # 8 tasks, 3 per task worker: some were recycled


def test_sigttin_adds_a_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("swoole", "--workers", "2", metrics=True)
    assert len(sup.children()) == 2
    sup.signal(signal.SIGTTIN)
    wait_until(lambda: sup.metric("procslice_workers") == 3.0, 15, "procslice_workers 3")
    assert len(sup.children()) == 3


def test_sigttou_removes_a_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("swoole", "--workers", "2", metrics=True)
    sup.signal(signal.SIGTTOU)
    wait_until(lambda: len(sup.children()) == 1, 15, "one worker left")
    assert sup.metric("procslice_workers") == 1.0
    assert sup.get("/")[0] == 200


def test_metrics_endpoint_exposes_supervisor_metrics(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("swoole", "--workers", "2", metrics=True)
    for _ in range(5):
        sup.get("/")
    wait_until(lambda: (sup.metric("procslice_requests_total") or 0) >= 5, 10, "requests_total")
    text = sup.metrics()
    for name in (
        "procslice_workers 2.0",
        'procslice_worker_restarts_total{reason="crash"}',
        'procslice_worker_rss_bytes{worker="1"}',
        'procslice_loop_lag_seconds{worker="0"}',
        "procslice_requests_in_flight",
    ):
        assert name in text


def test_unix_socket_listen_serves(start_supervisor: StartSupervisor, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    sup = start_supervisor(
        "swoole", "--workers", "1", "--listen", f"unix:{path}", listen=False, wait=False
    )

    def answered() -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(path))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return sock.recv(4096).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    wait_until(answered, 20, "an answer on the unix socket")
    assert sup.stop() == 0
    assert not path.exists()


def test_reload_with_an_app_that_fails_to_import_keeps_old_workers(
    start_supervisor: StartSupervisor, notify_socket: socket.socket, tmp_path: Path
) -> None:
    breaker = tmp_path / "break"
    sup = start_supervisor(
        "swoole",
        "--workers",
        "2",
        app="switchable:app",
        env=notify_env(notify_socket, BREAK_FILE=str(breaker)),
    )
    recv_notifications(notify_socket, "READY=1", 20)
    before = set(sup.children())
    breaker.touch()
    sup.signal(signal.SIGHUP)
    after = recv_notifications(notify_socket, "READY=1", 20)
    assert any("STATUS=reload failed" in m for m in after), after
    sup.wait_log("reload aborted")
    assert sup.proc.poll() is None
    assert set(sup.children()) == before
    assert sup.get("/")[0] == 200


def proc_field(pid: int, name: str, key: str) -> str:
    """A value from /proc/<pid>/<name> (status: "Key:\\tvalue"; limits: the soft limit)."""
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(key):
            rest = line[len(key) :].split(":", 1)[-1] if name == "status" else line[len(key) :]
            return rest.split()[0]
    raise AssertionError(f"{key} not in /proc/{pid}/{name}")


def test_cpu_affinity_pins_each_worker_to_one_cpu(start_supervisor: StartSupervisor) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    sup = start_supervisor("swoole", "--workers", "2", "--cpu-affinity", "true")
    pinned = sorted(os.sched_getaffinity(pid) for pid in sup.children())
    assert all(len(cpus) == 1 for cpus in pinned)
    if len(allowed) >= 2:
        assert len({min(cpus) for cpus in pinned}) == 2  # round-robin over the allowed CPUs


def test_rlimits_are_applied_to_workers(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor(
        "swoole", "--workers", "1", "--rlimit-nofile", "321", "--rlimit-as", "4G"
    )
    (worker,) = sup.children()
    assert proc_field(worker, "limits", "Max open files") == "321"
    assert proc_field(worker, "limits", "Max address space") == str(4 * 1024**3)
    assert proc_field(sup.pid, "limits", "Max open files") != "321"  # the master keeps its own


def test_app_factory_is_called_in_each_worker(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("swoole", "--workers", "2", app="hello:make_app('ni hao')")
    builders = set()
    for _ in range(20):
        status, body = sup.get("/greeting")
        assert status == 200 and body.startswith("ni hao "), body
        builders.add(int(body.split()[-1]))
    assert builders and builders <= set(sup.children()), (builders, sup.children())


def test_a_factory_that_fails_halts_the_master_like_an_import_error(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor(
        "swoole", "--workers", "1", app="hello:make_app(times='x', nope=1)", wait=False
    )
    assert sup.proc.wait(timeout=30) != 0
    assert "make_app() got an unexpected keyword argument 'nope'" in sup.log()
