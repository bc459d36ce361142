"""Start a server the way systemd starts a socket unit's service.

    python bench/activate.py --fd N -- COMMAND...         (the socket is fd N here)
    python bench/activate.py --listen HOST:PORT -- COMMAND...

A deployed aio or swoole service is socket-activated: its .socket unit
(templates/supervisor/etc/systemd/system/SERVICE.socket.j2) owns one listening
socket, without SO_REUSEPORT, with a backlog of 2048 and TCP_NODELAY, and systemd
passes it to the service's main process as fd 3 with ``LISTEN_FDS=1`` and
``LISTEN_PID`` set to that process (sd_listen_fds(3)).  The master cannot open a
socket per worker slot beside it, so every worker accepts on that one socket.

:func:`listening_socket` makes a socket like that unit's; :func:`command` is the
argv that runs COMMAND with it: this file moves the socket to fd 3, sets
``LISTEN_FDS``, ``LISTEN_PID`` (its own pid, which exec keeps) and
``LISTEN_FDNAMES``, then execs COMMAND, as systemd-socket-activate does.  bench/run.py
uses both for its socket-activated servers, so that they differ from the ``--listen``
ones in the listener path only.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

SD_LISTEN_FDS_START = 3
BACKLOG = 2048  # the .socket unit's Backlog=
FDNAME = "http"


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket as the .socket unit makes it (ReusePort=false, NoDelay=true).

    Inheritable, so that a child started with ``pass_fds`` keeps it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as systemd always does
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def command(fd: int, argv: list[str]) -> list[str]:
    """The argv that runs ``argv`` with the listening socket ``fd`` passed as systemd would.

    Start it with ``pass_fds=(fd,)``.
    """
    return [sys.executable, str(Path(__file__).resolve()), "--fd", str(fd), "--", *argv]


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    """Put the socket at fd 3, set the LISTEN_* variables, exec the command."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fd", type=int, help="the listening socket, inherited as this fd")
    source.add_argument("--listen", type=_address, help="HOST:PORT: make the socket here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    run = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not run:
        parser.error("no command to run (write it after --)")
    fd = args.fd if args.fd is not None else listening_socket(*args.listen).detach()
    if fd != SD_LISTEN_FDS_START:
        os.dup2(fd, SD_LISTEN_FDS_START)  # inheritable, as dup2 makes it
        os.close(fd)
    else:
        os.set_inheritable(fd, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid
    os.environ["LISTEN_FDNAMES"] = FDNAME
    os.execvp(run[0], run)


if __name__ == "__main__":
    sys.exit(main())
