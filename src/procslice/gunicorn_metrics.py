"""Per-request Prometheus metrics of a gunicorn service: prometheus_client's multiprocess mode.

gunicorn's workers are separate processes, so the usual way applies: every worker
writes its figures into files of one directory (``PROMETHEUS_MULTIPROC_DIR``) and
whoever serves ``/metrics`` sums them (``prometheus_client.multiprocess``). The
rendered ``gunicorn.conf.py`` of a service with ``metrics_listen`` wires it::

    from procslice import gunicorn_metrics
    gunicorn_metrics.configure(directory=..., listen="127.0.0.1:9004", requests=True)
    on_starting = gunicorn_metrics.on_starting
    when_ready = gunicorn_metrics.when_ready
    post_fork = gunicorn_metrics.post_fork
    child_exit = gunicorn_metrics.child_exit
    pre_request = gunicorn_metrics.pre_request
    post_request = gunicorn_metrics.post_request

* :func:`configure` (the arbiter reads the config file) sets ``PROMETHEUS_MULTIPROC_DIR``
  before any metric exists, so the workers, forked later, write their files there (the
  app's own prometheus_client metrics too, and they are served with procslice's);
* :func:`on_starting` (the arbiter, once) creates the directory and empties it of an
  earlier run's files (under systemd it is the unit's RuntimeDirectory=, empty anyway);
* :func:`when_ready` serves ``http://<listen>/metrics`` from a thread of the arbiter:
  the sum of the files plus ``procslice_workers`` (gunicorn's own control socket is
  such a thread too). A listen address that cannot be bound stops gunicorn with exit
  code 3, as a procslice aio or swoole master does; :func:`post_fork` closes each new
  worker's copy of its socket;
* :func:`pre_request` / :func:`post_request` (sync and gthread workers) count each
  request into the files as it ends (:class:`Recorder`: six value updates, a few
  microseconds); the uvicorn worker (:mod:`procslice.gunicorn_worker`), whose requests
  are far shorter, counts in plain integers in its HTTP protocol as the aio and swoole
  workers do and writes them into its files once a second (:class:`FileTotals`; a
  worker killed by SIGKILL loses its last second);
* :func:`child_exit` (the arbiter, for every worker that exits: killed, crashed,
  recycled after max_requests, replaced by a reload) removes the worker's files: its
  live gauges go (``multiprocess.mark_process_dead``), and its counters and histograms
  are added into one ``<type>_retired.db`` file per type before their file is deleted,
  so the counters never go backwards and the directory holds a file per live worker
  instead of one per worker ever started.

The series have the names and labels of the aio and swoole runtimes'
(:mod:`procslice.metrics`): ``procslice_http_requests_total{code,method}``,
``procslice_http_request_duration_seconds`` (from ``pre_request`` to ``post_request``:
the app's call and the response written), ``procslice_http_request_bytes_total`` (body
bytes read: by the app, and by gunicorn discarding what the app left before the next
request of a keep-alive connection), ``procslice_http_response_bytes_total`` (body bytes
written; gunicorn's sendfile path does not count them), ``procslice_requests_in_flight``.
A request gunicorn refuses before the app sees it (a bad request line) is not counted; an
app that raises before starting its response counts as 5xx (gunicorn answers 500).
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from procslice.metrics import DURATION_BUCKETS, HTTP_CODES, HTTP_METHODS, RequestStats

__all__ = [
    "FileTotals",
    "Recorder",
    "Series",
    "Settings",
    "child_exit",
    "configure",
    "counting",
    "on_starting",
    "post_fork",
    "post_request",
    "pre_request",
    "recorder",
    "retire",
    "when_ready",
]

log = logging.getLogger("procslice.gunicorn_metrics")

BOOT_ERROR = 3  # gunicorn's Arbiter.WORKER_BOOT_ERROR, and the supervisors' code
#: File types whose values add up across processes: merged into <type>_retired.db.
SUMMED_TYPES = ("counter", "histogram", "summary")
_METHOD_ROWS = {method: i for i, method in enumerate(HTTP_METHODS[:-1])}


@dataclass
class Settings:
    """What the service's gunicorn.conf.py asked for."""

    directory: str = ""
    listen: str = ""
    requests: bool = True


def _prometheus(module: str) -> Any:
    """A module of prometheus_client, imported when first used (after :func:`configure`
    set the directory); typed Any, as its multiprocess helpers carry no annotations."""
    return importlib.import_module(f"prometheus_client.{module}")


REQUESTS = ("procslice_http_requests", "HTTP requests answered, by status class and method.")
DURATION = (
    "procslice_http_request_duration_seconds",
    "Time from the app called for a request to its response's last write.",
)
REQUEST_BYTES = ("procslice_http_request_bytes", "HTTP request body bytes received.")
RESPONSE_BYTES = ("procslice_http_response_bytes", "HTTP response body bytes sent.")
IN_FLIGHT = ("procslice_requests_in_flight", "Requests being served.")

