"""The bench's socket-activated servers serve on the one socket the bench passes them.

bench/run.py measures procslice aio and swoole as deployed: socket-activated, the
workers sharing the one listening socket systemd would pass (bench/activate.py makes it
fd 3 with LISTEN_FDS and LISTEN_PID).  If the launcher or the server fell back to
binding the address itself, the "as deployed" rows would measure the ``--listen`` path
again, and nothing in the figures would tell.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from pathlib import Path

import pytest
from conftest import wait_until

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import activate  # noqa: E402
import run  # noqa: E402


def listening_inodes() -> set[int]:
    """Inodes of every listening TCP socket of this network namespace (IPv4 and IPv6)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found.add(int(fields[9]))
    return found


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    held: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(int(target[len("socket:[") : -1]))
    return held


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_socket_activated_server_serves_on_the_inherited_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    name = f"procslice-{model}-activated"
    made: list[int] = []
    make = activate.listening_socket

    def recorded(host: str, port: int) -> socket.socket:
        sock = make(host, port)
        made.append(os.fstat(sock.fileno()).st_ino)
        return sock

    monkeypatch.setattr(activate, "listening_socket", recorded)
    monkeypatch.setattr(run, "LOGS", tmp_path)
    port = run.free_port()
    with run.running(name, port) as proc:
        wait_until(lambda: len(run.workers_of(proc.pid)) == run.WORKERS, 15, "both workers")
        conn = http.client.HTTPConnection(run.HOST, port, timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello")
        finally:
            conn.close()
        processes = [proc.pid, *run.workers_of(proc.pid)]
        listening = listening_inodes()
        held = {pid: socket_inodes(pid) & listening for pid in processes}
    log = (tmp_path / f"{name}.log").read_text()
    assert len(made) == 1, made
    # The master and every worker hold the inherited socket, and no other listening one.
    assert held == dict.fromkeys(processes, {made[0]}), (held, made, log)
