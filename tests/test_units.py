"""Rendering of templates/supervisor (aio and swoole): the config the runtime accepts, the units.

The templates are rendered with Jinja2 and the two Ansible filters they use, from
services normalised by the procslice filter (as the role does); the rendered
procslice.toml is then loaded by the runtime's own ``procslice.config.load``.
"""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path
from typing import Any

import jinja2
import pytest
from filter_plugin import ps

from procslice import status
from procslice.config import ConfigError, load

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,  # as Ansible's template module
)
ENV.filters["to_json"] = json.dumps
ENV.filters["comment"] = lambda text: f"#\n# {text}\n#"
ENV.filters["procslice.procslice.procslice_toml"] = ps.procslice_toml
VARS = {
    "ansible_managed": "Ansible managed",
    "procslice_service_root": "/srv/procslice",
    "procslice_service_etc": "/etc/procslice",
    "procslice_supervisor_watchdog_sec": 30,
    "procslice_supervisor_stop_margin": 10,
}
SLICES = [{"name": "web", "cpu_quota": "100%", "memory_max": "640M", "allowed_cpus": "0-1"}]


def normalised(model: str, **extra: Any) -> dict[str, Any]:
    data = {
        "name": "api",
        "model": model,
        "slice": "web",
        "package": {"source": "examples/hello_asgi"},
        "app": "hello_asgi:app",
        "listen": ["0.0.0.0:8002", "[::1]:8002"],
        **extra,
    }
    service: dict[str, Any] = ps.procslice_normalize_services([data], SLICES)[0]
    return service


def render(model: str, path: str, service: dict[str, Any]) -> str:
    """One template set for both supervisor models; the service names its model."""
    assert service["model"] == model
    return ENV.get_template(f"supervisor/{path}").render(service=service, **VARS)


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


TOML = "etc/procslice/SERVICE/procslice.toml.j2"
SERVICE = "etc/systemd/system/SERVICE.service.j2"
SOCKET = "etc/systemd/system/SERVICE.socket.j2"


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_rendered_config_with_defaults_is_accepted_by_the_runtime(
    tmp_path: Path, model: str
) -> None:
    path = tmp_path / "procslice.toml"
    path.write_text(render(model, TOML, normalised(model)))
    config = load(str(path), model=model)
    assert config.app == "hello_asgi:app"
    assert config.interface == "asgi"
    assert config.listen == ("0.0.0.0:8002", "[::1]:8002")
    assert config.workers is None  # auto: sized by the runtime from its cgroup
    assert config.metrics_listen == ""  # off unless set
    assert config.max_wait_time == 5.0
    assert config.keepalive_timeout == 5.0
    assert config.forwarded_allow_ips == ()  # X-Forwarded-* ignored unless proxies are named
    if model == "swoole":
        assert config.memory_limit is None  # auto: its share of the budget


def test_rendered_swoole_settings_reach_the_runtime(tmp_path: Path) -> None:
    service = normalised(
        "swoole",
        workers=3,
        max_request=10000,
        max_request_grace=500,
        memory_limit="200M",
        cpu_affinity=True,
        task_worker_num=2,
        task_max_request=100,
        max_wait_time=12.5,
        metrics_listen="127.0.0.1:9102",
        tcp_nodelay=False,
        max_concurrency=64,
        threads=4,
        loop_lag_warn_ms=0,
        log_level="debug",
        keepalive_timeout=75,
        forwarded_allow_ips=["10.0.0.5", "fd00::/8"],
    )
    path = tmp_path / "procslice.toml"
    path.write_text(render("swoole", TOML, service))
    config = load(str(path), model="swoole")
    assert (config.workers, config.max_request, config.max_request_grace) == (3, 10000, 500)
    assert config.memory_limit == 200 * 1024**2
    assert config.cpu_affinity is True
    assert (config.task_worker_num, config.task_max_request) == (2, 100)
    assert config.max_wait_time == 12.5
    assert config.metrics_listen == "127.0.0.1:9102"
    assert config.tcp_nodelay is False
    assert (config.max_concurrency, config.threads, config.loop_lag_warn_ms) == (64, 4, 0)
    assert config.log_level == "debug"
    assert config.keepalive_timeout == 75.0
    assert config.forwarded_allow_ips == ("10.0.0.5", "fd00::/8")


def test_swoole_memory_limit_zero_turns_recycling_off(tmp_path: Path) -> None:
    path = tmp_path / "procslice.toml"
    path.write_text(render("swoole", TOML, normalised("swoole", memory_limit=0)))
    assert load(str(path), model="swoole").memory_limit == 0


