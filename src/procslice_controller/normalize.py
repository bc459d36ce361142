"""The normalise filters and procslice_errors: slices, services and the cross-checks."""

from __future__ import annotations

import os
from typing import Any

from procslice_controller.crosscheck import _cross_check
from procslice_controller.errors import ProcsliceDataError, _Errors, _show
from procslice_controller.services import _services
from procslice_controller.slices import _slices


def _check(
    slices: Any, services: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], _Errors]:
    errors = _Errors()
    norm_slices = _slices(slices, errors)
    norm_services = _services(services, errors)
    _cross_check(norm_slices, norm_services, errors)
    return norm_slices, norm_services, errors


def _raise(errors: _Errors) -> None:
    if errors.messages:
        lines = "\n".join(f"- {message}" for message in errors.messages)
        raise ProcsliceDataError(f"invalid procslice data:\n{lines}")


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop the internal bookkeeping keys (they start with _)."""
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def procslice_normalize_slices(slices: Any) -> list[dict[str, Any]]:
    """Each slice -> {name, unit, state, directives, limits}; raises on invalid data."""
    errors = _Errors()
    result = _slices(slices, errors)
    _raise(errors)
    return [_public(sl) for sl in result]


def procslice_normalize_services(services: Any, slices: Any | None = None) -> list[dict[str, Any]]:
    """Each service with its defaults filled; raises on invalid data.

    With ``slices`` given, the cross-checks (slices exist, limits within the slice's,
    ports, workers against tasks_max) run too.
    """
    errors = _Errors()
    if slices is None:
        result = _services(services, errors)
    else:
        _, result, errors = _check(slices, services)
    _raise(errors)
    return [_public(service) for service in result]


def procslice_errors(slices: Any, services: Any, base_dir: str | None = None) -> list[str]:
    """Every problem in the data, each "<variable path>: <problem>; <fix>".

    Besides the data it checks the controller's files the deploy ships: every podman
    ``image_archive`` exists (a relative path from ``base_dir``, by default the
    current directory: where ansible-playbook runs, the playbook's directory).
    """
    _, norm_services, errors = _check(slices, services)
    _check_image_archives(norm_services, errors, base_dir)
    return errors.messages


def _check_image_archives(
    services: list[dict[str, Any]], errors: _Errors, base_dir: str | None
) -> None:
    for svc in services:
        archive = svc.get("image_archive")
        if svc["state"] != "present" or svc["model"] != "podman" or not archive:
            continue
        full = os.path.join(base_dir or os.getcwd(), os.path.expanduser(str(archive)))
        if not os.path.isfile(full):
            errors.add(
                f"{svc['_path']}.image_archive",
                f"{_show(archive)} is not a file on the controller (looked for {full}); "
                f"save the image there first (podman save IMAGE | gzip > {archive}) "
                "or fix the path",
            )
