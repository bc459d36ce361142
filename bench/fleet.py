"""The bench's own local fleet: playbooks/fleet.yml with a prefix nobody else uses.

The leak and deploy sections run on systemd host containers named procslice-bfleet<i>
(SSH on 127.0.0.1:240<i>, service ports from 127.0.0.1:20000 + 100 * i), with their
key, inventory, SSH control sockets and fact cache under /var/tmp/procslice-bfleet, so
they never touch the demo fleet (procslice-host*) or anyone else's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOGS = BENCH / "results" / "logs"
PREFIX = "procslice-bfleet"
SSH_BASE = 2400
HTTP_BASE = 20000
STATE = Path("/var/tmp/procslice-bfleet")
INVENTORY = STATE / "hosts.yml"
FACTS = STATE / "facts"
CONTROL = STATE / "cp"
MAX_SIZE = 9  # SSH ports 2401-2409: below the next fleet's range

FLEET_VARS = {
    "fleet_prefix": PREFIX,
    "fleet_ssh_base": SSH_BASE,
    "fleet_http_base": HTTP_BASE,
    "fleet_dir": str(STATE),
    "fleet_inventory": str(INVENTORY),
}


def env(root: Path = ROOT) -> dict[str, str]:
    """The environment every bench ansible-playbook and podman command runs with.

    The project's ansible.cfg (in ``root``: the repository or a snapshot of it) and
    containers.conf, the controller venv first on PATH, and a fact cache and SSH
    control directory of the bench's own: a fleet started afresh must not be deployed
    with the facts of the one before it.
    """
    values = dict(os.environ)
    venv_bin = str(ROOT / ".venv" / "bin")
    values["PATH"] = os.pathsep.join([venv_bin, values.get("PATH", "/usr/bin:/bin")])
    values["CONTAINERS_CONF"] = str(ROOT / "config" / "containers.conf")
    values["ANSIBLE_CONFIG"] = str(root / "ansible.cfg")
    values["ANSIBLE_DEPRECATION_WARNINGS"] = "False"
    values["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(FACTS)
    values["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(CONTROL)
    values["ANSIBLE_NOCOLOR"] = "1"
    values["ANSIBLE_FORCE_COLOR"] = "0"
    values.pop("PYTHONPATH", None)
    return values


def hosts(size: int) -> list[str]:
    """The container names of a fleet of ``size`` hosts."""
    return [f"{PREFIX}{index}" for index in range(1, size + 1)]


def existing() -> list[str]:
    """The bench fleet's containers that exist now."""
    done = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=^{PREFIX}[0-9]+$"],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    return sorted(name for name in done.stdout.split() if re.fullmatch(rf"{PREFIX}\d+", name))


@dataclass
class Played:
    """One ansible-playbook run: how long it took, its exit code and PLAY RECAP."""

    seconds: float
    returncode: int
    recap: dict[str, dict[str, int]]
    log: Path
    command: str

    @property
    def changed(self) -> int:
        """Changed tasks over every host."""
        return sum(counts.get("changed", 0) for counts in self.recap.values())

    @property
    def ok(self) -> bool:
        """Exit code 0 and no failed or unreachable host."""
        return self.returncode == 0 and not any(
            counts.get("failed", 0) or counts.get("unreachable", 0)
            for counts in self.recap.values()
        )


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: host -> {ok, changed, unreachable, failed, skipped, ...}."""
    recap: dict[str, dict[str, int]] = {}
    section = output.rpartition("PLAY RECAP")[2]
    for line in section.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match is None:
            continue
        counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))}
        if counts:
            recap[match.group(1)] = counts
    return recap


def playbook(
    args: list[str], log_name: str, extra_env: dict[str, str] | None = None, root: Path = ROOT
) -> Played:
    """Run ``ansible-playbook ARGS`` from ``root``, timed; its output to a log."""
    argv = ["ansible-playbook", *args]
    values = env(root)
    values.update(extra_env or {})
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{log_name}.log"
    start = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=root,
        env=values,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    log.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return Played(
        seconds=round(seconds, 2),
        returncode=done.returncode,
        recap=parse_recap(done.stdout),
        log=log,
        command=" ".join(argv),
    )


SNAPSHOT_SKIP = {".git", ".venv", ".cache", ".fleet", "results", "__pycache__", ".mypy_cache"}


def snapshot() -> tuple[Path, str]:
    """A copy of the repository's working tree to deploy from, and what it was.

    A section that runs for many minutes deploys one tree throughout, whatever is
    edited in the repository meanwhile.  .cache is shared (the wheelhouses are
    content-addressed); the copy is made afresh at each call.
    """
    tree = STATE / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copytree(
        ROOT, tree, symlinks=True, ignore=lambda _dir, names: SNAPSHOT_SKIP & set(names)
    )
    (ROOT / ".cache").mkdir(exist_ok=True)
    (tree / ".cache").symlink_to(ROOT / ".cache")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return tree, f"{head or 'unknown'} + {len(dirty)} uncommitted file(s)"


def _fleet_args(**extra: Any) -> list[str]:
    values = {**FLEET_VARS, **extra}
    args = ["playbooks/fleet.yml"]
    for key, value in values.items():
        args += ["-e", f"{key}={value}"]
    return args


def up(size: int, fresh: bool = False) -> Played:
    """Start (or resize to) a fleet of ``size`` hosts; destroy the old one first if ``fresh``.

    A fresh fleet also starts with an empty fact cache and no SSH control sockets.
    """
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"the bench fleet holds 1 to {MAX_SIZE} hosts, not {size}")
    if fresh:
        down()
    for path in (FACTS, CONTROL):
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    played = playbook(_fleet_args(fleet_size=size), f"fleet-up-{size}")
    if not played.ok:
        raise RuntimeError(f"starting the bench fleet failed: see {played.log.relative_to(ROOT)}")
    return played


def down() -> None:
    """Destroy the bench fleet, whatever its size."""
    if not existing() and not INVENTORY.exists():
        return
    played = playbook(_fleet_args(fleet_state="absent"), "fleet-down")
    if not played.ok:
        raise RuntimeError(f"destroying the bench fleet failed: see {played.log.relative_to(ROOT)}")


def exec_(host: str, argv: list[str], timeout: float = 600, check: bool = True) -> str:
    """Run ``argv`` as root on a fleet host (podman exec); its stdout."""
    done = subprocess.run(
        ["podman", "exec", host, *argv],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{host}: {' '.join(argv)} exited with {done.returncode}: "
            f"{done.stderr.strip()[-500:] or done.stdout.strip()[-500:]}"
        )
    return done.stdout


def copy_to(host: str, source: Path, dest: str) -> None:
    """Copy a controller file into a fleet host (podman cp)."""
    subprocess.run(
        ["podman", "cp", str(source), f"{host}:{dest}"],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
