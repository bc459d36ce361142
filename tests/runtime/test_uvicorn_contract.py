"""What procslice's HTTP path takes from uvicorn, checked against the installed uvicorn.

procslice.asgi (aio, swoole) and procslice.gunicorn_worker subclass uvicorn's HTTP
protocols and override or call some of their methods, some private
(``_start_asgi_task``), and read attributes uvicorn sets in ``__init__``. pyproject.toml
pins uvicorn to the range these tests pass on; a uvicorn that renames, drops or
re-signs any of them fails here with the method's name, before a request does.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

UVICORN = version("uvicorn")
FIX = "update src/procslice/asgi.py (and gunicorn_worker.py) and the uvicorn pin in pyproject.toml"

# (class, method): the parameters procslice's overrides and calls rely on.
METHODS = [
    (HttpToolsProtocol, "connection_made", ["self", "transport"]),
    (HttpToolsProtocol, "on_headers_complete", ["self"]),
    (HttpToolsProtocol, "_start_asgi_task", ["self", "cycle", "app"]),
    (HttpToolsProtocol, "on_response_complete", ["self"]),
    (HttpToolsProtocol, "shutdown", ["self"]),
    (H11Protocol, "data_received", ["self", "data"]),
    (H11Protocol, "on_response_complete", ["self"]),
    (RequestResponseCycle, "run_asgi", ["self", "app"]),
]
# Attributes an HttpToolsProtocol has from __init__ that procslice reads or sets.
PROTOCOL_ATTRIBUTES = ["config", "loop", "server_state", "tasks", "pipeline", "cycle", "scope"]
# Attributes of a request cycle procslice reads or sets.
CYCLE_ATTRIBUTES = ["keep_alive", "response_started", "response_complete", "transport"]


@pytest.mark.parametrize(
    ("cls", "name", "params"),
    METHODS,
    ids=[f"{cls.__name__}.{name}" for cls, name, _ in METHODS],
)
def test_the_uvicorn_methods_procslice_overrides_keep_their_signature(
    cls: type, name: str, params: list[str]
) -> None:
    method = getattr(cls, name, None)
    assert method is not None, f"uvicorn {UVICORN} has no {cls.__name__}.{name}: {FIX}"
    found = list(inspect.signature(method).parameters)
    assert found == params, (
        f"uvicorn {UVICORN} changed {cls.__name__}.{name}({', '.join(found)}), "
        f"procslice relies on ({', '.join(params)}): {FIX}"
    )


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app (never called: the protocol is only built)."""


def test_a_protocol_and_a_cycle_have_the_attributes_procslice_uses() -> None:
    async def build() -> tuple[Any, Any]:
        config = Config(app=_app, http="httptools", lifespan="off", log_config=None)
        protocol = HttpToolsProtocol(config, ServerState(), {})
        cycle_params = inspect.signature(RequestResponseCycle).parameters
        cycle = RequestResponseCycle(**{name: None for name in cycle_params})
        return protocol, cycle

    protocol, cycle = asyncio.run(build())
    for name in PROTOCOL_ATTRIBUTES:
        assert hasattr(protocol, name), f"uvicorn {UVICORN}: HttpToolsProtocol has no {name}: {FIX}"
    assert hasattr(protocol.server_state, "total_requests"), f"uvicorn {UVICORN}: {FIX}"
    assert hasattr(protocol.config, "reset_contextvars"), (
        f"uvicorn {UVICORN}'s Config has no reset_contextvars: {FIX}"
    )
    for name in CYCLE_ATTRIBUTES:
        assert hasattr(cycle, name), f"uvicorn {UVICORN}: RequestResponseCycle has no {name}: {FIX}"