settings = Settings()
# child_exit (the arbiter's main loop) and a scrape (the server thread) both touch the
# files: one at a time.
_files_lock = threading.Lock()
_pending: list[int] = []  # dead workers whose files are not merged yet
_server: Any = None
_recorder: Recorder | None = None  # this worker's, made at its first request


# prometheus_client asks os.getpid() on every update of a value, to notice a fork; a
# system call each time, six times a request. The pid is kept here instead, renewed in
# every forked child before anything else runs there (prometheus_client's
# process_identifier hook: distinct for processes running at once, as it requires).
_pid = os.getpid()


def _forked() -> None:
    global _pid, _recorder
    _pid = os.getpid()
    _recorder = None


os.register_at_fork(after_in_child=_forked)


def _process_id() -> int:
    return _pid


def configure(directory: str, listen: str = "", requests: bool = True) -> None:
    """Point prometheus_client at ``directory`` (multiprocess mode); remember where to
    serve (``listen``, "" for nowhere) and whether to count requests. Called by
    gunicorn.conf.py in the arbiter, before any worker exists (and again on a reload:
    the server keeps its first address until a restart)."""
    settings.directory = directory
    settings.listen = listen
    settings.requests = requests
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values = _prometheus("values")
    # prometheus_client picks its value class when first imported, maybe before the
    # variable was set: the multiprocess one, with the kept pid, from now on.
    if not getattr(values.ValueClass, "procslice", False):
        value_class = values.MultiProcessValue(process_identifier=_process_id)
        value_class.procslice = True
        values.ValueClass = value_class


# ---------------------------------------------------------------------------- arbiter


def on_starting(server: Any) -> None:
    """gunicorn hook: create the directory, remove an earlier run's files."""
    if not settings.directory:
        return
    os.makedirs(settings.directory, mode=0o750, exist_ok=True)
    for path in glob.glob(os.path.join(settings.directory, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class _Collector:
    """The files' sum (with dead workers' files merged first) and the worker count."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        collector = _prometheus("multiprocess").MultiProcessCollector(None, settings.directory)
        with _files_lock:
            _merge_pending()
            families = list(collector.collect())
        yield GaugeMetricFamily(
            "procslice_workers", "Serving workers.", value=len(self.server.WORKERS)
        )
        yield from families
        # A worker writes its in-flight gauge file with its first request: with none of
        # the live workers having served yet (all replaced), the series is 0, not gone.
        if settings.requests and not any(f.name == IN_FLIGHT[0] for f in families):
            yield GaugeMetricFamily(IN_FLIGHT[0], IN_FLIGHT[1], value=0)


def when_ready(server: Any) -> None:
    """gunicorn hook: serve the metrics on ``listen`` from a thread of the arbiter."""
    global _server
    if not settings.listen or _server is not None:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    from procslice.sockets import parse_address

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(server))
    _, sockaddr = parse_address(settings.listen)
    assert isinstance(sockaddr, tuple)
    host, port = sockaddr
    try:
        _server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        server.log.error("metrics_listen %s: %s", settings.listen, exc.strerror or exc)
        raise SystemExit(BOOT_ERROR) from None
    server.log.info("metrics on http://%s/metrics", settings.listen)


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook (in the new worker): close the inherited metrics socket."""
    if _server is not None:
        _server.socket.close()


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited; fold its files into the retired ones."""
    if not settings.directory:
        return
    _pending.append(worker.pid)
    # Never wait for a scrape here: a scrape merges what is pending before it reads.
    if _files_lock.acquire(blocking=False):
        try:
            _merge_pending()
        finally:
            _files_lock.release()


def _merge_pending() -> None:
    """Merge the files of every dead worker noted so far (the lock is held)."""
    while _pending:
        pid = _pending.pop(0)
        try:
            retire(settings.directory, pid)
        except OSError as exc:  # a full /run: keep serving, the files stay
            log.warning("cannot merge the metrics files of pid %d: %s", pid, exc)


def retire(directory: str, pid: int) -> None:
    """Remove a dead process's files from ``directory``: its live gauges go, its
    counters, histograms and summaries are added into ``<type>_retired.db`` first."""
    mmaped_dict = _prometheus("mmap_dict").MmapedDict
    _prometheus("multiprocess").mark_process_dead(pid, directory)
    for kind in SUMMED_TYPES:
        path = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(path):
            continue
        retired = mmaped_dict(os.path.join(directory, f"{kind}_retired.db"))
        try:
            for key, value, timestamp, _ in mmaped_dict.read_all_values_from_file(path):
                total, _ = retired.read_value(key)
                retired.write_value(key, total + value, timestamp)
        finally:
            retired.close()
        os.unlink(path)


# ---------------------------------------------------------------------------- workers


class Series:
    """The per-request series of one worker process, as prometheus_client's own
    metrics keep them: one value per sample in the process's files (made after the
    fork), with the keys and file names its Counter, Histogram and Gauge use, so
    ``MultiProcessCollector`` reads them as theirs. Values are made for the
    duration buckets at once, for a code/method pair at its first request."""

    def __init__(self) -> None:
        self.value_class = _prometheus("values").ValueClass
        go_string = _prometheus("utils").floatToGoString
        name, help_text = DURATION
        self.buckets = [
            self.value_class(
                "histogram", name, f"{name}_bucket", ("le",), (go_string(bound),), help_text
            )
            for bound in (*DURATION_BUCKETS, float("inf"))
        ]
        self.sum = self.value_class("histogram", name, f"{name}_sum", (), (), help_text)
        self.request_bytes = self._value("counter", REQUEST_BYTES)
        self.response_bytes = self._value("counter", RESPONSE_BYTES)
        self.in_flight = self._value("gauge", IN_FLIGHT, mode="livesum")
        self.requests: dict[int, Any] = {}  # RequestStats' index (method, code) -> value

    def _value(self, kind: str, series: tuple[str, str], mode: str = "") -> Any:
        name, help_text = series
        sample = f"{name}_total" if kind == "counter" else name
        return self.value_class(kind, name, sample, (), (), help_text, multiprocess_mode=mode)

    def request_value(self, index: int) -> Any:
        """The value of ``procslice_http_requests_total`` for RequestStats' ``index``."""
        value = self.requests.get(index)
        if value is None:
            name, help_text = REQUESTS
            method, code = divmod(index, len(HTTP_CODES))
            labels = (HTTP_CODES[code], HTTP_METHODS[method])
            value = self.requests[index] = self.value_class(
                "counter", name, f"{name}_total", ("code", "method"), labels, help_text
            )
        return value


class Recorder(Series):
    """Counts each request into the files as it happens (the sync and gthread hooks)."""

    def started(self) -> None:
        """A request starts."""
        self.in_flight.inc(1)

    def abandoned(self) -> None:
        """A started request ends without an answer to count (its connection is gone)."""
        self.in_flight.inc(-1)

    def finished(self, method: str, status: int, sent: int, seconds: float) -> None:
        """A started request was answered with ``status`` and ``sent`` body bytes."""
        self.in_flight.inc(-1)
        code = status // 100 - 1
        if not 0 <= code < len(HTTP_CODES):
            code = len(HTTP_CODES) - 1  # not a valid status: counted as a server error
        row = _METHOD_ROWS.get(method, len(HTTP_METHODS) - 1)
        self.request_value(row * len(HTTP_CODES) + code).inc(1)
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)].inc(1)
        self.sum.inc(seconds)
        if sent:
            self.response_bytes.inc(sent)

    def received(self, count: int) -> None:
        """``count`` request body bytes were read."""
        if count:
            self.request_bytes.inc(count)


