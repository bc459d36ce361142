"""A real Prometheus on the controller scraping the scenario's fleet (scripts/prometheus_local.py):
every query of dashboards/procslice.json answers for every service it applies to, and the
request and 5xx figures Prometheus computes match what the load generator counted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from test_fleet import HOSTS, MODELS, PORTS, REPO, SCENARIO_VARS, http, playbook

sys.path.insert(0, str(REPO / "scripts"))
import prometheus_local  # noqa: E402

LOADGEN = REPO / "tests" / "molecule_support" / "loadgen.py"
SCRAPE = 1.0  # seconds: Prometheus' scrape (and evaluation) interval here
QUIET = 4.0  # seconds without load before it, to measure the background requests
LOAD_SECONDS = 8.0
# Per service and host: 2 keep-alive connections sending "/" at most 25 times a second
# each, and 1 sending a path that answers 500 (prometheus_local.FAILING_PATHS) 10 times.
OK_CONNECTIONS, OK_RATE, FAILING_RATE = 2, 25, 10
TOLERANCE = 0.10

# The metrics of the dashboard that do not apply to every model, and why. A query
# applies to the services whose model every metric it names applies to; the others are
# printed with the reason. Every other metric applies to every service of the scenario:
# the procslice_unit_* series to any unit (the scenario's web slice sets the CPU quota
# and MemoryHigh, and each service has a health URL), the per-request series
# (procslice_http_*), procslice_requests_in_flight and procslice_workers to every
# gunicorn, aio and swoole service with metrics_listen, which all of the scenario's set,
# and procslice_http_requests_total to the podman service too (the demo image counts
# its requests under that name, and the scenario sets its metrics_listen).
SCOPE: dict[str, tuple[frozenset[str], str]] = {
    "procslice_worker_restarts_total": (
        frozenset({"aio", "swoole"}),
        "workers recycled by reason is the aio/swoole master's count; gunicorn's arbiter "
        "exports none (its restarts are procslice_unit_restarts_total)",
    ),
    "procslice_worker_rss_bytes": (
        frozenset({"aio", "swoole"}),
        "RSS per worker comes from the aio/swoole workers' heartbeats to their master",
    ),
    "procslice_loop_lag_seconds": (
        frozenset({"aio", "swoole"}),
        "loop lag is measured by the aio/swoole workers' event loops; gunicorn's workers "
        "report none",
    ),
    "procslice_requests_total": (
        frozenset({"aio", "swoole"}),
        "the aio/swoole master's total of answered requests; gunicorn serves the "
        "per-request procslice_http_requests_total only",
    ),
    "procslice_requests_in_flight": (
        frozenset({"gunicorn", "aio", "swoole"}),
        "the runtimes count the requests in flight; the demo image (podman) counts only "
        "the requests it answered",
    ),
    "procslice_http_request_duration_seconds_bucket": (
        frozenset({"gunicorn", "aio", "swoole"}),
        "the runtimes time every request; the demo image (podman) keeps no latency histogram",
    ),
}


def scenario_apps() -> dict[str, str]:
    """Service -> its example app (hello_wsgi, hello_asgi), from the scenario's data: the
    services with a path that answers 500 (the demo image of the podman service has
    none: its HELLO_FAIL fails every path, health checks included)."""
    data = yaml.safe_load((SCENARIO_VARS / "group_vars" / "procslice.yml").read_text())
    return {
        s["name"]: s["package"]["source"].rpartition("/")[2]
        for s in data["procslice_services"]
        if "package" in s
    }


def last_scrapes(prometheus: prometheus_local.Client) -> dict[str, float]:
    """Host -> the time of its exporter's latest scrape (its samples' timestamp)."""
    result = prometheus.query("max by (host) (timestamp(procslice_unit_up))")
    return {sample["metric"]["host"]: prometheus_local.value(sample) for sample in result}


def counted(
    prometheus: prometheus_local.Client, since: dict[str, float], until: dict[str, float]
) -> dict[tuple[str, str, str], float]:
    """(host, service, code) -> increase() of procslice_http_requests_total from one
    scrape of the host to another: the range selector spans exactly those samples, so
    increase() has nothing to extrapolate (1 ms of it, to include the first)."""
    found: dict[tuple[str, str, str], float] = {}
    for host in HOSTS:
        window = round((until[host] - since[host]) * 1000) + 1
        expr = (
            f'sum by (service, code) (increase(procslice_http_requests_total{{host="{host}"}}'
            f"[{window}ms] @ {until[host]:.3f}))"
        )
        for sample in prometheus.query(expr):
            labels = sample["metric"]
            found[(host, labels["service"], labels["code"])] = prometheus_local.value(sample)
    return found


def send_load() -> dict[str, dict[str, Any]]:
    """The load generator's tallies, targets named <host>/<service>/ok and .../5xx (the
    services of scenario_apps)."""
    apps = scenario_apps()
    ok, failing = [], []
    for host, base in HOSTS.items():
        for name, offset in PORTS.items():
            ok.append(f"{host}/{name}/ok=127.0.0.1:{base + offset}/")
            if name in apps:
                path = prometheus_local.FAILING_PATHS[apps[name]]
                failing.append(f"{host}/{name}/5xx=127.0.0.1:{base + offset}{path}")
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                str(LOADGEN),
                *("--seconds", str(LOAD_SECONDS)),
                *("--connections", str(connections), "--rate", str(rate)),
                *targets,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for connections, rate, targets in (
            (OK_CONNECTIONS, OK_RATE, ok),
            (1, FAILING_RATE, failing),
        )
    ]
    tallies: dict[str, dict[str, Any]] = {}
    for run in runs:
        out, _ = run.communicate(timeout=LOAD_SECONDS + 60)
        assert run.returncode == 0, out
        tallies.update(json.loads(out))
    return tallies


@dataclass
class Measured:
    prometheus: prometheus_local.Client
    tallies: dict[str, dict[str, Any]]
    quiet: dict[tuple[str, str, str], float]  # the requests in the quiet stretch
    quiet_seconds: dict[str, float]
    load: dict[tuple[str, str, str], float]  # from the scrape before the load to after it
    load_seconds: dict[str, float]
    at: float  # the time of the last scrape, for the dashboard's queries


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prometheus")
    interval = f"{SCRAPE:g}s"
    targets = prometheus_local.render_targets(directory, interval, run=playbook)
    assert sorted(t["labels"]["host"] for t in targets) == sorted(HOSTS)
    config = prometheus_local.write_config(directory, interval)
    # Every series exists before the load (a 5xx counter appearing inside the window would
    # lose its first value to increase()): a few requests answered 500 first.
    apps = scenario_apps()
    for base in HOSTS.values():
        for name, offset in PORTS.items():
            for _ in range(2 if name in apps else 0):
                with pytest.raises(urllib.error.HTTPError, match="500"):
                    http(base + offset, prometheus_local.FAILING_PATHS[apps[name]])
    with prometheus_local.running(config, directory / "data") as prometheus:
        prometheus.wait_targets_up(len(HOSTS), timeout=60)
        prometheus.wait_scrapes(2, SCRAPE)
        quiet = last_scrapes(prometheus)
        time.sleep(QUIET)
        before = last_scrapes(prometheus)
        tallies = send_load()
        # Until the counters have it all: the runtimes add their workers' counts once a
        # second, the exporter collects at most once a second; the 5xx counters (no
        # background) stop moving.
        sent_5xx = {
            tuple(name.split("/")[:2]): tally["reasons"].get("status 500", 0)
            for name, tally in tallies.items()
            if name.endswith("/5xx")
        }
        deadline = time.monotonic() + 30
        previous: dict[tuple[str, str, str], int] = {}
        while True:
            prometheus.wait_scrapes(1, SCRAPE)
            after = last_scrapes(prometheus)
            load = counted(prometheus, before, after)
            # (rounded: the 1 ms that increase() extrapolates is another fraction each time)
            fives = {k: round(v) for k, v in load.items() if k[2] == "5xx"}
            done = all(fives.get((h, s, "5xx"), 0) >= n for (h, s), n in sent_5xx.items())
            if (done and fives == previous) or time.monotonic() > deadline:
                break
            previous = fives
        yield Measured(
            prometheus=prometheus,
            tallies=tallies,
            quiet=counted(prometheus, quiet, before),
            quiet_seconds={h: before[h] - quiet[h] for h in HOSTS},
            load=load,
            load_seconds={h: after[h] - before[h] for h in HOSTS},
            at=max(after.values()),
        )


def test_every_dashboard_query_answers_for_every_service_it_applies_to(measured):
    missing = []
    for query in prometheus_local.dashboard_queries():
        names = set(re.findall(r"\b(procslice_[a-z_]+)\b", query.expr))
        assert names, query
        models = set(MODELS.values())
        reasons = []
        for name in sorted(names & set(SCOPE)):
            models &= SCOPE[name][0]
            reasons.append(f"{name}: {SCOPE[name][1]}")
        wanted = sorted(s for s, model in MODELS.items() if model in models)
        if 'code="5xx"' in query.expr:
            # Series of 5xx answers exist where some were answered: the load's, to the
            # services with a path that answers 500 (scenario_apps).
            apps = scenario_apps()
            if set(wanted) - set(apps):
                reasons.append(
                    'code="5xx": no 5xx answers from a service without a path that answers '
                    "500 (the demo image's HELLO_FAIL fails every path, its health checks too)"
                )
            wanted = [s for s in wanted if s in apps]
        result = measured.prometheus.query(query.expr, at=measured.at)
        found = {(r["metric"].get("host"), r["metric"].get("service")) for r in result}
        per_host = any(host for host, _ in found)
        for service in wanted:
            for host in HOSTS if per_host else [None]:
                if (host, service) not in found:
                    missing.append(
                        f"{query.panel} / {query.legend}: no series for {service}"
                        + (f" on {host}" if host else "")
                        + f"\n    {query.expr}"
                    )
        others = sorted(set(MODELS) - set(wanted))
        print(
            f"{query.panel} / {query.legend}: {len(result)} series, for {', '.join(wanted)}"
            + (f"; not for {', '.join(others)} ({'; '.join(reasons)})" if others else "")
        )
    assert not missing, "\n".join(missing)


def test_request_and_5xx_rates_match_what_the_load_generator_counted(measured):
    rows, wrong = [], []
    for host in HOSTS:
        seconds = measured.load_seconds[host]
        for name in PORTS:
            ok = measured.tallies[f"{host}/{name}/ok"]
            # Whatever the load generator could not count as answered makes the comparison
            # meaningless (a timed-out request may have been answered and counted).
            assert ok["failed"] == 0 and ok["ok"] > 0, (host, name, ok)
            sent_by_code = [("2xx", ok["ok"])]
            if f"{host}/{name}/5xx" in measured.tallies:
                failing = measured.tallies[f"{host}/{name}/5xx"]
                assert failing["ok"] == 0, (host, name, failing)
                assert failing["reasons"] == {"status 500": failing["failed"]}, (
                    host,
                    name,
                    failing,
                )
                sent_by_code.append(("5xx", failing["failed"]))
            for code, sent in sent_by_code:
                # The health checks (haproxy's, the exporter's) answered 2xx meanwhile, at
                # the rate Prometheus counted in the quiet stretch before the load.
                background = (
                    measured.quiet.get((host, name, code), 0.0)
                    / measured.quiet_seconds[host]
                    * seconds
                )
                expected = sent + background
                got = measured.load.get((host, name, code), 0.0)
                off = (got - expected) / expected
                rows.append(
                    f"  {host} {name} {code}: sent {sent} (+{background:.0f} background) "
                    f"= {expected / seconds:.1f}/s, Prometheus {got:.0f} = {got / seconds:.1f}/s "
                    f"over {seconds:.1f}s ({off:+.1%})"
                )
                if abs(off) > TOLERANCE:
                    wrong.append(rows[-1])
    print("procslice_http_requests_total, increase() over the load, against the load generator:")
    print("\n".join(rows))
    assert not wrong, "off by more than 10%:\n" + "\n".join(wrong)
