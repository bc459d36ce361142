"""What systemd says about the procslice units: ``systemctl show`` and unit lists,
ExecStart, the model and release a unit runs, the records of procslice-activate."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence

UNIT_RE = re.compile(r"^procslice-([a-z][a-z0-9-]*)\.service$")


SHOW_PROPERTIES: tuple[str, ...] = (
    "Id",
    "LoadState",
    "Description",
    "Slice",
    "ControlGroup",
    "ExecStart",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "StatusText",
    "NRestarts",
    "MemoryCurrent",
    "MemoryMax",
    "MemoryHigh",
    "CPUUsageNSec",
    "CPUQuotaPerSecUSec",
    "TasksCurrent",
    "TasksMax",
)


APPLIED_DIR = "/var/lib/procslice/applied"


# systemd prints an unset 64-bit value as this (e.g. MemoryCurrent without accounting).
_UINT64_MAX = 2**64 - 1


_TIMESPAN_UNITS: dict[str, float] = {
    "us": 1,
    "µs": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}


_TIMESPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(us|µs|ms|sec|s|min|m|h|d|w)(?![a-z])")


# CLD_* codes of ExecMainCode: how the main process ended.
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3


Runner = Callable[[Sequence[str]], str]


def parse_show(text: str) -> list[dict[str, str]]:
    """The units of ``systemctl show -p ... UNIT...`` output: one dict per unit."""
    units: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        units.append(current)
    return units


def show_int(value: str | None) -> int | None:
    """An integer property; "[not set]", "infinity" and UINT64_MAX are ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        return None
    number = int(value)
    return None if number >= _UINT64_MAX else number


def parse_timespan_usec(text: str | None) -> int | None:
    """A systemd timespan ("1s", "500ms", "1.500000s", "1min 30s") in µs; ``None`` for
    "infinity", empty or unreadable values."""
    if text is None:
        return None
    text = text.strip()
    if not text or text == "infinity" or text.startswith("["):
        return None
    if text.isdigit():
        return int(text)
    total = 0.0
    end = 0
    for match in _TIMESPAN_RE.finditer(text):
        if text[end : match.start()].strip():
            return None
        total += float(match.group(1)) * _TIMESPAN_UNITS[match.group(2)]
        end = match.end()
    if end == 0 or text[end:].strip():
        return None
    return round(total)


def parse_exec_argv(text: str | None) -> list[str]:
    """The argv of the first command of an ExecStart property
    (``{ path=... ; argv[]=... ; ignore_errors=no ; ... }``)."""
    if not text:
        return []
    match = re.search(r"argv\[\]=(.*?) ; (?:ignore_errors|start_time|flags)=", text)
    return match.group(1).split() if match else []


def detect_model(argv: Sequence[str], description: str = "") -> str:
    """The procslice model of a unit from what it runs, else from its Description."""
    words = [os.path.basename(word) for word in argv]
    if words:
        if words[0] == "podman":
            return "podman"
        if "gunicorn" in words[:4]:
            return "gunicorn"
        for runtime, model in zip(words, words[1:], strict=False):
            if runtime == "procslice" and model in ("aio", "swoole"):
                return model
    match = re.search(r"\((gunicorn|aio|swoole|podman)\b[^)]*\)\s*$", description)
    return match.group(1) if match else "?"


def podman_image(description: str) -> str | None:
    """The image a podman unit's Description names: "... (podman IMAGE)"."""
    match = re.search(r"\(podman (\S+)\)\s*$", description)
    return match.group(1) if match else None


def current_link(argv: Sequence[str]) -> str | None:
    """The ``.../current`` release link that ExecStart runs through, if any."""
    for word in argv:
        index = word.find("/current/")
        if index > 0:
            return word[: index + len("/current")]
    return None


def parse_applied(text: str) -> str | None:
    """The release id in /var/lib/procslice/applied/<unit>: three fingerprints, then the
    release that last passed the health gate (``releases/<id>``, empty without a link)."""
    lines = text.splitlines()
    release = lines[3].strip() if len(lines) > 3 else ""
    return os.path.basename(release) or None


def parse_activate_args(text: str) -> dict[str, str]:
    """The options of procslice-activate's last run, from applied/<unit>.args (the unit,
    then one argument a line): ``{"--health-url": URL, "--link": PATH, ...}`` for the
    options that take one value."""
    lines = text.splitlines()
    options: dict[str, str] = {}
    for index, line in enumerate(lines[1:], start=1):
        if line in ("--health-url", "--health-timeout", "--link") and index + 1 < len(lines):
            options[line] = lines[index + 1]
    return options


def unit_slices(slice_unit: str) -> list[str]:
    """A slice and its ancestors, innermost first: procslice-web.slice ->
    [procslice-web.slice, procslice.slice]."""
    if not slice_unit.endswith(".slice") or slice_unit == "-.slice":
        return []
    parts = slice_unit[: -len(".slice")].split("-")
    return ["-".join(parts[:depth]) + ".slice" for depth in range(len(parts), 0, -1)]


def run_command(argv: Sequence[str]) -> str:
    """Run a command and return its stdout (``systemctl`` in production)."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=20, check=False, env=_c_locale()
    )
    # `systemctl list-unit-files PATTERN` exits 1 when nothing matches, silently.
    if result.returncode != 0 and result.stderr.strip():
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def _c_locale() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
    return env


def list_units(runner: Runner) -> list[str]:
    """Every procslice-<name>.service systemd has loaded or has a unit file for."""
    loaded = runner(
        [
            "systemctl",
            "list-units",
            "--all",
            "--type=service",
            "--plain",
            "--no-legend",
            "--no-pager",
            "procslice-*.service",
        ]
    )
    files = runner(
        [
            "systemctl",
            "list-unit-files",
            "--type=service",
            "--no-legend",
            "--no-pager",
            "procslice-*.service",
        ]
    )
    names: set[str] = set()
    for line in (loaded + "\n" + files).splitlines():
        words = line.replace("●", " ").split()
        if words and UNIT_RE.match(words[0]):
            names.add(words[0])
    return sorted(names)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_exit(code: int | None, status: int | None) -> str | None:
    if code == _CLD_EXITED and status:
        return f"exit {status}"
    if code == _CLD_KILLED and status:
        return f"killed by {_signal_name(status)}"
    if code == _CLD_DUMPED and status:
        return f"core dump ({_signal_name(status)})"
    return None


def last_recycle(status_text: str) -> str | None:
    match = re.search(r"last recycle: ([^;]+)", status_text)
    return match.group(1).strip() if match else None
