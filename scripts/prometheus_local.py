#!/usr/bin/env python3
"""A Prometheus server on the controller, scraping the fleet's procslice exporters.

    python scripts/prometheus_local.py start   # the local fleet's, in the background
    python scripts/prometheus_local.py stop
    python scripts/prometheus_local.py show [--png PATH] [--seconds S]

``start`` renders the fleet's scrape targets with playbooks/metrics.yml (file_sd, into
.cache/prometheus), writes prometheus.yml around that scrape job with a 2 s scrape
interval, and starts Debian's /usr/bin/prometheus (the ``prometheus`` package, which
``make deps`` installs) detached from the shell: data in .cache/prometheus/data, pid in
.cache/prometheus/prometheus.pid, log in .cache/prometheus/prometheus.log, listening on
127.0.0.1 at the last start's port if it is free, else a free one (the URL is kept in
.cache/prometheus/url). Starting it again re-renders
the targets (Prometheus re-reads file_sd files by itself, so a recreated fleet's new
addresses are picked up) and keeps the running server. ``stop`` ends it: SIGTERM, then
SIGKILL after 10 s. ``make deploy`` starts it, ``make fleet-down`` stops it.

``show`` (``make show``) starts it if needed, sends a burst of requests to every
gunicorn, aio and swoole service of every host (mostly answered 200, a tenth of them
answered 500 on purpose: see :data:`FAILING_PATHS`), waits for a few scrapes, then draws
the dashboard's main panels from Prometheus' query_range API into a PNG (default
.cache/show/fleet.png): requests/s and 5xx/s per service, p99 latency, memory against
MemoryMax and CPU throttling.

As a module (the fleet scenario's tests): :func:`render_targets` and
:func:`write_config`, then ``with running(config, storage) as prometheus:`` (a child
process on a free port, stopped at the end) for a :class:`Client` that waits for the
targets and runs instant and range queries; :func:`dashboard_queries` lists the
queries of dashboards/procslice.json with its Grafana variables substituted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "dashboards" / "procslice.json"
LOADGEN = REPO / "tests" / "molecule_support" / "loadgen.py"
PROMETHEUS = "/usr/bin/prometheus"
# The local fleet's server (start, stop, show): metrics.yml's default metrics_dir.
STATE = REPO / ".cache" / "prometheus"
SHOW_PNG = REPO / ".cache" / "show" / "fleet.png"
DEMO_SCRAPE_INTERVAL = "2s"

# A path of each example app that answers 500: the app raises (ValueError: sleep length
# must be non-negative) before starting its response, so every model answers 500 and
# counts it as 5xx (gunicorn's sync worker, uvicorn's protocol under gunicorn, aio and
# swoole). The apps have no path that answers 5xx on purpose; these are the ones whose
# argument reaches time.sleep unchecked (hello_asgi's /slow awaits asyncio.sleep, which
# accepts a negative delay, hence /block there).
FAILING_PATHS = {"hello_wsgi": "/slow?ms=-1", "hello_asgi": "/block?ms=-1"}
RUNTIME_MODELS = ("gunicorn", "aio", "swoole")


class PrometheusError(RuntimeError):
    """Prometheus could not be started, reached or queried; the message says why."""


# ------------------------------------------------------------------ configuration


def ansible_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the controller venv, on the default inventory (ansible.cfg)."""
    venv = REPO / ".venv" / "bin" / "ansible-playbook"
    command = str(venv) if venv.exists() else "ansible-playbook"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def render_targets(
    directory: Path,
    scrape_interval: str = "1s",
    run: Callable[..., subprocess.CompletedProcess[str]] = ansible_playbook,
) -> list[dict[str, Any]]:
    """playbooks/metrics.yml into ``directory`` (procslice.json, prometheus-scrape.yml);
    the file_sd targets. ``run`` runs ansible-playbook with its arguments (default: on
    the inventory of ansible.cfg; the fleet tests pass their own, on the scenario's)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = run(
        "playbooks/metrics.yml",
        "-e",
        f"metrics_dir={directory}",
        "-e",
        f"metrics_scrape_interval={scrape_interval}",
    )
    if result.returncode != 0:
        raise PrometheusError(
            f"playbooks/metrics.yml failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr)[-3000:]
        )
    targets: list[dict[str, Any]] = json.loads((directory / "procslice.json").read_text())
    if not targets:
        raise PrometheusError("playbooks/metrics.yml wrote no target: no host in group procslice")
    return targets


def prometheus_config(jobs: list[dict[str, Any]], scrape_interval: str) -> dict[str, Any]:
    """prometheus.yml around metrics.yml's scrape jobs. The timeout is the interval:
    Prometheus refuses a timeout longer than the interval (its default is 10 s)."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": jobs,
    }


