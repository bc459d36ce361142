"""gunicorn's uvicorn worker, draining keep-alive connections the procslice way.

uvicorn's shutdown (a gunicorn reload, max_requests, a stop) closes every idle
keep-alive connection at once: a request the client was sending on it meets a closed
connection (a read error, or a retry if the client makes one). This worker keeps such
a connection open instead and answers its next request with ``Connection: close``
(the same drain as ``procslice aio`` and ``swoole``, see :mod:`procslice.asgi`); a
connection that stays idle is closed by uvicorn's keep-alive timeout (gunicorn's
``keepalive``), and gunicorn's ``graceful_timeout`` bounds the whole.

    worker_class = "procslice.gunicorn_worker.UvicornWorker"
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]

__all__ = ["DrainingHttpToolsProtocol", "UvicornWorker"]


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose shutdown lets the client's next request in."""

    draining = False

    def shutdown(self) -> None:
        """The worker stops: the connection's next response (or the current one) is its last."""
        self.draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        """Start the request; while draining, answer it with ``Connection: close``."""
        HttpToolsProtocol.on_headers_complete(self)
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    """``uvicorn_worker.UvicornWorker`` with :class:`DrainingHttpToolsProtocol`."""

    CONFIG_KWARGS: dict[str, Any] = {
        **_UvicornWorker.CONFIG_KWARGS,
        "http": DrainingHttpToolsProtocol,
    }
