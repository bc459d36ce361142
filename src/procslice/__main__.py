"""``python -m procslice``: the same as the ``procslice`` command."""

from procslice.cli import main

raise SystemExit(main())