def write_config(directory: Path, scrape_interval: str = "1s") -> Path:
    """``directory``/prometheus.yml with the job of ``directory``/prometheus-scrape.yml."""
    jobs = yaml.safe_load((directory / "prometheus-scrape.yml").read_text())
    path = directory / "prometheus.yml"
    path.write_text(
        "# Written by scripts/prometheus_local.py: the scrape job of playbooks/metrics.yml.\n"
        + yaml.safe_dump(prometheus_config(jobs, scrape_interval), sort_keys=False)
    )
    return path


@dataclass(frozen=True)
class Query:
    """One query of the dashboard: its panel, its legend and the PromQL."""

    panel: str
    legend: str
    expr: str


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}`` replaced by ``values[name]``."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_queries(
    path: Path = DASHBOARD, values: Mapping[str, str] | None = None
) -> list[Query]:
    """Every query of the dashboard, its variables ($host, $service) matching all."""
    chosen = {"host": ".*", "service": ".*", **(values or {})}
    dashboard = json.loads(path.read_text())
    return [
        Query(panel["title"], target.get("legendFormat", ""), substitute(target["expr"], chosen))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


# --------------------------------------------------------------------- the server


def binary() -> str:
    """The prometheus executable: /usr/bin/prometheus, else one on PATH."""
    if os.access(PROMETHEUS, os.X_OK):
        return PROMETHEUS
    found = shutil.which("prometheus")
    if found:
        return found
    raise PrometheusError(
        f"prometheus: {PROMETHEUS} not found, nor prometheus on PATH; install Debian's "
        "prometheus package (make deps, or apt-get install prometheus)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(config: Path, storage: Path, listen: str) -> list[str]:
    """The prometheus command line."""
    return [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={listen}",
        "--storage.tsdb.retention.time=1d",
    ]


def tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(["", f"{path} ends with:", *text])


def describe_targets(targets: Sequence[Mapping[str, Any]]) -> str:
    """One line per target: its host label, address, health and last error."""
    lines = []
    for target in targets:
        labels = target.get("labels", {})
        name = labels.get("host") or labels.get("instance") or target.get("scrapeUrl", "?")
        error = target.get("lastError") or "none"
        lines.append(
            f"  {name} ({target.get('scrapeUrl', '?')}): {target.get('health', '?')}, "
            f"last error: {error}"
        )
    return "\n".join(lines)


@dataclass
class Client:
    """Prometheus' HTTP API at ``url`` (http://127.0.0.1:PORT)."""

    url: str
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def api(self, path: str, **params: str) -> Any:
        """GET an /api/v1 path; its ``data``, or PrometheusError with Prometheus' error."""
        address = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(address, timeout=20) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            # A bad query is a 400 or 422 with a JSON body saying why.
            try:
                body = json.loads(error.read())
            except ValueError:
                raise PrometheusError(f"{address}: HTTP {error.code}") from error
        except (OSError, ValueError) as error:
            raise PrometheusError(f"{address}: {error}{tail(self.log)}") from error
        if body.get("status") != "success":
            what = params.get("query", path)
            raise PrometheusError(f"{what}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def ready(self) -> bool:
        """Whether /-/ready answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        """Until /-/ready answers 200; PrometheusError if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self.process.returncode} before it was ready"
                    + tail(self.log)
                )
            if time.monotonic() > deadline:
                raise PrometheusError(f"{self.url}/-/ready: not ready after {timeout:.0f}s")
            time.sleep(0.2)

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (/api/v1/targets): labels, health, lastError, lastScrape."""
        data = self.api("/api/v1/targets", state="active")
        return list(data["activeTargets"])

    def wait_targets_up(self, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
        """Until ``expected`` targets are known and every one is up; PrometheusError naming
        each target that is not, with its last error, when time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if len(targets) >= expected and all(t["health"] == "up" for t in targets):
                return targets
            if time.monotonic() > deadline:
                down = [t for t in targets if t["health"] != "up"]
                known = (
                    f"{len(targets)} of {expected} targets discovered (file_sd: "
                    "Prometheus hands them to its scrapers 5 s after it starts)"
                    if len(targets) < expected
                    else f"{len(down)} of {expected} targets not up"
                )
                raise PrometheusError(f"{known} after {timeout:.0f}s:\n" + describe_targets(down))
            time.sleep(0.5)

    def wait_scrapes(self, count: int, interval: float) -> None:
        """Until every target was scraped ``count`` more times."""

        def scraped() -> dict[str, str]:
            return {t["scrapeUrl"]: t["lastScrape"] for t in self.targets()}

        seen = [scraped()]
        deadline = time.monotonic() + (count + 3) * interval * 3
        while len(seen) <= count:
            time.sleep(interval / 4)
            now = scraped()
            if all(now[url] != seen[-1].get(url) for url in now):
                seen.append(now)
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"targets not scraped {count} times:\n" + describe_targets(self.targets())
                )

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at ``at``, a Unix time, else now): the vector's samples
        (``metric``: labels, ``value``: [time, "value"]); a scalar as one sample."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query: the matrix's series (``metric``, ``values``: [[time, "v"], ...])."""
        data = self.api(
            "/api/v1/query_range",
            query=expr,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=f"{step:g}",
        )
        return list(data["result"])


