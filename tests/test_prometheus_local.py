"""scripts/prometheus_local.py: the configuration it writes, the dashboard's queries, and
a real prometheus child process scraping a fake exporter on loopback."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import prometheus_local  # noqa: E402

EXPOSITION = (
    b"# HELP procslice_unit_up 1 when the unit is active.\n"
    b"# TYPE procslice_unit_up gauge\n"
    b'procslice_unit_up{service="api",slice="web",model="aio",release=""} 1\n'
)


def test_dashboard_queries_match_every_host_and_service():
    dashboard = json.loads(prometheus_local.DASHBOARD.read_text())
    queries = prometheus_local.dashboard_queries()
    assert len(queries) == sum(len(p["targets"]) for p in dashboard["panels"])
    for query in queries:
        assert "$" not in query.expr, query
        assert query.panel and query.legend
    assert any('host=~".*",service=~".*"' in q.expr for q in queries)


def test_substitute_knows_both_grafana_spellings_and_leaves_others():
    values = {"host": "web1", "service": "api"}
    assert (
        prometheus_local.substitute('x{host=~"$host",service=~"${service}",a="$other"}', values)
        == 'x{host=~"web1",service=~"api",a="$other"}'
    )


def write_targets(directory: Path, addresses: dict[str, str]) -> Path:
    """procslice.json and prometheus-scrape.yml as playbooks/metrics.yml writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "procslice.json").write_text(
        json.dumps(
            [
                {"targets": [address], "labels": {"host": host, "env": "test"}}
                for host, address in addresses.items()
            ]
        )
    )
    (directory / "prometheus-scrape.yml").write_text(
        "- job_name: procslice\n  scrape_interval: 1s\n  file_sd_configs:\n"
        f"    - files:\n        - {directory}/procslice.json\n"
    )
    return prometheus_local.write_config(directory, "1s")


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian's prometheus)")
def test_the_config_passes_promtool(tmp_path):
    config = write_targets(tmp_path, {"web1": "127.0.0.1:9100"})
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "scrape_timeout: 1s" in config.read_text()


def test_a_missing_prometheus_says_what_to_install(monkeypatch):
    monkeypatch.setattr(prometheus_local, "PROMETHEUS", "/nonexistent/prometheus")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(prometheus_local.PrometheusError, match="apt-get install prometheus"):
        prometheus_local.binary()


@pytest.fixture
def exporter() -> Iterator[str]:
    """A fake procslice exporter on loopback: its address."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(EXPOSITION)))
            self.end_headers()
            self.wfile.write(EXPOSITION)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(
    not shutil.which("prometheus") and not Path(prometheus_local.PROMETHEUS).exists(),
    reason="prometheus (Debian's package)",
)
def test_a_prometheus_child_scrapes_queries_and_names_a_target_that_is_down(tmp_path, exporter):
    closed = f"127.0.0.1:{prometheus_local.free_port()}"
    config = write_targets(tmp_path, {"web1": exporter, "web2": closed})
    with prometheus_local.running(config, tmp_path / "data") as prometheus:
        deadline = time.monotonic() + 20
        while len(prometheus.targets()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(prometheus_local.PrometheusError) as error:
            prometheus.wait_targets_up(2, timeout=2)
        message = str(error.value)
        assert f"web2 (http://{closed}/metrics): down, last error: " in message
        assert "connection refused" in message
        assert "web1" not in message
        prometheus.wait_scrapes(2, 1.0)
        (sample,) = prometheus.query('procslice_unit_up{host="web1"}')
        assert sample["metric"]["service"] == "api" and prometheus_local.value(sample) == 1
        (down,) = prometheus.query('up{host="web2"}')
        assert prometheus_local.value(down) == 0
        now = float(sample["value"][0])
        (series,) = prometheus.query_range('procslice_unit_up{host="web1"}', now - 2, now, 1)
        assert [float(v) for _, v in series["values"]][-1] == 1
        with pytest.raises(prometheus_local.PrometheusError, match="bad_data"):
            prometheus.query("rate(procslice_unit_up)")
        process = prometheus.process
    assert process is not None and process.returncode is not None


def test_by_service_combines_the_hosts_of_a_service_and_drops_nan():
    series = [
        {"metric": {"service": "api", "code": "2xx", "host": "a"}, "values": [[1, "2"], [3, "4"]]},
        {"metric": {"service": "api", "code": "2xx", "host": "b"}, "values": [[1, "1"]]},
        {"metric": {"service": "api", "code": "5xx", "host": "a"}, "values": [[1, "7"]]},
        {"metric": {"service": "web", "code": "2xx", "host": "a"}, "values": [[1, "NaN"]]},
    ]
    assert prometheus_local.by_service(series, sum) == {"api": ([1.0, 3.0], [10.0, 4.0])}
    assert prometheus_local.by_service(series, max, code="2xx") == {"api": ([1.0, 3.0], [2.0, 4.0])}
