"""Reach the podman test host with `podman exec`, not one ansible run per command.

Shared by every role's molecule scenario: each tests/conftest.py imports `host` from here.

molecule hands testinfra an ansible inventory; through it every command would be an
ansible ad-hoc run (seconds each), over the podman connection or SSH alike. The
container is named for the inventory host, so `podman://` reaches it directly.
"""

from __future__ import annotations

import pytest
import testinfra


@pytest.fixture(scope="module")
def host(host):
    if host.backend.NAME != "ansible":
        return host
    return testinfra.get_host(f"podman://{host.backend.host}")