def value(sample: Mapping[str, Any]) -> float:
    """The number of an instant query's sample."""
    return float(sample["value"][1])


def start(
    config: Path, storage: Path, listen: str, log: Path, detach: bool = False
) -> subprocess.Popen[bytes]:
    """Start prometheus, output to ``log``; detached: in a session of its own, so it
    outlives the calling process and its terminal."""
    argv = command(config, storage, listen)
    storage.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, wait ``timeout`` seconds, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextlib.contextmanager
def running(
    config: Path, storage: Path, log: Path | None = None, ready_timeout: float = 30
) -> Iterator[Client]:
    """A prometheus child process on a free port of 127.0.0.1, ready; stopped at the end."""
    log = log or storage.parent / "prometheus.log"
    listen = f"127.0.0.1:{free_port()}"
    process = start(config, storage, listen, log)
    client = Client(f"http://{listen}", log=log, process=process)
    try:
        client.wait_ready(ready_timeout)
        yield client
    finally:
        stop(process)


# ------------------------------------------------ the local fleet's server (make)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reparented and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _running_pid(state: Path) -> int | None:
    """The pid of the local fleet's prometheus, if it runs (the pid file's process,
    started with this state directory's config: a reused pid is not taken for it)."""
    try:
        pid = int((state / "prometheus.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    wanted = f"--config.file={state / 'prometheus.yml'}".encode()
    return pid if wanted in cmdline and _pid_alive(pid) else None


def _previous_port(url_file: Path) -> int | None:
    """The port of the last start, if nothing listens on it now (a stable URL)."""
    try:
        port = int(url_file.read_text().strip().rpartition(":")[2])
        with socket.socket() as sock:
            # As prometheus binds it: connections of the last one in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    except (OSError, ValueError):
        return None
    return port


def start_background(state: Path = STATE, scrape_interval: str = DEMO_SCRAPE_INTERVAL) -> Client:
    """The local fleet's prometheus: targets rendered, started unless it runs, ready."""
    targets = render_targets(state, scrape_interval)
    write_config(state, scrape_interval)
    log = state / "prometheus.log"
    pid = _running_pid(state)
    url_file = state / "url"
    if pid is not None and url_file.exists():
        client = Client(url_file.read_text().strip(), log=log)
        client.wait_ready()
        # A changed scrape interval (a new prometheus.yml) needs a reload; file_sd not.
        os.kill(pid, signal.SIGHUP)
        print(f"prometheus: running (pid {pid}) at {client.url}, {len(targets)} target(s)")
        return client
    listen = f"127.0.0.1:{_previous_port(url_file) or free_port()}"
    process = start(state / "prometheus.yml", state / "data", listen, log, detach=True)
    client = Client(f"http://{listen}", log=log, process=process)
    client.wait_ready()
    (state / "prometheus.pid").write_text(f"{process.pid}\n")
    url_file.write_text(client.url + "\n")
    print(
        f"prometheus: started (pid {process.pid}) at {client.url}, scraping {len(targets)} "
        f"host(s) every {scrape_interval}; data in {state / 'data'}, log {log}"
    )
    return client


def stop_background(state: Path = STATE, timeout: float = 10) -> None:
    """Stop the local fleet's prometheus if it runs: SIGTERM, then SIGKILL."""
    pid = _running_pid(state)
    if pid is None:
        print("prometheus: not running")
        (state / "prometheus.pid").unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        print(f"prometheus: pid {pid} did not stop in {timeout:.0f}s; killed")
    else:
        print(f"prometheus: stopped (pid {pid})")
    (state / "prometheus.pid").unlink(missing_ok=True)


# ------------------------------------------------------------- make show's chart


def fleet_services() -> list[tuple[str, int, str, str]]:
    """(host, published HTTP port, service, app) of every gunicorn, aio or swoole
    service with metrics_listen on every host of the default inventory (the local
    fleet: playbooks/fleet.yml publishes a host's port 8000+N on its base + N)."""
    venv = REPO / ".venv" / "bin" / "ansible-inventory"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    listing = subprocess.run(
        [str(venv) if venv.exists() else "ansible-inventory", "--list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    inventory = json.loads(listing.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    found = []
    for host in inventory.get("procslice", {}).get("hosts", []):
        variables = hostvars.get(host, {})
        base = variables.get("procslice_fleet_http_base")
        if base is None:
            continue
        for service in variables.get("procslice_services", []):
            if service.get("model") not in RUNTIME_MODELS or not service.get("metrics_listen"):
                continue
            port = int(str(service["listen"][0]).rpartition(":")[2])
            app = Path(str(service.get("package", {}).get("source", ""))).name
            found.append((host, int(base) + port - 8000, service["name"], app))
    return found


@dataclass(frozen=True)
class ShowPanel:
    """A panel of make show's chart: lines from a panel of the dashboard."""

    title: str
    panel: str  # the dashboard panel whose queries it draws
    lines: tuple[tuple[str, str], ...]  # (the end of a query's legend, line style)
    combine: Callable[[list[float]], float]  # a service's series of several hosts: sum, max
    unit: str
    code: str = ""  # only the series with this code label
    scale: float = 1.0


SHOW_PANELS = (
    ShowPanel(
        "Requests/s, all hosts",
        "HTTP requests per second by status class",
        (("{{code}}", "-"),),
        sum,
        "req/s",
    ),
    ShowPanel(
        "5xx responses/s, all hosts",
        "HTTP requests per second by status class",
        (("{{code}}", "-"),),
        sum,
        "req/s",
        code="5xx",
    ),
    ShowPanel("p99 latency, all hosts", "HTTP p99 latency", (("p99", "-"),), max, "s"),
    ShowPanel(
        "Memory (solid) against MemoryMax (dashed), the highest host",
        "Memory against MemoryMax and MemoryHigh",
        (("used", "-"), ("MemoryMax", "--")),
        max,
        "MiB",
        scale=1 / 2**20,
    ),
    ShowPanel(
        "CPU throttled (time the quota's cgroup was held back), the highest host",
        "CPU throttling",
        (("throttled s/s", "-"),),
        max,
        "s/s",
    ),
)
# The dashboard's rate windows (1m, 5m) are shortened to this: the local fleet's
# Prometheus scrapes every 2 s and the burst lasts seconds.
SHOW_WINDOW = "10s"


def by_service(
    series: Sequence[Mapping[str, Any]], combine: Callable[[list[float]], float], code: str = ""
) -> dict[str, tuple[list[float], list[float]]]:
    """A range query's series combined per service: (times, values); ``code``: only the
    series with that code label. NaN points (a quantile of no request) are left out."""
    points: dict[str, dict[float, list[float]]] = {}
    for one in series:
        labels = one["metric"]
        if code and labels.get("code") != code:
            continue
        for at, text in one["values"]:
            number = float(text)
            if number == number:
                service = points.setdefault(labels.get("service", "?"), {})
                service.setdefault(float(at), []).append(number)
    return {
        service: (sorted(by_time), [combine(by_time[t]) for t in sorted(by_time)])
        for service, by_time in sorted(points.items())
    }


def draw(
    client: Client, path: Path, start_at: float, end_at: float, burst: tuple[float, float]
) -> Path:
    """SHOW_PANELS over [start_at, end_at] into ``path``, the burst shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(2.0, (end_at - start_at) / 300)
    queries = dashboard_queries()
    fig, axes = plt.subplots(
        len(SHOW_PANELS), 1, figsize=(10, 2.3 * len(SHOW_PANELS) + 0.6), sharex=True
    )
    palette = plt.get_cmap("tab10")
    colours: dict[str, Any] = {}
    for ax, panel in zip(axes, SHOW_PANELS, strict=True):
        drawn = 0
        for ending, style in panel.lines:
            (query,) = [q for q in queries if q.panel == panel.panel and q.legend.endswith(ending)]
            expr = re.sub(r"\[(1m|5m)\]", f"[{SHOW_WINDOW}]", query.expr)
            series = client.query_range(expr, start_at, end_at, step)
            for service, (xs, ys) in by_service(series, panel.combine, panel.code).items():
                colour = colours.setdefault(service, palette(len(colours) % 10))
                ax.plot(
                    [x - start_at for x in xs],
                    [y * panel.scale for y in ys],
                    style,
                    color=colour,
                    linewidth=1.5 if style == "-" else 1.0,
                    label=service if style == "-" else None,
                )
                drawn += 1
        ax.axvspan(burst[0] - start_at, burst[1] - start_at, color="#cccccc", alpha=0.5, lw=0)
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.set_ylabel(panel.unit, fontsize=8)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the lines
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if drawn:
            ax.legend(fontsize=7, loc="upper left", ncol=5)
        else:
            ax.text(0.5, 0.5, "no series", transform=ax.transAxes, ha="center", color="#999999")
    axes[-1].set_xlim(0, end_at - start_at)
    axes[-1].set_xlabel("seconds (shaded: make show's burst of requests)", fontsize=8)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end_at))
    fig.suptitle(
        f"procslice local fleet, {stamp}: dashboards/procslice.json's queries "
        f"(rate windows {SHOW_WINDOW}), per service",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def show(path: Path = SHOW_PNG, seconds: float = 10, history: float = 120) -> Path:
    """A burst of requests to the local fleet, then the chart from ``history`` seconds
    before it to the scrapes after it into ``path``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise PrometheusError(
            "matplotlib is not installed: make show installs requirements/bench.txt"
        ) from error
    client = start_background()
    interval = float(DEMO_SCRAPE_INTERVAL.rstrip("s"))
    targets = client.wait_targets_up(len(json.loads((STATE / "procslice.json").read_text())))
    services = fleet_services()
    if not services:
        raise PrometheusError("no gunicorn, aio or swoole service with metrics_listen to load")
    load = []
    for host, port, service, app in services:
        load.append(f"{host}/{service}=127.0.0.1:{port}/")
        if app in FAILING_PATHS:
            load.append(f"{host}/{service}/5xx=127.0.0.1:{port}{FAILING_PATHS[app]}")
    print(
        f"show: {seconds:.0f}s of requests to {len(services)} services on {len(targets)} hosts "
        f"(20/s each, and 2/s to a path that answers 500)"
    )
    began = time.time()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(LOADGEN),
                "--seconds",
                str(seconds),
                "--connections",
                "1",
                "--rate",
                rate,
                *chosen,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for rate, chosen in (
            ("20", [t for t in load if "/5xx=" not in t]),
            ("2", [t for t in load if "/5xx=" in t]),
        )
        if chosen
    ]
    tallies: dict[str, dict[str, Any]] = {}
    for process in processes:
        out, _ = process.communicate(timeout=seconds + 60)
        tallies.update(json.loads(out))
    ended = time.time()
    answered = sum(t["ok"] for t in tallies.values())
    failing = sum(t["reasons"].get("status 500", 0) for t in tallies.values())
    other = sum(t["failed"] for t in tallies.values()) - failing
    print(
        f"show: {answered} requests answered 200, {failing} answered 500 on purpose"
        + (f", {other} failed otherwise" if other else "")
    )
    client.wait_scrapes(3, interval)
    end_at = time.time()
    # From ``history`` before the burst, or from the first scrape if Prometheus is younger.
    scraped = client.query_range("count(procslice_unit_up)", began - history, end_at, interval)
    start_at = min((float(t) for one in scraped for t, _ in one["values"]), default=began)
    done = draw(client, path, start_at, end_at, (began, ended))
    print(f"show: the dashboard's main panels for the last {end_at - start_at:.0f}s: {done}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("start", help="start the local fleet's prometheus (idempotent)")
    sub.add_parser("stop", help="stop it")
    chart = sub.add_parser("show", help="a burst of requests, then the PNG")
    chart.add_argument("--png", type=Path, default=SHOW_PNG)
    chart.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            start_background()
        elif args.action == "stop":
            stop_background()
        else:
            show(args.png, args.seconds)
    except (PrometheusError, subprocess.CalledProcessError) as error:
        print(f"prometheus_local {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
