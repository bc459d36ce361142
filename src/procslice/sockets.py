"""Listening sockets: inherited from systemd (socket activation) or bound by hand.

Under socket activation systemd passes the sockets as fds 3.. with ``LISTEN_FDS``,
``LISTEN_PID`` (which must be this process) and optionally ``LISTEN_FDNAMES``; see
sd_listen_fds(3).  Otherwise the ``listen`` addresses are bound here:
``"host:port"``, ``"[::1]:port"`` or ``"unix:/path"``, with SO_REUSEADDR and a
backlog of 2048.  Every socket is returned non-blocking; the supervisor keeps them
for its whole life and its workers inherit them across fork, so a worker that
exits never closes the listening socket and connections wait in its backlog.

TCP addresses bound here get SO_REUSEPORT, so that the master can give every
worker slot a socket of its own on the same address (:func:`reuseport_twin`): the
kernel then spreads new connections evenly over the slots instead of letting the
first worker to wake take a whole burst.  Before binding, a probe bind without
SO_REUSEPORT makes sure nobody else already listens there (SO_REUSEPORT alone would
let a second server started by mistake silently share the port).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass

__all__ = [
    "BACKLOG",
    "SD_LISTEN_FDS_START",
    "Listener",
    "bind",
    "inherited",
    "listeners",
    "parse_address",
    "reuseport_twin",
]

BACKLOG = 2048
SD_LISTEN_FDS_START = 3

log = logging.getLogger("procslice.sockets")


@dataclass
class Listener:
    """One listening socket and how it was obtained (for logs)."""

    sock: socket.socket
    name: str  # the listen address, or the LISTEN_FDNAMES name under activation
    activated: bool
    shared: bool = True  # other worker slots accept on this very socket too

    @property
    def reuseport(self) -> bool:
        """Whether more sockets can join this one's SO_REUSEPORT group."""
        if not self.is_tcp:
            return False
        try:
            return bool(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        except OSError:
            return False

    @property
    def is_tcp(self) -> bool:
        """Whether accepted connections are TCP (TCP_NODELAY applies)."""
        return self.sock.family in (socket.AF_INET, socket.AF_INET6)


def parse_address(text: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """``"host:port"`` / ``"[v6]:port"`` / ``"unix:/path"`` -> (family, sockaddr).

    Raises ValueError with the reason for anything else.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"{text!r} has no path after unix:")
        return socket.AF_UNIX, path
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"{text!r} is not [ipv6]:port")
        family = socket.AF_INET6
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no port (expected host:port)")
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:port")
        family = socket.AF_INET
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} has a bad port {port!r}")
    return family, (host, int(port))


def _bind_one(text: str) -> socket.socket:
    family, address = parse_address(text)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            assert isinstance(address, str)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(address).st_mode):
                    os.unlink(address)  # a stale socket from an earlier run
        else:
            assert isinstance(address, tuple)
            address = _probe(family, address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _probe(family: socket.AddressFamily, address: tuple[str, int]) -> tuple[str, int]:
    """Bind ``address`` without SO_REUSEPORT (EADDRINUSE if anyone listens); the port."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
        return address[0], probe.getsockname()[1]  # port 0 resolved
    finally:
        probe.close()


def reuseport_twin(listener: Listener) -> Listener:
    """A new listening socket in ``listener``'s SO_REUSEPORT group (same address).

    Raises OSError when the kernel refuses (e.g. EADDRINUSE when the socket was
    created by another user, as systemd's are unless the service runs as root).
    """
    sock = socket.socket(listener.sock.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.sock.family == socket.AF_INET6:
            v6only = listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind(listener.sock.getsockname())
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return Listener(sock, listener.name, activated=listener.activated, shared=False)


def bind(addresses: list[str] | tuple[str, ...]) -> list[Listener]:
    """Bind and listen on every address; raises OSError naming the address on failure."""
    bound: list[Listener] = []
    try:
        for text in addresses:
            try:
                bound.append(Listener(_bind_one(text), text, activated=False))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {text}: {exc.strerror}") from exc
    except BaseException:
        for listener in bound:
            listener.sock.close()
        raise
    return bound


def inherited(unset_environment: bool = True) -> list[Listener] | None:
    """The sockets systemd passed to this process, or None when not socket-activated.

    Like sd_listen_fds(3) it checks ``LISTEN_PID`` against our pid and, by default,
    removes the variables so that children do not take the sockets for theirs.
    """
    fds_text = os.environ.get("LISTEN_FDS")
    pid_text = os.environ.get("LISTEN_PID")
    names_text = os.environ.get("LISTEN_FDNAMES")
    if unset_environment:
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
    if not fds_text or not pid_text:
        return None
    if not pid_text.isdigit() or int(pid_text) != os.getpid():
        log.warning("ignoring LISTEN_FDS: LISTEN_PID=%s is not this process", pid_text)
        return None
    if not fds_text.isdigit() or int(fds_text) < 1:
        log.warning("ignoring LISTEN_FDS=%r", fds_text)
        return None
    count = int(fds_text)
    names = names_text.split(":") if names_text else []
    result = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) else f"fd {fd}"
        result.append(Listener(sock, name, activated=True))
    return result


def listeners(addresses: list[str] | tuple[str, ...]) -> list[Listener]:
    """The inherited sockets if socket-activated, else the ``addresses`` bound here."""
    activated = inherited()
    if activated is not None:
        for listener in activated:
            log.info(
                "listening on %s (socket activation, %s)", _describe(listener.sock), listener.name
            )
        return activated
    bound = bind(addresses)
    for listener in bound:
        log.info("listening on %s", listener.name)
    return bound


def _describe(sock: socket.socket) -> str:
    try:
        name = sock.getsockname()
    except OSError:
        return f"fd {sock.fileno()}"
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(name, bytes):
        return "unix:@" + name[1:].decode(errors="replace")
    return f"unix:{name}"
