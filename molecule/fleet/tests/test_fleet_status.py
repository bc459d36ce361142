"""The operator's view of the scenario's fleet: playbooks/status.yml, the exporter on
every host, and the Prometheus scrape configuration reaching it over the network."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

from test_fleet import HOSTS, MODELS, PORTS, REPO, http, playbook

# The scenario's data: workers (auto for hello-wsgi: 3 under CPUQuota=100%); the podman
# service's are its image's processes.
WORKERS = {"hello-wsgi": 3, "hello-asgi": 2, "hello-aio": 2, "hello-swoole": 2}


def test_status_playbook_prints_one_table_and_json_for_the_fleet(tmp_path):
    out = tmp_path / "fleet.json"
    run = playbook("playbooks/status.yml", "-e", f"status_json={out}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert re.search(r"HOST\s+SERVICE\s+MODEL\s+RELEASE\s+STATE\s+WORKERS\s+CPU/QUOTA", run.stdout)
    documents = json.loads(out.read_text())
    assert sorted(d["host"] for d in documents) == sorted(HOSTS)
    for document in documents:
        services = {s["service"]: s for s in document["services"]}
        assert set(WORKERS) <= set(services), document["host"]
        for name, workers in WORKERS.items():
            row = services[name]
            current = subprocess.run(
                ["podman", "exec", document["host"], "readlink", f"/srv/procslice/{name}/current"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert (row["model"], row["state"], row["workers"]) == (
                MODELS[name],
                "active",
                workers,
            ), row
            assert row["health"]["state"] == "ok", row
            assert row["release"] == current.split("/")[-1], row
            assert row["tasks"]["max"] == 64 and row["memory"]["max_bytes"] > 0, row
        # The podman service: the demo image is its release, the container's processes
        # its workers (the demo app is one process).
        row = services["hello-podman"]
        assert (row["model"], row["state"], row["release"], row["workers"]) == (
            "podman",
            "active",
            "localhost/procslice-demo:1",
            1,
        ), row
        assert row["health"]["state"] == "ok", row
        # The table has a row per service of this host.
        for name in MODELS:
            row = rf"^\s*{document['host']}\s+{name}\s+{MODELS[name]}\s"
            assert re.search(row, run.stdout, re.M), name


def test_metrics_playbook_targets_reach_every_exporter_with_the_dashboards_metrics(tmp_path):
    # Requests of every model on every host, for the per-request series below.
    for base in HOSTS.values():
        for offset in PORTS.values():
            for _ in range(3):
                http(base + offset, "/")
    run = playbook("playbooks/metrics.yml", "-e", f"metrics_dir={tmp_path}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    targets = json.loads((tmp_path / "procslice.json").read_text())
    assert sorted(t["labels"]["host"] for t in targets) == sorted(HOSTS)
    dashboard = json.loads((REPO / "dashboards" / "procslice.json").read_text())
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(procslice_[a-z_]+)\b", target["expr"])
    }
    for target in targets:
        # Scraped the way Prometheus would: over the network, at the file_sd address.
        (address,) = target["targets"]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        served = {m.group(1) for m in re.finditer(r"^([a-z_]+)[{ ]", text, re.M)}
        assert wanted <= served, (target["labels"]["host"], sorted(wanted - served))
        for name in MODELS:
            # (prometheus_client writes labels sorted, and values as floats)
            unit_up = rf'^procslice_unit_up\{{(?=[^}}]*service="{name}")[^}}]*\}} 1\.0$'
            assert re.search(unit_up, text, re.M), name
        # The runtimes' own metrics, fetched on the host's loopback by the exporter.
        assert re.search(r'^procslice_workers\{service="hello-swoole"\} 2\.0$', text, re.M)
        assert re.search(r'^procslice_workers\{service="hello-aio"\} 2\.0$', text, re.M)
        # gunicorn's, from its arbiter (prometheus_client's multiprocess files)
        for name in ("hello-wsgi", "hello-asgi"):
            workers = rf'^procslice_workers\{{service="{name}"\}} {WORKERS[name]}\.0$'
            assert re.search(workers, text, re.M), (name, text[-3000:])
        # The per-request series of every model, with the same names and labels (the
        # podman service's from its image's own /metrics, passed on by the exporter).
        for name in MODELS:
            line = re.search(
                rf'^procslice_http_requests_total\{{(?=[^}}]*service="{name}")'
                rf'(?=[^}}]*code="2xx")(?=[^}}]*method="GET")[^}}]*\}} ([0-9.e+]+)$',
                text,
                re.M,
            )
            assert line and float(line.group(1)) >= 3, (name, target["labels"]["host"])
