"""The fleet's Prometheus side: playbooks/metrics.yml's file_sd output, and the Grafana
dashboard's queries against the metrics the exporter and the runtime really serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from procslice import status
from procslice.metrics import HttpTotals, Snapshot, WorkerSample, registry_for

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "dashboards" / "procslice.json"


def served_metric_names() -> set[str]:
    """Every sample name the exporter serves: its own, and the runtime's it merges in."""
    exporter = status.prometheus_text(
        [
            status.ServiceStatus(
                service="s",
                unit="procslice-s.service",
                model="swoole",
                state="active",
                **{
                    f: 1
                    for f in (
                        "cpu_seconds",
                        "cpu_quota_percent",
                        "cpu_throttled_periods",
                        "cpu_throttled_seconds",
                        "memory_bytes",
                        "memory_max_bytes",
                        "memory_high_bytes",
                        "tasks",
                        "tasks_max",
                        "restarts",
                        "oom_kills",
                        "workers",
                    )
                },
                health="ok",
            )
        ]
    )
    http = HttpTotals()
    http.requests[0] = 1  # one request answered, so the labelled counter has a sample
    snap = Snapshot(
        workers=1,
        samples=[WorkerSample(slot=0, pid=1, rss=1, lag=0.0, inflight=0)],
        http=http,
    )
    runtime = generate_latest(registry_for(lambda: snap)).decode()
    text = exporter + status.merge_expositions({"s": runtime})
    return {m.group(1) for m in re.finditer(r"^([a-z_]+)[{ ]", text, re.M)}


def test_every_dashboard_query_uses_a_served_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    served = served_metric_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for e in exprs for name in re.findall(r"\b(procslice_[a-z_]+)\b", e)}
    assert used, "no query names a procslice metric"
    assert used <= served, f"not served: {sorted(used - served)}"
    # What the issue asks the dashboard to show.
    for needed in (
        "procslice_unit_workers",
        "procslice_worker_restarts_total",
        "procslice_worker_rss_bytes",
        "procslice_unit_cpu_throttled_seconds_total",
        "procslice_unit_memory_max_bytes",
        "procslice_unit_memory_high_bytes",
    ):
        assert needed in used


def test_dashboard_panels_have_unique_ids_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names[0] == "datasource" and {"host", "service"} <= set(names)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"


def test_metrics_playbook_writes_one_target_per_host(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    procslice:\n      hosts:\n"
        "        web1: {ansible_host: 192.0.2.10}\n"
        "        web2: {ansible_host: 127.0.0.1, procslice_address: 10.88.0.7,"
        " procslice_service_exporter_listen: '0.0.0.0:9400'}\n"
        "        web3: {ansible_host: 192.0.2.12,"
        " procslice_service_exporter_listen: '127.0.0.1:9100'}\n"
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/metrics.yml",
            "-e",
            f"metrics_dir={tmp_path / 'out'}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    targets = json.loads((tmp_path / "out" / "procslice.json").read_text())
    assert targets == [
        {"targets": ["192.0.2.10:9100"], "labels": {"host": "web1", "env": "production"}},
        {"targets": ["10.88.0.7:9400"], "labels": {"host": "web2", "env": "production"}},
        {"targets": ["192.0.2.12:9100"], "labels": {"host": "web3", "env": "production"}},
    ]
    assert "web3: the exporter listens on 127.0.0.1:9100, loopback only" in run.stdout
    scrape = (tmp_path / "out" / "prometheus-scrape.yml").read_text()
    assert "job_name: procslice" in scrape and str(tmp_path / "out" / "procslice.json") in scrape
