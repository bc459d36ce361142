"""haproxy-ctl's command line: every command parses and reaches haproxy's socket.

(The commands against a real haproxy are the procslice_haproxy scenario's part; a
command that failed before the socket, like save-state once did on drain's --only,
made the reload lose the drained servers' state without a word: ExecReload=- ignores it.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CTL = Path(__file__).resolve().parents[1] / "roles" / "procslice_haproxy" / "files" / "haproxy-ctl"


@pytest.mark.parametrize(
    "args",
    [
        ["show"],
        ["drain", "b1"],
        ["drain", "b1", "--only", "web,api", "--force"],
        ["ready", "b1", "--only", "web"],
        ["save-state", "--file", "/tmp/procslice-test-state"],
    ],
)
def test_every_command_gets_as_far_as_the_socket(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "admin.sock"
    run = subprocess.run(
        [sys.executable, str(CTL), "--socket", str(missing), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"haproxy-ctl {args[0]}: cannot talk to haproxy at {missing}")
    assert "Traceback" not in run.stderr
