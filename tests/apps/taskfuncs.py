"""Functions run in task workers by the tests."""

from __future__ import annotations

import os


def add(a: int, b: int) -> tuple[int, int]:
    """a + b, and the pid of the task worker that added them."""
    return a + b, os.getpid()
