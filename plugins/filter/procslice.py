"""procslice filters: validate and normalise the procslice data (slices and services).

The logic is the package ``procslice_controller`` (src/procslice_controller: the
standard library only; the table of keys it reads is the runtime's ``procslice.data``),
so it can be imported and unit-tested without Ansible;
``FilterModule`` only maps filter names onto its functions.

    procslice_size(value) -> int
        "512M", "1.5g", "64MiB", 1024 -> bytes (powers of 1024).
    procslice_normalize_slices(slices) -> list[dict]
        each slice with its unit name, systemd directives and parsed limits.
    procslice_normalize_services(services, slices=None) -> list[dict]
        each service with every default filled in, its directives and limits.
    procslice_errors(slices, services) -> list[str]
        every problem found, each message naming the variable path and the fix.
    procslice_layers(base, layers, kind) -> {"items": list[dict], "origins": dict}
        procslice_services (or _slices) and every procslice_services__* variable,
        merged by name in the order of the variables' names.
    procslice_errors_with_layers(messages, origins, kind) -> list[str]
        each message about a field a layer set names that layer.
    procslice_build_variants(services) -> list[dict]
        the services to build once each: one per distinct (name, package, model),
        each with its ``build_key``.
    procslice_build_pick(built, services) -> dict
        service name -> its wheelhouse, for the services one host runs.
    procslice_releases(services, built, plan, root, etc, keep) -> dict
        one host's releases to install at once: jobs, directories, new users.
    procslice_toml(service) -> str
        an aio or swoole service's procslice.toml, from the table of keys.

The normalise filters raise ``ProcsliceDataError`` (a ``ValueError``) listing every
problem when the data is bad; ``procslice_errors`` returns them instead, which is what
the preflight role asserts on.
"""

# ruff: noqa: E402 (the imports follow the line that makes src/ importable)
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# src/ sits beside plugins/ in a clone and in the installed collection alike.
_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from procslice_controller.build import (
    procslice_build_key,
    procslice_build_pick,
    procslice_build_variants,
    procslice_releases,
)
from procslice_controller.errors import (
    ProcsliceDataError,
    _show,  # noqa: F401 (the tests read it through this module)
)
from procslice_controller.layers import (
    procslice_errors_with_layers,
    procslice_layer_vars,
    procslice_layers,
)
from procslice_controller.normalize import (
    procslice_errors,
    procslice_normalize_services,
    procslice_normalize_slices,
)
from procslice_controller.settings_file import procslice_toml
from procslice_controller.sizes import procslice_size
from procslice_controller.vocabulary import (  # noqa: F401 (the tests read them through this module)
    AIO_DEFAULTS,
    AIO_KEYS,
    HEALTH_KEYS,
    INTERFACES,
    LIMIT_KEYS,
    LOG_LEVELS,
    METRICS_KEYS,
    MODELS,
    PACKAGE_KINDS,
    SERVICE_KEYS,
    SERVICE_LIMIT_KEYS,
    SERVICE_LIMITS_KEYS,
    SLICE_KEYS,
    STATES,
    SUPERVISOR_THREADS,
    SWOOLE_DEFAULTS,
    SWOOLE_KEYS,
    WORKER_CLASSES,
)

__all__ = [
    "FilterModule",
    "ProcsliceDataError",
    "procslice_build_key",
    "procslice_errors_with_layers",
    "procslice_layers",
    "procslice_layer_vars",
    "procslice_build_pick",
    "procslice_build_variants",
    "procslice_errors",
    "procslice_normalize_services",
    "procslice_normalize_slices",
    "procslice_size",
    "procslice_toml",
    "procslice_releases",
]


class FilterModule:
    """procslice filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "procslice_size": procslice_size,
            "procslice_normalize_slices": procslice_normalize_slices,
            "procslice_normalize_services": procslice_normalize_services,
            "procslice_errors": procslice_errors,
            "procslice_layers": procslice_layers,
            "procslice_layer_vars": procslice_layer_vars,
            "procslice_errors_with_layers": procslice_errors_with_layers,
            "procslice_build_variants": procslice_build_variants,
            "procslice_build_pick": procslice_build_pick,
            "procslice_toml": procslice_toml,
            "procslice_releases": procslice_releases,
        }
