"""procslice_build's wheelhouse.py: a build that fails says pip's own verdict first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "roles" / "procslice_build" / "files" / "wheelhouse.py"


def test_a_wheel_pip_cannot_read_fails_with_pips_error_first(tmp_path: Path) -> None:
    # Not a wheel at all: pip refuses it without asking any index.
    (tmp_path / "api-1.0-py3-none-any.whl").write_bytes(b"not a zip archive")
    spec = {
        "services": [
            {
                "name": "api",
                "model": "aio",
                "state": "present",
                "package": {"wheel": "api-1.0-py3-none-any.whl"},
            }
        ],
        "base_dir": str(tmp_path),
        "runtime_source": str(REPO),
        "constraints": str(REPO / "requirements" / "service.txt"),
        "cache_dir": str(tmp_path / "cache"),
    }
    run = subprocess.run(
        [sys.executable, str(WHEELHOUSE)],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout
    first = run.stderr.splitlines()[0]
    assert first.startswith("procslice_services[api]: building the wheelhouse failed: ERROR:"), (
        run.stderr[-3000:]
    )
    assert not list((tmp_path / "cache").glob("api/*/.complete")), "a failed build was kept"
