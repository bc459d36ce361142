"""The controller's side of the procslice data: validation and normalisation of the
slices and services, the builds and releases to make. Never installed on a host.

The filter plugin (plugins/filter/procslice.py) maps its filters onto the functions of
the modules below; the preflight checks and the roles read the data through them.
Standard library only, so the controller imports it from the collection's src/ as it
is. The keys and the checks of single values are the runtime's ``procslice.data`` (the
table, shared with the runtime); this package is not in the runtime's wheel nor in the
release hash (roles/procslice_build/files/wheelhouse.py: RUNTIME_FILES), so changing it
rebuilds no release.

    settings_file  procslice.toml, written from the table
    vocabulary   the names the modules below use, most of them made from the table
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