def test_aio_config_carries_no_swoole_key(tmp_path: Path) -> None:
    text = render("aio", TOML, normalised("aio"))
    for key in ps.SWOOLE_KEYS:
        assert f"\n{key} =" not in text
    # the runtime refuses them for aio: the rendered file must load as aio
    path = tmp_path / "procslice.toml"
    path.write_text(text + "task_worker_num = 1\n")
    with pytest.raises(ConfigError, match="task_worker_num: is a procslice swoole setting"):
        load(str(path), model="aio")


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_service_unit_is_a_notify_supervisor_that_does_not_restart_a_broken_app(
    model: str,
) -> None:
    service = normalised(model, max_wait_time=20)
    text = render(model, SERVICE, service)
    section = unit(text)["Service"]
    # The staged release becomes current in the unit's own start or reload, as root,
    # before the HUP: the code switches with the environment the process reads.
    switch = "+/usr/local/lib/procslice/activate --switch /srv/procslice/api"
    lines = text.splitlines()
    assert f"ExecStartPre={switch}" in lines
    reloads = [line for line in lines if line.startswith("ExecReload=")]
    assert reloads == [f"ExecReload={switch}", "ExecReload=/bin/kill -HUP $MAINPID"]
    assert section["Type"] == "notify"
    assert section["NotifyAccess"] == "main"
    assert section["WatchdogSec"] == "30s"
    assert section["ExecStart"] == (
        f"/srv/procslice/api/current/venv/bin/python -m procslice {model} "
        "--config /etc/procslice/api/procslice.toml"
    )
    assert section["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert section["KillMode"] == "mixed"
    assert section["Restart"] == "on-failure"
    assert section["RestartPreventExitStatus"] == "2 3 4"
    assert section["Slice"] == "procslice-web.slice"
    assert section["User"] == section["Group"] == "procslice-api"
    # above the master's own deadline: max_wait_time + 5 s, then SIGKILL
    assert int(section["TimeoutStopSec"]) == 20 + 5 + 10


@pytest.mark.parametrize("max_wait_time", [0, 2.5, 5])
def test_timeout_stop_sec_is_above_max_wait_time_plus_the_kill_margin(
    max_wait_time: float,
) -> None:
    section = unit(render("aio", SERVICE, normalised("aio", max_wait_time=max_wait_time)))
    assert int(section["Service"]["TimeoutStopSec"]) > max_wait_time + 5


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_socket_unit_listens_on_every_address_for_its_service(model: str) -> None:
    text = render(model, SOCKET, normalised(model, tcp_nodelay=False))
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("ListenStream=")] == [
        "ListenStream=0.0.0.0:8002",
        "ListenStream=[::1]:8002",
    ]
    assert "Service=procslice-api.service" in lines
    assert "NoDelay=false" in lines
    service = unit(render(model, SERVICE, normalised(model)))["Unit"]
    assert service["Requires"] == "procslice-api.socket"


def test_service_without_listen_needs_no_socket() -> None:
    service = normalised("aio", listen=[], interface="raw")
    text = render("aio", SERVICE, service)
    assert "Requires=" not in text
    assert "\nlisten =" not in render("aio", TOML, service)


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_every_rendered_file_starts_with_the_managed_comment(model: str) -> None:
    for path in (TOML, SERVICE, SOCKET):
        assert render(model, path, normalised(model)).startswith("#\n# Ansible managed\n#\n")


def test_service_io_limits_render_one_line_per_device_after_a_reset() -> None:
    service = normalised(
        "aio",
        limits={
            "memory_max": "256M",
            "io_read_bandwidth_max": {"/dev/vda": "50M", "/dev/vdb": "10M"},
            "io_write_bandwidth_max": [{"path": "/dev/vda", "rate": "20M"}],
        },
    )
    text = ENV.get_template("common/etc/systemd/system/SERVICE.service.d/50-limits.conf.j2").render(
        service=service, **VARS
    )
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    reads = [line for line in lines if line.startswith("IOReadBandwidthMax=")]
    assert reads == [
        "IOReadBandwidthMax=",
        f"IOReadBandwidthMax=/dev/vda {50 * 2**20}",
        f"IOReadBandwidthMax=/dev/vdb {10 * 2**20}",
    ]
    assert f"IOWriteBandwidthMax=/dev/vda {20 * 2**20}" in lines
    assert f"MemoryMax={256 * 2**20}" in lines
    assert not any("[" in line.split("=", 1)[1] for line in lines if "=" in line)


HARDENING = "common/etc/systemd/system/SERVICE.service.d/60-hardening.conf.j2"


