"""The vocabulary the controller and the runtime share: the standard library only.

    keys         the table of every key: type, default, models, check, help, compose
                 spelling; the runtime's procslice.config reads it, and the controller's
                 package procslice_controller (src/procslice_controller) makes its
                 checks, defaults and procslice.toml from it
    checks       the checks of single values, sizes' one grammar

Only these two modules are in the runtime's wheel with the rest of procslice: the
controller-only code lives in procslice_controller, outside the wheel and outside the
release hash, so a change there rebuilds no release on any host.
"""
