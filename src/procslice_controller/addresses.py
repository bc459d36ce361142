"""Addresses: listen's host:port and unix:PATH, podman's published ports."""

from __future__ import annotations

import ipaddress
from typing import Any

from procslice.data.checks import parse_listen
from procslice_controller.errors import ProcsliceDataError, _is_int, _show
from procslice_controller.vocabulary import UNIX_PATH_MAX


def _parse_unix_listen(value: str) -> str:
    """ "unix:/run/procslice/api/http.sock" -> "/run/procslice/api/http.sock"."""
    socket_path = value[len("unix:") :]
    hint = 'write an absolute path (e.g. "unix:/run/procslice/api/http.sock")'
    if not socket_path:
        raise ProcsliceDataError(f"{_show(value)} has no path after unix:; {hint}")
    if not socket_path.startswith("/"):
        raise ProcsliceDataError(
            f"{_show(value)}: {_show(socket_path)} is a relative path (systemd binds it "
            f"before the service has a working directory); {hint}"
        )
    size = len(socket_path.encode())
    if size > UNIX_PATH_MAX:
        raise ProcsliceDataError(
            f"{_show(value)}: the path is {size} bytes, over the {UNIX_PATH_MAX} a unix socket "
            "address holds; use a shorter path (e.g. under /run/procslice/)"
        )
    if any(part in (".", "..") for part in socket_path.split("/")) or socket_path.endswith("/"):
        raise ProcsliceDataError(
            f"{_show(value)}: {_show(socket_path)} is not a normalized file path; {hint}"
        )
    return socket_path


def _parse_listen(value: Any) -> tuple[str, int]:
    """ "0.0.0.0:8000" / "[::1]:8000" -> (host, port) (checks.parse_listen, the runtime's
    metrics_listen check too)."""
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise ProcsliceDataError(str(exc)) from None


def _parse_publish(value: Any) -> tuple[str, int, str] | None:
    """podman/compose ports: "8080:80", "127.0.0.1:8080:80/tcp", "80" -> (host ip, host port,
    protocol), or None when no host port is published."""
    hint = 'write "HOST_PORT:CONTAINER_PORT" or "IP:HOST_PORT:CONTAINER_PORT" (e.g. "8080:80")'
    if _is_int(value):
        if 1 <= value <= 65535:
            return None  # a container port only: podman picks a random host port
        raise ProcsliceDataError(
            f"{_show(value)} is not a port mapping; {hint}; quote it: YAML reads unquoted "
            "a:b as a base-60 number"
        )
    if not isinstance(value, str):
        raise ProcsliceDataError(f"{_show(value)} is not a port mapping; {hint}")
    text, _, proto = str(value).partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ProcsliceDataError(f"{_show(value)}: unknown protocol {proto}; {hint}")
    if text.startswith("["):  # [::1]:8080:80
        close = text.find("]")
        ip, rest = text[1:close], text[close + 2 :]
        parts = rest.split(":")
    else:
        parts = text.split(":")
        ip = parts.pop(0) if len(parts) == 3 else "0.0.0.0"
    if len(parts) == 1:
        host_port, container_port = None, parts[0]
    elif len(parts) == 2:
        host_port, container_port = parts
    else:
        raise ProcsliceDataError(f"{_show(value)} is not a port mapping; {hint}")
    try:
        ipaddress.ip_address(ip or "0.0.0.0")
    except ValueError as exc:
        raise ProcsliceDataError(f"{_show(value)}: {ip} is not an IP address; {hint}") from exc
    for port in (host_port, container_port):
        if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise ProcsliceDataError(f"{_show(value)}: ports must be 1 to 65535; {hint}")
    if host_port is None:
        return None
    host = f"[{ip}]" if ":" in (ip or "") else (ip or "0.0.0.0")
    return host, int(host_port), proto
