"""The Prometheus exposition of ``procslice status --serve``: a prometheus_client
collector of every unit's figures (procslice_unit_*) and of the runtimes' own metrics,
served over HTTP."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from procslice.status.collection import (
    RUNTIME_ADDRESSES,
    RUNTIME_TIMEOUT,
    ServiceStatus,
    _fetch_metrics,
    _runtime_address,
)

_METRICS: tuple[tuple[str, str, str, Callable[[ServiceStatus], float | int | None]], ...] = (
    (
        "cpu_seconds_total",
        "counter",
        "CPU time used by the unit's cgroup.",
        lambda s: s.cpu_seconds,
    ),
    (
        "cpu_quota_cores",
        "gauge",
        "CPU quota in CPUs: the tightest of the unit's and its slices' CPUQuota.",
        lambda s: s.cpu_quota_percent / 100 if s.cpu_quota_percent is not None else None,
    ),
    (
        "cpu_throttled_periods_total",
        "counter",
        "CFS periods in which the cgroup holding the CPU quota (the unit's or its slice's) "
        "was throttled.",
        lambda s: s.cpu_throttled_periods,
    ),
    (
        "cpu_throttled_seconds_total",
        "counter",
        "Time the cgroup holding the CPU quota (the unit's or its slice's) spent throttled.",
        lambda s: s.cpu_throttled_seconds,
    ),
    (
        "memory_bytes",
        "gauge",
        "Memory charged to the unit (MemoryCurrent).",
        lambda s: s.memory_bytes,
    ),
    (
        "memory_max_bytes",
        "gauge",
        "The tightest MemoryMax of the unit and its slices.",
        lambda s: s.memory_max_bytes,
    ),
    (
        "memory_high_bytes",
        "gauge",
        "The tightest MemoryHigh of the unit and its slices.",
        lambda s: s.memory_high_bytes,
    ),
    ("tasks", "gauge", "Tasks in the unit (TasksCurrent).", lambda s: s.tasks),
    (
        "tasks_max",
        "gauge",
        "The tightest TasksMax of the unit and its slices.",
        lambda s: s.tasks_max,
    ),
    (
        "restarts_total",
        "counter",
        "Automatic restarts of the unit (NRestarts).",
        lambda s: s.restarts,
    ),
    (
        "oom_kills_total",
        "counter",
        "OOM kills in the unit's cgroup since it was created.",
        lambda s: s.oom_kills,
    ),
    (
        "io_read_bytes_total",
        "counter",
        "Bytes the unit read from block devices (v2 io.stat; v1 blkio throttle counters).",
        lambda s: s.io_read_bytes,
    ),
    (
        "io_write_bytes_total",
        "counter",
        "Bytes the unit wrote to block devices (v1: its direct writes only; buffered "
        "writes are written back outside its cgroup).",
        lambda s: s.io_write_bytes,
    ),
    ("up", "gauge", "1 when the unit is active.", lambda s: int(s.state == "active")),
    (
        "health",
        "gauge",
        "1 when the health URL answers 200, 0 when not; absent without one.",
        lambda s: {"ok": 1, "failing": 0}.get(s.health),
    ),
    (
        "workers",
        "gauge",
        "Worker processes (children of the main process; podman: the container's processes).",
        lambda s: s.workers,
    ),
)


def _slice_label(slice_unit: str) -> str:
    if slice_unit.startswith("procslice-") and slice_unit.endswith(".slice"):
        return slice_unit[len("procslice-") : -len(".slice")]
    return "" if slice_unit == "procslice.slice" else slice_unit


# Every procslice_unit_* sample's labels, in this order.
UNIT_LABELS = ("service", "slice", "model", "release")


def unit_families(statuses: Sequence[ServiceStatus]) -> list[Metric]:
    """The families ``procslice_unit_*`` of every service (labels :data:`UNIT_LABELS`);
    each family is declared (HELP, TYPE) even when no service has a value for it."""
    families: list[Metric] = []
    for name, kind, help_text, value_of in _METRICS:
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(f"procslice_unit_{name}", help_text, labels=UNIT_LABELS)
        for status in statuses:
            value = value_of(status)
            if value is None:
                continue
            labels = [status.service, _slice_label(status.slice), status.model]
            family.add_metric([*labels, status.release or ""], float(value))
        families.append(family)
    return families


def merged_families(texts: Mapping[str, str]) -> list[Metric]:
    """Several services' Prometheus texts as one set of families: every sample gains a
    ``service`` label (its first) and each family is declared once, its samples from
    every service together, as the text format requires. A text prometheus_client
    cannot parse is left out (its service's procslice_unit_* still say how it is)."""
    families: dict[str, Metric] = {}
    for service, text in sorted(texts.items()):
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            continue
        for found in parsed:
            family = families.setdefault(
                found.name, Metric(found.name, found.documentation, found.type, found.unit)
            )
            for sample in found.samples:
                labels = {"service": service, **sample.labels}
                labels["service"] = service
                family.samples.append(sample._replace(labels=labels))
    return list(families.values())


class _Families:
    """A collector of fixed families (prometheus_client's registry renders them)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition(families: Sequence[Metric]) -> str:
    """The text format (0.0.4) of ``families``, written by prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    text: str = generate_latest(registry).decode()
    return text


def prometheus_text(statuses: Sequence[ServiceStatus]) -> str:
    """The Prometheus text exposition (format 0.0.4) of every service: metrics
    ``procslice_unit_*`` with labels service, slice, model, release."""
    return exposition(unit_families(statuses))


def merge_expositions(texts: Mapping[str, str]) -> str:
    """Several services' Prometheus texts as one (:func:`merged_families`)."""
    return exposition(merged_families(texts)) if texts else ""


def runtime_texts(
    statuses: Sequence[ServiceStatus],
    etc: str = "/etc/procslice",
    timeout: float = RUNTIME_TIMEOUT,
    addresses: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Service name -> the text of its metrics, for every gunicorn, aio or swoole service
    that serves them (``metrics_listen``, often loopback only) and every podman service
    whose metrics address the exporter's unit names, fetched now."""
    texts: dict[str, str] = {}
    known = RUNTIME_ADDRESSES if addresses is None else addresses
    for status in statuses:
        address = _runtime_address(status, etc, known)
        text = _fetch_metrics(address, timeout) if address else None
        # (none: procslice_unit_up and health tell that the service is in trouble)
        if text is not None:
            texts[status.service] = text
    return texts


def runtime_metrics(
    statuses: Sequence[ServiceStatus],
    etc: str = "/etc/procslice",
    timeout: float = RUNTIME_TIMEOUT,
    addresses: Mapping[str, str] | None = None,
) -> str:
    """The runtimes' metrics fetched now and merged: one scrape of the exporter carries
    workers, restarts by reason, RSS per worker and loop lag of every service."""
    return merge_expositions(runtime_texts(statuses, etc, timeout, addresses))


class StatusCollector:
    """A prometheus_client collector of the exporter: procslice_unit_* of the services
    ``collect_now()`` returns and their runtimes' own metrics, collected at most once
    per ``min_interval`` seconds however many scrapes arrive."""

    def __init__(
        self, collect_now: Callable[[], list[ServiceStatus]], min_interval: float = 1.0
    ) -> None:
        self.collect_now = collect_now
        self.min_interval = min_interval
        self.lock = threading.Lock()
        self.when = 0.0
        self.families: list[Metric] | None = None

    def collect(self) -> Iterator[Metric]:
        """The families of the last collection, collected again when it is too old."""
        with self.lock:
            now = time.monotonic()
            if self.families is None or now - self.when >= self.min_interval:
                statuses = self.collect_now()
                self.families = [
                    *unit_families(statuses),
                    *merged_families(runtime_texts(statuses)),
                ]
                self.when = time.monotonic()
            return iter(self.families)


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "procslice-exporter"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            """Serve /metrics."""
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            """Headers of /metrics."""
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    data = generate_latest(registry)
                    code, ctype = 200, CONTENT_TYPE_PLAIN_0_0_4
                except Exception as exc:  # a scrape must answer, not kill the server
                    data, code, ctype = f"collect failed: {exc}\n".encode(), 500, "text/plain"
            elif path == "/":
                data, code, ctype = b"procslice exporter: see /metrics\n", 200, "text/plain"
            else:
                data, code, ctype = b"see /metrics\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: a scrape every few seconds is not worth a journal line."""

    return Handler


def parse_listen(address: str) -> tuple[socket.AddressFamily, str, int]:
    """``host:port`` or ``[v6]:port`` into (family, host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port (e.g. 127.0.0.1:9100 or [::]:9100)")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host or "0.0.0.0", int(port)


def make_server(
    address: str, collect_now: Callable[[], list[ServiceStatus]], min_interval: float = 1.0
) -> ThreadingHTTPServer:
    """An HTTP server for ``address`` answering GET /metrics with the figures of
    ``collect_now()``, collected at most once per ``min_interval`` seconds."""
    family, host, port = parse_listen(address)

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(collect_now, min_interval))
    return Server((host, port), _handler(registry))


def serve(address: str, collect_now: Callable[[], list[ServiceStatus]]) -> None:
    """Serve the Prometheus text on ``address`` until interrupted or terminated."""
    with make_server(address, collect_now) as server:
        signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
        print(f"procslice exporter: serving http://{address}/metrics", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
