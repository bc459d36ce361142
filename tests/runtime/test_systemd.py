"""sd_notify datagrams and listening sockets (bound here or inherited), without a supervisor."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from procslice.sdnotify import Notifier, monotonic_usec
from procslice.sockets import bind, inherited, parse_address


@pytest.fixture
def manager() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0procslice-unit-{os.getpid()}")
    sock.settimeout(2)
    yield sock
    sock.close()


def test_notifier_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_notifier_sends_ready_with_status_to_abstract_socket(manager: socket.socket) -> None:
    notifier = Notifier("@" + manager.getsockname()[1:].decode())
    assert notifier.ready(status="workers 2/2 up")
    assert manager.recv(1024) == b"READY=1\nSTATUS=workers 2/2 up"


def test_notifier_reloading_carries_monotonic_usec(manager: socket.socket) -> None:
    notifier = Notifier("@" + manager.getsockname()[1:].decode())
    before = monotonic_usec()
    notifier.reloading()
    lines = manager.recv(1024).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= monotonic_usec()


def test_notifier_sends_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        Notifier(str(path)).stopping()
        assert sock.recv(1024) == b"STOPPING=1"


def test_watchdog_interval_from_watchdog_usec() -> None:
    assert Notifier("@x", watchdog_usec="2000000").watchdog_interval == 2.0
    assert Notifier("@x", watchdog_usec="0").watchdog_interval is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", (socket.AF_INET, ("127.0.0.1", 8000))),
        (":8000", (socket.AF_INET, ("0.0.0.0", 8000))),
        ("[::1]:8000", (socket.AF_INET6, ("::1", 8000))),
        ("unix:/run/api.sock", (socket.AF_UNIX, "/run/api.sock")),
    ],
)
def test_listen_addresses_parse(text: str, expected: object) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4:http", "::1:80", "unix:", "h:70000"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_bound_sockets_are_non_blocking_with_reuseaddr(tmp_path: Path) -> None:
    tcp, unix = bind(["127.0.0.1:0", f"unix:{tmp_path / 's'}"])
    try:
        assert not tcp.sock.getblocking() and not unix.sock.getblocking()
        assert tcp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert (tmp_path / "s").is_socket()
    finally:
        tcp.sock.close()
        unix.sock.close()


def test_listen_fds_for_another_pid_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert inherited() is None
    assert "LISTEN_FDS" not in os.environ
