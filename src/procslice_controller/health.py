"""A service's health check: HTTP or TCP, and the URL a host probes."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from procslice_controller.errors import _Errors, _is_number, _show
from procslice_controller.vocabulary import HEALTH_KEYS, HEALTH_PATH, HEALTH_TIMEOUT


def _health_url(http: Any, listen: list[str], tcp: bool = False) -> str | None:
    """The URL a host probes for its own health check: the first listen address, a
    wildcard (0.0.0.0, [::]) probed on loopback; tcp://HOST:PORT for a TCP check (a
    connection accepted is healthy). A unix socket gives http+unix://PATH/HTTP_PATH
    (unix://PATH for a TCP-style check) with the socket path percent-encoded, /
    included: http+unix://%2Frun%2Fprocslice%2Fapi%2Fhttp.sock/healthz."""
    if not listen or not (isinstance(http, str) or tcp is True):
        return None
    if str(listen[0]).startswith("unix:"):
        quoted = urllib.parse.quote(str(listen[0])[len("unix:") :], safe="")
        return f"http+unix://{quoted}{http}" if isinstance(http, str) else f"unix://{quoted}"
    host, _, port = str(listen[0]).rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    if isinstance(http, str):
        return f"http://{host}:{port}{http}"
    return f"tcp://{host}:{port}"


def _health(
    value: Any,
    path: str,
    errors: _Errors,
    model: str | None,
    interface: str | None,
    listen: list[str],
) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        errors.add(path, f"{_show(value)} is not a mapping; write {{http: /healthz, timeout: 10}}")
        value = {}
    errors.unknown_keys(path, value, HEALTH_KEYS)
    speaks_http = bool(listen) and model != "podman" and interface in ("wsgi", "asgi")
    http = value.get("http", HEALTH_PATH if speaks_http and "tcp" not in value else None)
    if http is False:
        http = None
    if http is not None and (not isinstance(http, str) or not str(http).startswith("/")):
        errors.add(f"{path}.http", f"{_show(http)} is not a URL path; write e.g. /healthz")
        http = None
    if http is not None and not listen:
        errors.add(f"{path}.http", "the service does not listen; add listen or remove health.http")
    tcp = value.get("tcp", bool(listen) and http is None)
    if not isinstance(tcp, bool):
        errors.add(f"{path}.tcp", f"{_show(tcp)} is not true or false")
        tcp = False
    if tcp and not listen:
        errors.add(f"{path}.tcp", "the service does not listen; add listen or remove health.tcp")
    timeout = value.get("timeout", HEALTH_TIMEOUT)
    if not _is_number(timeout) or timeout <= 0:
        errors.add(
            f"{path}.timeout",
            f"{_show(timeout)} is not a timeout; write a positive number of seconds",
        )
        timeout = HEALTH_TIMEOUT
    return {
        "http": http,
        "tcp": tcp,
        "timeout": timeout,
        "url": _health_url(http, listen, tcp),
        # /healthz by default, not set by the data: the plan names such a service until
        # its gate has passed once (few apps serve /healthz)
        "default": http is not None and "http" not in value,
    }
