"""The HTTP serving path of aio and swoole workers, on real sockets.

uvicorn's httptools protocol with procslice's changes (src/procslice/asgi.py): one
send per response, idle keep-alive connections closed by a sweep instead of a timer
per response, the concurrency gate counted without a wrapper coroutine, and
X-Forwarded-* headers honoured only from the proxies named in forwarded_allow_ips.
"""

from __future__ import annotations

import socket
import time
import weakref

import pytest
from conftest import StartSupervisor, wait_until

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A keep-alive client connection to the supervisor on loopback."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# a client socket -> the bytes read past its last response
_LEFTOVER: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body, however it arrives.

    Bytes past it (the next pipelined response) are kept for the next call.
    """
    data = _LEFTOVER.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        body += chunk
    if len(body) > length:
        _LEFTOVER[sock] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


def closed_by_server(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), None if it stayed open."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    assert data == b"", f"unexpected data {data!r}"
    return time.monotonic() - started


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_each_response_leaves_in_one_send(start_supervisor: StartSupervisor, model: str) -> None:
    # uvicorn writes the head and the body apart; a client blocked in recv() then gets
    # the head alone. procslice sends both with one writev: every recv() is whole.
    sup = start_supervisor(model, "--workers", "1")
    sock = connect(sup.port)
    partial = 0
    for _ in range(300):
        sock.sendall(REQUEST)
        first = sock.recv(65536)
        if not first.endswith(b"\r\n\r\nhello"):
            partial += 1
            _LEFTOVER[sock] = first
            assert read_response(sock).endswith(b"hello")
    sock.close()
    assert partial == 0, f"{partial} of 300 responses arrived in more than one piece"


def test_a_response_head_is_not_held_back_by_a_slow_body(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("aio", "--workers", "1")
    sock = connect(sup.port)
    sock.sendall(b"GET /stream?t=1.5 HTTP/1.1\r\nHost: test\r\n\r\n")
    started = time.monotonic()
    head = sock.recv(65536)
    head_after = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head
    rest = sock.recv(65536)
    body_after = time.monotonic() - started
    sock.close()
    assert rest == b"late"
    assert head_after < 0.5, f"the head came {head_after:.2f} s after the request"
    assert body_after >= 1.4


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    start_supervisor: StartSupervisor, model: str
) -> None:
    sup = start_supervisor(model, "--workers", "1", "--keepalive-timeout", "1")
    idle = connect(sup.port)
    idle.sendall(REQUEST)
    assert read_response(idle).endswith(b"hello")
    silent = connect(sup.port)  # never sends a request
    busy = connect(sup.port)  # one request every 0.3 s: never idle for 1 s
    slow = connect(sup.port)  # one request running 3 s: not idle while it runs
    slow.sendall(b"GET /slow?t=3 HTTP/1.1\r\nHost: test\r\n\r\n")
    started = time.monotonic()
    while time.monotonic() - started < 3.5:
        busy.sendall(REQUEST)
        assert read_response(busy).endswith(b"hello")
        time.sleep(0.3)
    assert read_response(slow).endswith(b"slow done")
    # idle: closed between 1 s and 1 s + 2 sweeps (0.5 s each) after its response
    closed_at = closed_by_server(idle, 1.0)
    assert closed_at is not None, "the idle connection is still open after 4.5 s"
    assert closed_by_server(silent, 1.0) is not None, "the silent connection is still open"
    # the busy and the slow connection were never idle for 1 s
    busy.sendall(REQUEST)
    assert read_response(busy).endswith(b"hello")
    slow.sendall(REQUEST)
    assert read_response(slow).endswith(b"hello")
    # ... and the slow one closes 1-2 s after its last response
    started = time.monotonic()
    after = closed_by_server(slow, 4.0)
    assert after is not None and 0.9 <= after <= 2.5, after
    for sock in (idle, silent, busy, slow):
        sock.close()


def test_idle_keepalive_timing(start_supervisor: StartSupervisor) -> None:
    sup = start_supervisor("aio", "--workers", "1", "--keepalive-timeout", "2")
    sock = connect(sup.port)
    sock.sendall(REQUEST)
    assert read_response(sock).endswith(b"hello")
    after = closed_by_server(sock, 6.0)
    sock.close()
    assert after is not None and 1.9 <= after <= 3.2, after


def test_gate_count_returns_to_zero_after_errors_and_disconnects(
    start_supervisor: StartSupervisor,
) -> None:
    sup = start_supervisor("swoole", "--workers", "1", "--max-concurrency", "4", metrics=True)
    # a failing app, clients that leave mid-request, and pipelined requests
    assert sup.get("/error")[0] == 500
    for _ in range(6):
        sock = connect(sup.port)
        sock.sendall(b"GET /slow?t=0.5 HTTP/1.1\r\nHost: test\r\n\r\n")
        sock.close()
    sock = connect(sup.port)
    sock.sendall(REQUEST * 10)
    for _ in range(10):
        assert read_response(sock).endswith(b"hello")
    sock.close()
    time.sleep(0.7)  # the abandoned /slow requests finish
    # were places leaked, the gate (4) would now be full and these would queue forever
    for _ in range(8):
        assert sup.get("/slow?t=0.1", timeout=5) == (200, "slow done")
    wait_until(lambda: sup.metric("procslice_requests_in_flight") == 0, 5, "no request in flight")


@pytest.mark.parametrize(
    ("trusted", "seen"),
    [
        ((), "127.0.0.1 http"),
        (("--forwarded-allow-ips", "127.0.0.1"), "203.0.113.7 https"),
        (("--forwarded-allow-ips", "10.0.0.0/8,192.0.2.1"), "127.0.0.1 http"),
    ],
)
def test_forwarded_headers_only_from_trusted_proxies(
    start_supervisor: StartSupervisor, trusted: tuple[str, ...], seen: str
) -> None:
    sup = start_supervisor("aio", "--workers", "1", *trusted)
    sock = connect(sup.port)
    sock.sendall(
        b"GET /client HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 203.0.113.7\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    response = read_response(sock)
    sock.close()
    assert response.endswith(b"\r\n\r\n" + seen.encode()), response


def test_max_request_counts_responses_that_close_their_connection(
    start_supervisor: StartSupervisor,
) -> None:
    # A client sending Connection: close gets a response after which the connection
    # is closing; the request still counts towards max_request.
    sup = start_supervisor("swoole", "--workers", "1", "--max-request", "10")
    pids: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sock = connect(sup.port)
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        response = read_response(sock)
        assert b"connection: close" in response.lower()
        pids.append(int(response.rsplit(b"\r\n\r\n", 1)[1]))
        sock.close()
        if len(set(pids)) > 1:
            break
        time.sleep(0.01)
    assert len(set(pids)) > 1, f"one worker answered all {len(pids)} requests in 15 s"
    # it served its max_request before retiring (the first was wait_serving's GET /)
    assert pids.count(pids[0]) >= 9
    assert "served 10 requests (max_request 10 + grace)" in sup.log()


@pytest.mark.parametrize(("option", "sent"), [((), True), (("--server-header", "false"), False)])
def test_server_header_is_sent_unless_turned_off(
    start_supervisor: StartSupervisor, option: tuple[str, ...], sent: bool
) -> None:
    # server_header: one entry in the table of keys (procslice.data.keys), read here
    # from the command line the table makes and passed on to uvicorn's Config.
    sup = start_supervisor("swoole", "--workers", "1", *option)
    for _ in range(2):  # the first response, and one after the Date header's refresh
        sock = connect(sup.port)
        sock.sendall(REQUEST)
        head = read_response(sock).split(b"\r\n\r\n")[0].lower()
        sock.close()
        assert (b"\r\nserver: uvicorn" in head) is sent, head
        assert b"\r\ndate: " in head
        time.sleep(1.1)
