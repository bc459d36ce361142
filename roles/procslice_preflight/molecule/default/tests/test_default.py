"""procslice_preflight passed valid data (converge succeeded) and changed nothing."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path", ["/srv/procslice", "/etc/procslice", "/usr/local/lib/procslice", "/var/lib/procslice"]
)
def test_host_has_no_procslice_files(host, path):
    assert not host.file(path).exists


def test_host_has_no_procslice_units(host):
    assert host.run("ls /etc/systemd/system | grep -q procslice").rc == 1
    units = host.run("systemctl list-units --all --no-legend 'procslice*'")
    assert units.stdout.strip() == "", units.stdout


def test_host_has_no_procslice_users(host):
    users = host.check_output("getent passwd | cut -d: -f1").split()
    assert not [u for u in users if u.startswith("procslice")]
