"""A podman service: its image, pull policy, command, volumes and run flags."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from procslice_controller.errors import _Errors, _show
from procslice_controller.vocabulary import (
    PODMAN_UNIT_MEMORY_HEADROOM,
    PODMAN_UNIT_TASKS_HEADROOM,
    PULL_POLICIES,
    VOLUME_NAME_RE,
)


def _podman_settings(
    entry: Mapping[str, Any],
    path: str,
    errors: _Errors,
    model: str | None,
    directives: Mapping[str, Any],
    limits: Mapping[str, Any],
    limit_paths: Mapping[str, str],
) -> dict[str, Any]:
    """A podman service's image, source, command, volumes and run flags.

    -> ``image``, ``image_archive`` (as written, or None), ``pull`` (one of
    PULL_POLICIES), ``command`` and ``volumes`` (lists of strings), ``publish`` (the
    `ports` list as podman --publish takes it) and ``podman_args``: podman run's
    resource flags derived from the same ``limits`` as the unit's directives (the unit
    keeps those too, so the slice-level cgroup caps podman's own processes as well).
    Limits podman cannot express at the container are errors naming the limit.
    """
    if model != "podman":
        return {}
    image = entry.get("image")
    archive = entry.get("image_archive")
    if archive is not None and (not isinstance(archive, str) or not str(archive).strip()):
        errors.add(
            f"{path}.image_archive",
            f"{_show(archive)} is not a path; write the path of an image archive on the "
            "controller (made by podman save), e.g. files/api-image.tar.gz",
        )
        archive = None
    pullable = isinstance(image, str) and _pullable_name(str(image))

    pull_raw = entry.get("pull")
    if pull_raw is None:
        # podman's own default (missing), except for what no registry serves: an image
        # from an archive, a localhost/ image, a short name (no search registries here)
        pull = "missing" if pullable and not archive else "never"
    elif isinstance(pull_raw, bool):
        pull = "missing" if pull_raw else "never"
    elif pull_raw in PULL_POLICIES:
        pull = str(pull_raw)
    else:
        errors.add(
            f"{path}.pull",
            f"{_show(pull_raw)} is not a pull policy; write true (pull when the host lacks "
            "the image), false (never: it comes from image_archive or is on the hosts "
            "already), always or newer",
        )
        pull = "never"
    if archive and pull != "never":
        errors.add(
            f"{path}.pull",
            f"{pull} pulls the image that image_archive loads; remove pull (an archive is "
            "never pulled) or remove image_archive",
        )
    elif pull != "never" and isinstance(image, str) and not pullable:
        if str(image).startswith("localhost/"):
            why = "a localhost/ image is built locally: no registry serves it"
        else:
            why = (
                "podman resolves no short names here (no unqualified-search registries); "
                "write the registry too (e.g. docker.io/library/nginx:1.27)"
            )
        errors.add(
            f"{path}.image",
            f"{_show(image)} cannot be pulled: {why}; or ship it with image_archive "
            "(podman save), or set pull: false if it is on the hosts already",
        )

    command_raw = entry.get("command")
    command: list[str] = []
    if isinstance(command_raw, str):
        try:
            command = shlex.split(str(command_raw))
        except ValueError as exc:
            errors.add(f"{path}.command", f"{_show(command_raw)} does not parse ({exc})")
    elif isinstance(command_raw, list) and all(
        isinstance(arg, (str, int, float)) and not isinstance(arg, bool) for arg in command_raw
    ):
        command = [str(arg) for arg in command_raw]
    elif command_raw is not None:
        errors.add(
            f"{path}.command",
            f'{_show(command_raw)} is not a command; write a list (["serve", "--port", "80"]) '
            "or a string",
        )

    volumes: list[str] = []
    volumes_raw = entry.get("volumes") or []
    if not isinstance(volumes_raw, list):
        errors.add(
            f"{path}.volumes", f'{_show(volumes_raw)} is not a list; write ["/srv/data:/data"]'
        )
        volumes_raw = []
    for index, volume in enumerate(volumes_raw):
        parts = str(volume).split(":") if isinstance(volume, str) else []
        ok = 2 <= len(parts) <= 3 and parts[1].startswith("/")
        ok = ok and (parts[0].startswith("/") or bool(VOLUME_NAME_RE.match(parts[0])))
        if not ok:
            errors.add(
                f"{path}.volumes[{index}]",
                f"{_show(volume)} is not a volume; write SOURCE:DESTINATION[:OPTIONS] with an "
                'absolute host path or a volume name as the source (e.g. "/srv/data:/data:ro")',
            )
            continue
        volumes.append(str(volume))

    # The service's own podman run options, after the host's procslice_podman_run_options
    # (e.g. --cap-add=NET_BIND_SERVICE, --read-only=false, --userns=host).
    options_raw = entry.get("podman_options") or []
    options: list[str] = []
    if not isinstance(options_raw, list):
        errors.add(
            f"{path}.podman_options",
            f'{_show(options_raw)} is not a list; write ["--cap-add=NET_BIND_SERVICE"]',
        )
        options_raw = []
    for index, option in enumerate(options_raw):
        if not isinstance(option, str) or not option.startswith("--") or "\n" in option:
            errors.add(
                f"{path}.podman_options[{index}]",
                f"{_show(option)} is not a podman run option; write one option with its "
                'value, e.g. "--cap-add=NET_BIND_SERVICE" or "--read-only=false"',
            )
            continue
        options.append(option)

    ports_raw = entry.get("ports") or []
    publish = [str(item) for item in ports_raw] if isinstance(ports_raw, list) else []
    return {
        "image": image,
        "image_archive": archive,
        "pull": pull,
        "command": command,
        "volumes": volumes,
        "publish": publish,
        "podman_args": _podman_limit_args(path, errors, directives, limits, limit_paths),
        "podman_options": options,
    }


def _podman_unit_directives(
    directives: Mapping[str, Any], limits: Mapping[str, Any]
) -> dict[str, Any]:
    """A podman unit's directives: the container's memory and task limits plus the
    headroom of podman's own processes (PODMAN_UNIT_MEMORY_HEADROOM, _TASKS_)."""
    unit = dict(directives)
    if limits.get("memory_max") is not None and "MemoryMax" in unit:
        unit["MemoryMax"] = str(limits["memory_max"] + PODMAN_UNIT_MEMORY_HEADROOM)
    if limits.get("tasks_max") is not None and "TasksMax" in unit:
        unit["TasksMax"] = str(limits["tasks_max"] + PODMAN_UNIT_TASKS_HEADROOM)
    return unit