def test_data_directories_render_as_systemd_directories_with_their_subdirectories() -> None:
    service = normalised("aio", directories={"state": ["uploads", "media/thumbs"], "cache": True})
    text = ENV.get_template(HARDENING).render(service=service, **VARS)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "StateDirectory=procslice/api" in lines
    assert "StateDirectoryMode=0750" in lines
    assert "CacheDirectory=procslice/api" in lines
    assert (
        "ExecStartPre=/bin/mkdir -p /var/lib/procslice/api/media/thumbs "
        "/var/lib/procslice/api/uploads"
    ) in lines
    assert not any(line.startswith("LogsDirectory") for line in lines)
    # A service without directories renders byte for byte as before: no restart.
    plain = ENV.get_template(HARDENING).render(service=normalised("aio"), **VARS)
    assert "Directory" not in plain and plain.rstrip().endswith("DevicePolicy=closed")


# ---- unix sockets in listen --------------------------------------------------------------

UNIX = "unix:/run/procslice/api/http.sock"


@pytest.mark.parametrize("model", ["aio", "swoole", "gunicorn"])
def test_unix_listen_becomes_a_socket_file_with_owner_mode_and_directory(model: str) -> None:
    service = normalised(model, listen=[UNIX, "127.0.0.1:8002"], socket_group="www-data")
    template = f"{'gunicorn' if model == 'gunicorn' else 'supervisor'}/{SOCKET}"
    text = ENV.get_template(template).render(service=service, **VARS)
    socket_unit = unit(text)["Socket"]
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("ListenStream=")] == [
        "ListenStream=/run/procslice/api/http.sock",
        "ListenStream=127.0.0.1:8002",
    ]
    assert socket_unit["SocketUser"] == "procslice-api"
    assert socket_unit["SocketGroup"] == "www-data"
    assert socket_unit["SocketMode"] == "0660"
    # systemd creates the parent directories of the socket itself
    assert socket_unit["DirectoryMode"] == "0755"


def test_tcp_only_socket_unit_sets_no_socket_owner() -> None:
    text = render("aio", SOCKET, normalised("aio"))
    assert "SocketUser=" not in text
    assert "SocketMode=" not in text


def test_rendered_runtime_config_keeps_the_unix_listen(tmp_path: Path) -> None:
    path = tmp_path / "procslice.toml"
    path.write_text(render("aio", TOML, normalised("aio", listen=[UNIX])))
    assert load(str(path), model="aio").listen == (UNIX,)


def test_rendered_gunicorn_config_binds_the_unix_socket(tmp_path: Path) -> None:
    gunicorn_config = pytest.importorskip("gunicorn.config")
    text, _ = gunicorn_files(listen=[UNIX, "127.0.0.1:8002"])
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    cfg = gunicorn_config.Config()
    cfg.set("bind", namespace["bind"])
    # gunicorn's own parse: a unix socket is a path, a TCP address a (host, port) pair
    assert cfg.address == ["/run/procslice/api/http.sock", ("127.0.0.1", 8002)]


def test_unix_only_socket_unit_sets_no_tcp_option() -> None:
    text = render("aio", SOCKET, normalised("aio", listen=[UNIX]))
    assert "NoDelay=" not in text
    assert "NoDelay=true" in render("aio", SOCKET, normalised("aio"))


# ---- metrics and StatsD ----------------------------------------------------------------


def test_rendered_metrics_and_statsd_settings_reach_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "procslice.toml"
    service = normalised(
        "aio", request_metrics=False, statsd="127.0.0.1:8125", metrics_listen="127.0.0.1:9102"
    )
    path.write_text(render("aio", TOML, service))
    config = load(str(path), model="aio")
    assert (config.metrics_listen, config.request_metrics) == ("127.0.0.1:9102", False)
    assert (config.statsd, config.statsd_prefix, config.dogstatsd_tags) == (
        "127.0.0.1:8125",
        "api",
        "",
    )
    path.write_text(
        render("swoole", TOML, normalised("swoole", statsd="[::1]:8125", statsd_tags=True))
    )
    config = load(str(path), model="swoole")
    assert (config.statsd, config.statsd_prefix, config.dogstatsd_tags) == (
        "[::1]:8125",
        "",
        "service:api",
    )
    path.write_text(render("aio", TOML, normalised("aio")))
    assert load(str(path), model="aio").statsd == ""  # off unless set


