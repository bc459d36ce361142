"""Logging for the supervisors: one line per record on stderr, tagged with the role.

The journal (or a test's log file) receives lines such as
``2024-05-01 12:00:00,123 [4242] [worker 1] WARNING procslice.worker: ...``.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["set_role", "setup"]

_role = "master"


class _RoleFilter(logging.Filter):
    """Adds ``record.role`` (master, worker N, task N)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


def setup(level: str = "info") -> None:
    """Send procslice and uvicorn records to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RoleFilter())
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s [%(process)d] [%(role)s] %(levelname)s %(name)s: %(message)s"
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def set_role(role: str) -> None:
    """Tag this process's records with ``role`` (called in a child after fork)."""
    global _role
    _role = role
