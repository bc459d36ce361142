"""hello:app, except that importing fails while the file named by $BREAK_FILE exists."""

from __future__ import annotations

import os

from hello import app

if os.path.exists(os.environ.get("BREAK_FILE", "/nonexistent")):
    raise ImportError("switched off by BREAK_FILE")

__all__ = ["app"]