def gunicorn_files(**extra: Any) -> tuple[str, str]:
    """(gunicorn.conf.py, the .service unit) of a gunicorn service."""
    fields: dict[str, Any] = {
        "app": "hello_wsgi:app",
        "package": {"source": "examples/hello_wsgi"},
        "listen": ["127.0.0.1:8002"],
        "workers": 2,
    }
    service = normalised("gunicorn", **(fields | extra))
    env = jinja2.Environment(
        loader=ENV.loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    env.filters.update(ENV.filters, bool=bool)  # Ansible's bool filter, for these values
    config = env.get_template("gunicorn/etc/procslice/SERVICE/gunicorn.conf.py.j2").render(
        service=service,
        __procslice_gunicorn_estimate=64 * 1024**2,
        __procslice_gunicorn_worker_classes={"sync": "sync", "gthread": "gthread"},
        **VARS,
    )
    unit_text = env.get_template("gunicorn/etc/systemd/system/SERVICE.service.j2").render(
        service=service, **VARS
    )
    return config, unit_text


def test_gunicorn_with_metrics_listen_gets_the_multiprocess_hooks_and_a_runtime_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from prometheus_client import values

    from procslice import gunicorn_metrics

    # Running the config switches this process to multiprocess mode: undone at teardown.
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(gunicorn_metrics, "settings", gunicorn_metrics.Settings())
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    text, unit_text = gunicorn_files(metrics_listen="127.0.0.1:9004", statsd="127.0.0.1:8125")
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "/run/procslice/api/prometheus"
    cfg = gunicorn_config.Config()
    for name in (
        "on_starting",
        "when_ready",
        "post_fork",
        "child_exit",
        "pre_request",
        "post_request",
        "statsd_host",
        "statsd_prefix",
    ):
        cfg.set(name, namespace[name])  # gunicorn's own validation (a hook's arity)
    assert cfg.statsd_host == ("127.0.0.1", 8125)
    assert cfg.statsd_prefix == "api"
    assert "dogstatsd_tags" not in namespace
    assert status.gunicorn_metrics_address(text) == "127.0.0.1:9004"
    service_section = unit(unit_text)["Service"]
    assert service_section["RuntimeDirectory"] == "procslice/api/prometheus"
    assert service_section["RuntimeDirectoryMode"] == "0750"


def test_gunicorn_without_metrics_listen_has_no_hooks_and_no_runtime_directory() -> None:
    text, unit_text = gunicorn_files(statsd="127.0.0.1:8125", statsd_tags=True)
    assert "gunicorn_metrics" not in text and "pre_request" not in text
    assert "RuntimeDirectory" not in unit_text
    assert status.gunicorn_metrics_address(text) is None
    namespace: dict[str, Any] = {}
    exec(compile(text, "gunicorn.conf.py", "exec"), namespace)
    assert (namespace["statsd_prefix"], namespace["dogstatsd_tags"]) == ("", "service:api")
    text, _ = gunicorn_files(metrics_listen="127.0.0.1:9004", request_metrics=False)
    assert "child_exit = gunicorn_metrics.child_exit" in text
    assert "pre_request" not in text and "requests=False," in text


def test_exporter_serves_the_metrics_of_every_service_with_a_metrics_address() -> None:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(REPO / "roles" / "procslice_service" / "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
    )
    env.filters.update(ENV.filters)
    services = [
        normalised(
            "gunicorn",
            name="web",
            app="hello_wsgi:app",
            metrics_listen="127.0.0.1:9004",
            listen=["0.0.0.0:8000"],
        ),
        normalised("swoole", metrics_listen="127.0.0.1:9003"),
        normalised("aio", name="quiet", listen=["0.0.0.0:8001"]),
        # gone: no address to fetch
        normalised("aio", name="old", listen=["0.0.0.0:8005"], metrics_listen="127.0.0.1:9005")
        | {"state": "absent"},
        # the image's own /metrics, at one of its published ports
        ps.procslice_normalize_services(
            [
                {
                    "name": "box",
                    "model": "podman",
                    "image": "localhost/box:1",
                    "ports": ["8004:8000"],
                    "metrics_listen": "127.0.0.1:8004",
                }
            ],
            SLICES,
        )[0],
    ]
    text = env.get_template("prometheus-procslice-exporter.service.j2").render(
        __procslice_service_all_services=services,
        procslice_service_exporter_listen="0.0.0.0:9100",
        **VARS,
    )
    exec_start = unit(text)["Service"]["ExecStart"]
    assert exec_start == (
        "/usr/local/bin/procslice status --serve 0.0.0.0:9100 "
        "--runtime-metrics web=127.0.0.1:9004 --runtime-metrics api=127.0.0.1:9003 "
        "--runtime-metrics box=127.0.0.1:8004"
    )


def test_gunicorn_unit_switches_a_staged_release_in_its_start_and_reload() -> None:
    _, unit_text = gunicorn_files()
    switch = "+/usr/local/lib/procslice/activate --switch /srv/procslice/api"
    lines = unit_text.splitlines()
    assert f"ExecStartPre={switch}" in lines
    reloads = [line for line in lines if line.startswith("ExecReload=")]
    assert reloads == [f"ExecReload={switch}", "ExecReload=/bin/kill -HUP $MAINPID"]
