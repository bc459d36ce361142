"""aio and swoole masters on a unix socket, bound by hand and socket-activated, and the
health check of such a service (the URL the preflight derives, probed by procslice status)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import StartSupervisor, wait_until
from filter_plugin import ps

from procslice.status import check_health, unix_socket_url


def get_over_unix(path: Path, target: str = "/") -> bytes | None:
    """The raw answer to a GET of ``target`` over the unix socket, or None."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer
    except OSError:
        return None


def health_url(path: Path) -> str:
    """The health URL the preflight gives a service listening on ``path`` first."""
    (service,) = ps.procslice_normalize_services(
        [
            {
                "name": "api",
                "model": "aio",
                "app": "hello:app",
                "package": {"source": "x"},
                "listen": [f"unix:{path}"],
                "health": {"http": "/pid"},
            }
        ]
    )
    url: str = service["health"]["url"]
    return url


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_master_started_by_hand_answers_on_a_unix_socket_and_passes_its_health_check(
    start_supervisor: StartSupervisor, tmp_path: Path, model: str
) -> None:
    path = tmp_path / "http.sock"
    sup = start_supervisor(
        model, "--workers", "2", "--listen", f"unix:{path}", listen=False, wait=False
    )
    wait_until(lambda: (get_over_unix(path) or b"").startswith(b"HTTP/1.1 200"), 20, "an answer")
    answer = get_over_unix(path, "/pid")
    assert answer is not None and answer.startswith(b"HTTP/1.1 200")
    assert int(answer.split(b"\r\n\r\n", 1)[1]) in sup.children()
    url = health_url(path)
    assert unix_socket_url(url) == (str(path), "/pid")
    assert check_health(url, timeout=5) == ("ok", None)
    assert sup.stop() == 0
    assert not path.exists()  # the master removes the socket it bound
    assert check_health(url, timeout=2)[0] == "failing"


@pytest.mark.skipif(
    not shutil.which("systemd-socket-activate"), reason="no systemd-socket-activate"
)
@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_socket_activated_master_serves_the_unix_socket_it_inherits(
    start_supervisor: StartSupervisor, tmp_path: Path, model: str
) -> None:
    path = tmp_path / "activated.sock"
    unused = tmp_path / "unused.sock"
    # systemd-socket-activate binds the socket and, on the first connection, execs the
    # master with it as fd 3 (LISTEN_FDS=1, LISTEN_PID): what the .socket unit does.
    sup = start_supervisor(
        model,
        "--workers",
        "1",
        "--listen",
        f"unix:{unused}",
        listen=False,
        wait=False,
        prefix=[
            "systemd-socket-activate",
            "--listen",
            str(path),
            "--fdname",
            "http",
            "-E",
            "PYTHONPATH",
            "-E",
            "PYTHONUNBUFFERED",
            sys.executable,
        ],
    )
    wait_until(path.exists, 10, "systemd-socket-activate's socket")
    assert check_health(health_url(path), timeout=20) == ("ok", None)
    assert "socket activation" in sup.log()
    assert not unused.exists()  # the inherited socket, not the --listen address


def test_health_check_of_a_path_the_app_does_not_serve_fails_with_its_status(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    path = tmp_path / "http.sock"
    start_supervisor("aio", "--workers", "1", "--listen", f"unix:{path}", listen=False, wait=False)
    wait_until(lambda: get_over_unix(path) is not None, 20, "an answer")
    url = health_url(path).replace("/pid", "/error")
    state, why = check_health(url, timeout=5)
    assert state == "failing" and why is not None and why.startswith("HTTP 5"), why


def test_curl_reaches_the_master_over_the_unix_socket(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl")
    path = tmp_path / "http.sock"
    sup = start_supervisor(
        "swoole", "--workers", "1", "--listen", f"unix:{path}", listen=False, wait=False
    )
    wait_until(lambda: get_over_unix(path) is not None, 20, "an answer")
    result = subprocess.run(
        [curl, "-sf", "--unix-socket", str(path), "http://localhost/pid"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert int(result.stdout) in sup.children()
