"""The procslice data: validation and normalisation of the slices and services.

The controller's filter plugin (plugins/filter/procslice.py) maps its filters onto the
functions below; the preflight checks and the roles read the data through them. Standard
library only, so the controller imports it from the collection's src/ as it is.

    vocabulary   names, models, keys and their defaults
    errors       ProcsliceDataError, the message collector, the wording helpers
    sizes        sizes, quotas and the other scalar parsers
    addresses    listen (host:port, unix:PATH) and podman's published ports
    resources    a slice's limits and a service's `limits` -> directives
    slices       procslice_slices, and the checks every entry gets (path, name, state)
    services     procslice_services, one service at a time
    gunicorn, supervisor, podman, health
                 each model's settings, metrics and StatsD, the health check
    crosscheck   the checks across slices and services
    normalize    the normalise filters and procslice_errors
    layers       the procslice_services__* / procslice_slices__* layers
    build        the builds: one per distinct (name, package, model)
"""

from __future__ import annotations

from procslice.data.build import (
    procslice_build_key,
    procslice_build_pick,
    procslice_build_variants,
)
from procslice.data.errors import ProcsliceDataError
from procslice.data.layers import (
    procslice_errors_with_layers,
    procslice_layer_vars,
    procslice_layers,
)
from procslice.data.normalize import (
    procslice_errors,
    procslice_normalize_services,
    procslice_normalize_slices,
)
from procslice.data.sizes import procslice_size

__all__ = [
    "ProcsliceDataError",
    "procslice_build_key",
    "procslice_build_pick",
    "procslice_build_variants",
    "procslice_errors",
    "procslice_errors_with_layers",
    "procslice_layer_vars",
    "procslice_layers",
    "procslice_normalize_services",
    "procslice_normalize_slices",
    "procslice_size",
]
