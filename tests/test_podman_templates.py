"""templates/podman rendered without a host: the plain unit and the Quadlet file.

The molecule scenario (roles/procslice_podman) runs the plain unit on Debian 12's
podman 4.3; no podman 4.5+ host exists here, so the Quadlet branch is checked by
rendering only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from ansible.plugins.filter.core import FilterModule as CoreFilters
from ansible.plugins.test.core import TestModule as CoreTests
from filter_plugin import ps

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates" / "podman" / "etc"


SERVICE = {
    "name": "demo",
    "model": "podman",
    "slice": "web",
    "image": "localhost/procslice-demo:1",
    "image_archive": "files/demo.tar.gz",
    "ports": ["8004:8000", "127.0.0.1:9090:9090/udp"],
    "command": ["serve", "--greeting", "hello world", "50%", "$HOME"],
    "volumes": ["/srv/demo:/data:ro"],
    "graceful_timeout": 5,
    "limits": {"cpus": 0.5, "memory": "96M", "memory_swap_max": 0, "limit_nofile": 4096},
    "env": {"VERSION": "1"},
    "podman_options": ["--cap-add=NET_BIND_SERVICE", "--read-only=false"],
}
RUN_OPTIONS = ["--security-opt=no-new-privileges", "--cap-drop=all", "--read-only"]


def render(relative: str, **extra: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(CoreFilters().filters())
    env.tests.update(CoreTests().tests())
    service = ps.procslice_normalize_services([SERVICE], [{"name": "web"}])[0]
    # roles/procslice_podman/vars/main.yml's __procslice_podman_options, as the role
    # builds it: the ulimits, the user namespace, the host's options, the service's.
    options = [
        "--ulimit=nproc=32768:32768",
        "--uidmap=0:2147483647:65536",
        "--gidmap=0:2147483647:65536",
        *RUN_OPTIONS,
    ]
    context = {
        "ansible_managed": "Ansible managed",
        "service": service,
        "__procslice_podman_etc": "/etc/procslice",
        "__procslice_podman_stop_time": "5",
        "__procslice_podman_default_ulimit_args": ["--ulimit=nproc=32768:32768"],
        "procslice_podman_run_options": RUN_OPTIONS,
        "__procslice_podman_options": options + service["podman_options"],
        "procslice_podman_default_ulimits": ["nofile=20000:20000", "nproc=32768:32768"],
        "procslice_podman_default_subnet": "",
        "procslice_podman_runtime": "runc",
        **extra,
    }
    return env.get_template(relative).render(context)


def directives(text: str) -> list[tuple[str, str]]:
    """(key, value) of every directive, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    pairs = []
    for line in joined.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, " ".join(value.split())))
    return pairs


def test_plain_unit_runs_podman_in_the_slice() -> None:
    text = render("systemd/system/SERVICE.service.j2")
    assert text.startswith("#\n# Ansible managed\n#\n# procslice service demo")
    found = dict(directives(text))
    assert found["Type"] == "notify" and found["NotifyAccess"] == "all"
    assert found["Slice"] == "procslice-web.slice" and found["Delegate"] == "yes"
    assert found["KillMode"] == "mixed" and found["Restart"] == "on-failure"
    assert found["TimeoutStopSec"] == "20"
    assert found["ExecStop"] == "/usr/bin/podman stop --ignore --time=5 --cidfile=%t/%N.cid"
    run = found["ExecStart"]
    assert run.startswith("/usr/bin/podman run --rm --replace --name=procslice-demo ")
    for flag in (
        "--cgroups=split",
        "--sdnotify=conmon",
        "--env-file=/etc/procslice/demo/env",
        "--publish=8004:8000",
        "--publish=127.0.0.1:9090:9090/udp",
        "--volume=/srv/demo:/data:ro",
        "--cpus=0.5",
        f"--memory={96 * 2**20}",
        f"--memory-swap={96 * 2**20}",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=32768:32768",
        "--security-opt=no-new-privileges",
    ):
        assert f" {flag} " in run, flag
    # the host's hardening, then the service's own options (podman: the last value of a
    # flag wins, and --cap-add applies after --cap-drop=all)
    words = run.split()
    assert words.index("--uidmap=0:2147483647:65536") < words.index("--cap-drop=all")
    assert words.index("--read-only") < words.index("--read-only=false")
    assert words.index("--cap-drop=all") < words.index("--cap-add=NET_BIND_SERVICE")
    # the image, then the command, quoted and escaped for systemd
    assert run.endswith(
        'localhost/procslice-demo:1 serve --greeting "hello world" 50%% "$$HOME"'
    ), run


def test_quadlet_file_carries_the_same_run() -> None:
    text = render("containers/systemd/SERVICE.container.j2")
    found = directives(text)
    keys = dict(found)
    assert keys["Image"] == "localhost/procslice-demo:1"
    assert keys["ContainerName"] == "procslice-demo"
    assert keys["EnvironmentFile"] == "/etc/procslice/demo/env"
    assert keys["Slice"] == "procslice-web.slice"
    assert keys["Exec"] == '"serve" "--greeting" "hello world" "50%%" "$$HOME"'
    assert ("Volume", "/srv/demo:/data:ro") in found
    assert [v for k, v in found if k == "PublishPort"] == ["8004:8000", "127.0.0.1:9090:9090/udp"]
    args = [v for k, v in found if k == "PodmanArgs"]
    for flag in ("--cpus=0.5", "--ulimit=nofile=4096:4096", "--stop-timeout=5", "--pull=never"):
        assert flag in args
    assert args[-2:] == ["--cap-add=NET_BIND_SERVICE", "--read-only=false"]


@pytest.mark.parametrize("subnet", ["", "10.90.0.0/24"])
def test_containers_conf_uses_runc_and_safe_ulimits(subnet: str) -> None:
    text = render(
        "containers/containers.conf.d/50-procslice.conf.j2",
        procslice_podman_default_subnet=subnet,
    )
    assert 'runtime = "runc"' in text
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in text
    assert ('default_subnet = "10.90.0.0/24"' in text) == bool(subnet)


def test_env_file_is_literal_for_podman() -> None:
    text = render("procslice/SERVICE/env.j2")
    assert "PROCSLICE_SERVICE=demo\nVERSION=1\n" in text
