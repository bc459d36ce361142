"""sd_notify(3) for the supervisors: READY, RELOADING, STATUS, WATCHDOG, STOPPING.

Datagrams go to ``$NOTIFY_SOCKET`` (a filesystem path, or an abstract socket written
with a leading ``@``).  Every method is a no-op when the variable is unset, so the
supervisors run the same by hand and under ``Type=notify``.  The variable is kept in
the environment but workers never notify: only the master speaks for the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["Notifier", "monotonic_usec"]

log = logging.getLogger("procslice.sdnotify")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """A connection to the service manager's notification socket."""

    def __init__(self, address: str | None = None, watchdog_usec: str | None = None) -> None:
        """Use ``address``/``watchdog_usec``, by default $NOTIFY_SOCKET and $WATCHDOG_USEC."""
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET") or None
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        self.watchdog_interval = self._watchdog(watchdog_usec)

    @staticmethod
    def _watchdog(usec: str | None) -> float | None:
        if usec is None:
            usec = os.environ.get("WATCHDOG_USEC")
            pid = os.environ.get("WATCHDOG_PID")
            if pid and pid.isdigit() and int(pid) != os.getpid():
                return None
        if not usec or not usec.isdigit() or int(usec) == 0:
            return None
        return int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False (logged once per failure) if it failed."""
        if self.address is None:
            return False
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", lines[0] if lines else "", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with a STATUS= line when given)."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC=, as Type=notify-reload wants."""
        lines = ["RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}"]
        return self.send(*lines, *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """STATUS=<text>."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """WATCHDOG=1."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1."""
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        """Close the socket (a later send reopens it)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
