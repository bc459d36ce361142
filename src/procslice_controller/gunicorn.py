"""gunicorn's settings: the worker class, the threads and the recycling and timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procslice_controller.errors import _checked, _Errors, _positive_int, _show
from procslice_controller.vocabulary import GUNICORN_DEFAULTS, SUPERVISOR_THREADS, WORKER_CLASSES


def _gunicorn_settings(
    entry: Mapping[str, Any],
    path: str,
    errors: _Errors,
    model: str | None,
    interface: str | None,
) -> tuple[str | None, int, dict[str, Any]]:
    """worker_class (resolved from the interface; None off gunicorn), threads (also the
    aio and swoole worker's to_thread pool) and the GUNICORN_DEFAULTS keys (filled in on
    every model; set on another model, they are refused by ``_wrong_model``)."""
    worker_class = entry.get("worker_class", "auto")
    if worker_class not in WORKER_CLASSES:
        errors.add(
            f"{path}.worker_class",
            f"{_show(worker_class)} is not a worker class; use one of: {', '.join(WORKER_CLASSES)}",
        )
        worker_class = "auto"
    if model == "gunicorn":
        if worker_class == "auto":
            worker_class = "uvicorn" if interface == "asgi" else "sync"
        elif interface == "asgi" and worker_class != "uvicorn":
            errors.add(
                f"{path}.worker_class",
                f"{worker_class} workers cannot serve an asgi app; use uvicorn (or auto)",
            )
        elif interface == "wsgi" and worker_class == "uvicorn":
            errors.add(
                f"{path}.worker_class",
                "uvicorn workers serve asgi apps; use sync or gthread for wsgi (or auto), "
                "or set interface: asgi",
            )
    else:
        worker_class = None
    if model in ("aio", "swoole"):
        threads_default = SUPERVISOR_THREADS
    else:
        threads_default = 4 if worker_class == "gthread" else 1
    threads: Any = entry.get("threads", threads_default)
    if _positive_int(threads) is None:
        errors.add(
            f"{path}.threads", f"{_show(threads)} is not a thread count; write a positive integer"
        )
        threads = threads_default
    threads = int(threads)
    if model == "gunicorn" and "threads" in entry and worker_class in ("sync", "uvicorn"):
        errors.add(
            f"{path}.threads",
            f"threads only applies to worker_class gthread (this service resolves to "
            f"{worker_class}); set worker_class: gthread or remove threads",
        )
    settings = _checked(entry, path, errors, GUNICORN_DEFAULTS)
    return worker_class, threads, settings
