"""``python -m procslice.status status ...``: what /usr/local/bin/procslice runs on a host.

Only the status command (procslice.status.cli.main): the exporter and `procslice status`
do not load the aio and swoole supervisors (nor uvicorn) that ``python -m procslice``
would import for its other subcommands.
"""

from procslice.status.cli import main

raise SystemExit(main())
