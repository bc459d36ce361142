"""Reach the podman test host with `podman exec`, not one ansible run per command.

Shared by every role's molecule scenario: each tests/conftest.py imports `host` from here.

molecule hands testinfra an ansible inventory; testinfra has no native backend for
the podman connection, so every command would be an ansible ad-hoc run (seconds
each). The container is named for the inventory host, so `podman://` reaches it.
"""

from __future__ import annotations

import pytest
import testinfra


@pytest.fixture(scope="module")
def host(host):
    if host.backend.NAME != "ansible":
        return host
    connection = host.backend.get_variables().get("ansible_connection", "")
    if connection.rsplit(".", 1)[-1] != "podman":
        return host
    return testinfra.get_host(f"podman://{host.backend.host}")