class FileTotals(Series):
    """A worker's :class:`procslice.metrics.RequestStats`, written into its files as a
    whole (the uvicorn worker, once a second): each write sets the values."""

    def write(self, stats: RequestStats, in_flight: int) -> None:
        """Set the files to ``stats`` and the requests now in flight."""
        for i, count in enumerate(stats.requests):
            if count:
                self.request_value(i).set(count)
        for value, count in zip(self.buckets, stats.buckets, strict=True):
            value.set(count)
        self.sum.set(stats.duration_sum)
        self.request_bytes.set(stats.request_bytes)
        self.response_bytes.set(stats.response_bytes)
        self.in_flight.set(in_flight)


_recorder_lock = threading.Lock()


def counting() -> bool:
    """Whether this service counts its requests into the files."""
    return bool(settings.directory and settings.requests)


def recorder() -> Recorder | None:
    """This worker's :class:`Recorder` (one per process: two would overwrite each
    other's values in the file), or None when requests are not counted."""
    global _recorder
    if not counting():
        return None
    current = _recorder  # (None again in a forked child)
    if current is not None:
        return current
    with _recorder_lock:  # gthread: the first requests of several threads at once
        if _recorder is None:
            _recorder = Recorder()
        return _recorder


class _CountingReader:
    """gunicorn's body reader (length, chunked or EOF), counting the bytes read."""

    __slots__ = ("reader", "recorder")

    def __init__(self, reader: Any, recorder: Recorder) -> None:
        self.reader = reader
        self.recorder = recorder

    def read(self, size: int) -> bytes:
        data: bytes = self.reader.read(size)
        self.recorder.received(len(data))
        return data


def pre_request(worker: Any, req: Any) -> None:
    """gunicorn hook (sync, gthread): a request's head is parsed; the app is next."""
    rec = recorder()
    if rec is None:
        return
    req.procslice_start = time.monotonic()
    body = getattr(req, "body", None)
    if body is not None and hasattr(body, "reader"):
        body.reader = _CountingReader(body.reader, rec)
    rec.started()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """gunicorn hook (sync, gthread): the request is over; count it."""
    rec = recorder()
    start = getattr(req, "procslice_start", None)
    if rec is None or start is None:
        return
    seconds = time.monotonic() - start
    if resp is None:  # gunicorn refused the request before the app saw it
        rec.abandoned()
        return
    if not resp.headers_sent:  # the app raised first: gunicorn answers 500
        rec.finished(req.method, 500, 0, seconds)
        return
    rec.finished(req.method, resp.status_code or 500, resp.sent, seconds)