def _pullable_name(image: str) -> bool:
    """A fully qualified name from a registry (docker.io/library/nginx:1.27)."""
    first, slash, _ = image.partition("/")
    return bool(slash) and first != "localhost" and ("." in first or ":" in first)


def _podman_limit_args(
    path: str,
    errors: _Errors,
    directives: Mapping[str, Any],
    limits: Mapping[str, Any],
    limit_paths: Mapping[str, str],
) -> list[str]:
    """podman run's flags for the service's limits (the unit's directives stay as well)."""

    def where(limit: str) -> str:
        return limit_paths.get(limit, f"{path}.limits.{limit}")

    args: list[str] = []
    if limits["cpu_quota_percent"] is not None:
        cpus = (Decimal(str(limits["cpu_quota_percent"])) / 100).normalize()
        args.append(f"--cpus={format(cpus, 'f')}")
    if limits["cpu_weight"] is not None:
        # systemd's own CPUWeight -> cpu.shares mapping (weight 100 = 1024 shares)
        args.append(f"--cpu-shares={max(2, limits['cpu_weight'] * 1024 // 100)}")
    memory = limits["memory_max"]
    if memory is not None:
        args.append(f"--memory={memory}")
    if "MemorySwapMax" in directives:
        if memory is None:
            errors.add(
                where("memory_swap_max"),
                "podman sets swap with --memory-swap (memory plus swap), which needs a "
                "memory limit; set memory_max too, or remove memory_swap_max",
            )
        else:
            swap = limits["memory_swap_max"]
            args.append(f"--memory-swap={-1 if swap is None else memory + swap}")
    if limits["memory_low"] is not None:
        args.append(f"--memory-reservation={limits['memory_low']}")
    if "TasksMax" in directives:
        tasks = limits["tasks_max"]
        args.append(f"--pids-limit={-1 if tasks is None else tasks}")
    for key, directive, flag in (
        ("io_read_bandwidth_max", "IOReadBandwidthMax", "--device-read-bps"),
        ("io_write_bandwidth_max", "IOWriteBandwidthMax", "--device-write-bps"),
    ):
        for line in directives.get(directive, []):
            device, _, rate = str(line).rpartition(" ")
            if rate == "infinity":
                errors.add(
                    where(key),
                    f"podman's {flag} takes a rate, not infinity ({device}); give a rate "
                    "or leave the device out",
                )
                continue
            args.append(f"{flag}={device}:{rate}")
    if limits["allowed_cpus"] is not None:
        args.append(f"--cpuset-cpus={','.join(re.split(r'[ ,]+', limits['allowed_cpus']))}")
    if "LimitNOFILE" in directives:
        nofile = str(directives["LimitNOFILE"])
        if nofile == "infinity":
            errors.add(
                where("limit_nofile"),
                "podman's --ulimit cannot set an unlimited nofile; write a number "
                "(e.g. 65536) or soft:hard",
            )
        else:
            soft, _, hard = nofile.partition(":")
            args.append(f"--ulimit=nofile={soft}:{hard or soft}")
    if "LimitAS" in directives:
        errors.add(
            where("limit_as"),
            "podman cannot set an address-space limit on a container (its --ulimit has no "
            "'as'), and LimitAS= on the unit would bind podman itself; remove limit_as "
            "(memory_max caps the container's memory)",
        )
    return args
