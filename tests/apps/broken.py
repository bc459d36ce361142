"""An app that cannot be imported: the supervisors must halt, not respawn forever."""

raise RuntimeError("this app is broken on purpose")
