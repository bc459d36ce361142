"""Connections spread over the workers: one SO_REUSEPORT socket per worker slot."""

from __future__ import annotations

import signal
import socket
import sys
from collections import Counter

import pytest
from conftest import StartSupervisor, free_port, wait_until


def pids_of_keepalive_burst(port: int, count: int) -> Counter[int]:
    """Open ``count`` connections at once, then GET /pid on each: pid -> connections."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        for conn in conns:
            conn.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
        pids: Counter[int] = Counter()
        for conn in conns:
            data = b""
            while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                chunk = conn.recv(4096)
                assert chunk, data
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"connection: close" not in head.lower()  # still keep-alive
            pids[int(body)] += 1
        return pids
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_keepalive_burst_is_spread_over_the_workers(
    start_supervisor: StartSupervisor, model: str
) -> None:
    sup = start_supervisor(model, "--workers", "2")
    wait_until(lambda: len(sup.children()) == 2, 15, "two workers")
    pids = pids_of_keepalive_burst(sup.port, 32)
    assert set(pids) == set(sup.children()), pids
    assert min(pids.values()) >= 8, pids  # each worker holds at least a quarter


def test_sigttou_closes_the_removed_slots_socket(start_supervisor: StartSupervisor) -> None:
    """After SIGTTOU no new connection lands on a socket nobody accepts on."""
    sup = start_supervisor("swoole", "--workers", "3")
    wait_until(lambda: len(sup.children()) == 3, 15, "three workers")
    sup.signal(signal.SIGTTOU)
    wait_until(lambda: len(sup.children()) == 2, 15, "two workers left")
    for _ in range(30):
        assert sup.get("/pid", timeout=3)[0] == 200
    sup.signal(signal.SIGTTIN)
    wait_until(lambda: len(sup.children()) == 3, 15, "three workers again")
    wait_until(lambda: len(set(pids_of_keepalive_burst(sup.port, 48))) == 3, 15, "3 answering")


def activated(reuseport: bool) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, sock.getsockname()[1]


WRAPPER = (
    "import os, sys; fd = int(os.environ.pop('TEST_FD')); os.dup2(fd, 3); os.close(fd); "
    "os.environ['LISTEN_PID'] = str(os.getpid()); "
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
)


@pytest.mark.parametrize("reuseport", [True, False])
def test_socket_activated_socket_is_split_only_with_reuseport(
    start_supervisor: StartSupervisor, reuseport: bool
) -> None:
    sock, port = activated(reuseport)
    sup = start_supervisor(
        "aio",
        "--workers",
        "2",
        "--listen",
        f"127.0.0.1:{free_port()}",
        listen=False,
        prefix=[sys.executable, "-c", WRAPPER],
        env={"TEST_FD": str(sock.fileno()), "LISTEN_FDS": "1"},
        pass_fds=(sock.fileno(),),
        wait=False,
    )
    sock.close()
    sup.port = port
    sup.wait_serving()
    wait_until(lambda: len(sup.children()) == 2, 15, "two workers")
    listening = {}
    for pid in sup.children():
        out = subprocess_ss(port, pid)
        listening[pid] = out
    inodes = [set(v) for v in listening.values()]
    if reuseport:
        assert not (inodes[0] & inodes[1]), listening  # a socket of its own each
        pids = pids_of_keepalive_burst(port, 32)
        assert len(pids) == 2, pids
    else:
        assert inodes[0] == inodes[1], listening  # the one shared socket
    for _ in range(10):
        assert sup.get("/pid", port=port)[0] == 200


def subprocess_ss(port: int, pid: int) -> list[str]:
    """Inodes of the listening sockets on ``port`` that process ``pid`` holds."""
    import os
    from pathlib import Path

    wanted = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            wanted.add(inode)
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in wanted:
            held.append(target[8:-1])
    return held
