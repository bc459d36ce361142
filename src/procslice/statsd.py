"""A small StatsD / DogStatsD client: lines batched in memory, sent over UDP at flush.

Nothing here blocks: the socket is non-blocking and connected once (an IP address,
no name lookup), :meth:`StatsdClient.flush` packs the lines gathered since the last
flush into datagrams of at most :data:`MAX_DATAGRAM` bytes and sends each with one
``send``; a datagram the kernel will not take now (a full buffer), or that fails (no
listener: ``ECONNREFUSED`` from an earlier ICMP port-unreachable), is dropped. StatsD
is lossy by design; the next flush carries the next figures.

The wire format (https://github.com/statsd/statsd/blob/master/docs/metric_types.md and
Datadog's DogStatsD datagram format)::

    <prefix>.<name>[.<label value>...]:<value>|<type>[|@<sample rate>]          (StatsD)
    <prefix>.<name>:<value>|<type>[|@<sample rate>]|#<tag>:<v>,<label>:<v>...    (DogStatsD)

with type ``c`` (a counter: the increase since the last flush), ``g`` (a gauge) or
``ms`` (one timing in milliseconds; with ``@rate`` it stands for 1/rate of them).
With tags (``tags``, e.g. ``"service:api"``) the labels become tags; without, their
values become the last parts of the name.

:class:`Reservoir` keeps a bounded, uniform sample of the timings of one flush
interval, so a busy worker sends at most :data:`MAX_TIMINGS` timing lines a flush
(with the sample rate that scales them back), whatever its request rate.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterable, Sequence

from procslice.sockets import parse_address

__all__ = ["FLUSH_INTERVAL", "MAX_DATAGRAM", "MAX_TIMINGS", "Reservoir", "StatsdClient"]

log = logging.getLogger("procslice.statsd")

#: Seconds between two flushes of the runtime's figures.
FLUSH_INTERVAL = 1.0
#: Bytes per datagram: fits a 1500-byte Ethernet frame with IP and UDP headers (the
#: size StatsD's and Datadog's own clients use for UDP).
MAX_DATAGRAM = 1432
#: Timing lines a worker sends per flush interval at most.
MAX_TIMINGS = 200

Labels = Sequence[tuple[str, str]]


class Reservoir:
    """At most ``size`` of the values added since the last :meth:`take`, chosen
    uniformly (Vitter's algorithm R), and how many were added."""

    __slots__ = ("seen", "size", "values")

    def __init__(self, size: int = MAX_TIMINGS) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0

    def add(self, value: float) -> None:
        """Offer one value."""
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = int(random.random() * self.seen)
        if slot < self.size:
            self.values[slot] = value

    def take(self) -> tuple[list[float], float]:
        """The sample and its rate (kept / added, 1.0 when all were kept); empties it."""
        values, seen = self.values, self.seen
        self.values, self.seen = [], 0
        return values, (len(values) / seen if seen else 1.0)


def _number(value: float) -> str:
    """12 -> "12", 0.25 -> "0.25", 1e-07 -> "0.0000001" (no exponent: StatsD parsers)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


class StatsdClient:
    """Lines for one StatsD server, sent in batches by :meth:`flush`."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        """``address`` is ``"IP:port"`` or ``"[IPv6]:port"``; ``prefix`` starts every
        name (a dot is added); ``tags`` (``"service:api,env:prod"``) turns DogStatsD on.
        Raises ValueError for a bad address, OSError if no socket can be made."""
        family, sockaddr = parse_address(address)
        if family == socket.AF_UNIX:
            raise ValueError(f"{address!r}: StatsD takes an IP address and a UDP port")
        self.address = address
        self.prefix = f"{prefix.strip('.')}." if prefix.strip(".") else ""
        self.tags = tags.strip(",")
        self.dogstatsd = bool(self.tags)
        self.lines: list[str] = []
        self.dropped = 0  # datagrams dropped since the client was made
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(sockaddr)  # an IP address: no lookup, nothing to wait for
        except OSError:
            self.sock.close()
            raise

    # ------------------------------------------------------------------ lines

    def _add(self, name: str, value: str, kind: str, labels: Labels, rate: float) -> None:
        sampled = f"|@{_number(rate)}" if rate < 1.0 else ""
        if self.dogstatsd:
            tags = ",".join([self.tags, *(f"{key}:{val}" for key, val in labels)])
            self.lines.append(f"{self.prefix}{name}:{value}|{kind}{sampled}|#{tags}")
        else:
            parts = "".join(f".{val}" for _, val in labels)
            self.lines.append(f"{self.prefix}{name}{parts}:{value}|{kind}{sampled}")

    def count(self, name: str, value: float, labels: Labels = ()) -> None:
        """A counter's increase since the last flush (nothing for 0)."""
        if value:
            self._add(name, _number(value), "c", labels, 1.0)

    def gauge(self, name: str, value: float, labels: Labels = ()) -> None:
        """A gauge's current value (never negative: StatsD reads "-3" as a change)."""
        self._add(name, _number(max(0.0, value)), "g", labels, 1.0)

    def timings(self, name: str, millis: Iterable[float], rate: float = 1.0) -> None:
        """Timings in milliseconds, each standing for 1/``rate`` of them."""
        for value in millis:
            self._add(name, _number(round(value, 3)), "ms", (), rate)

    # ------------------------------------------------------------------ sending

    def datagrams(self) -> list[bytes]:
        """The pending lines packed into datagrams (newline-separated); empties them."""
        lines, self.lines = self.lines, []
        packets: list[bytes] = []
        current = b""
        for line in lines:
            data = line.encode("ascii", "replace")
            if current and len(current) + 1 + len(data) > MAX_DATAGRAM:
                packets.append(current)
                current = b""
            current = current + b"\n" + data if current else data
        if current:
            packets.append(current)
        return packets

    def flush(self) -> int:
        """Send the pending lines; the number of datagrams sent (the rest were dropped)."""
        sent = 0
        for packet in self.datagrams():
            try:
                self.sock.send(packet)
            except OSError as exc:  # BlockingIOError (a full buffer), ECONNREFUSED, ...
                if not self.dropped:
                    log.warning("statsd %s: dropping figures (%s)", self.address, exc)
                self.dropped += 1
            else:
                sent += 1
        return sent

    def close(self) -> None:
        """Close the socket (pending lines are dropped)."""
        self.lines.clear()
        self.sock.close()
