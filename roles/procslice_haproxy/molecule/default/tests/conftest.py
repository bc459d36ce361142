"""testinfra reaches this scenario's podman host through `podman exec` (see the module)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "tests" / "molecule_support"))

from podman_host import host  # noqa: E402,F401  (the fixture, overriding testinfra's)
