"""The WSGI twin of hello_asgi: 200 "hello" on every path."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"hello"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "5")]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer 200 "hello"."""
    start_response("200 OK", HEADERS)
    return [BODY]
