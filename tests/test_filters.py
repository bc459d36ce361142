"""Unit tests of plugins/filter/procslice.py (src/procslice/data): sizes, compose aliases,
defaults, checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from filter_plugin import ps

G = 1024**3
M = 1024**2


# ---- builders ------------------------------------------------------------------------


def gunicorn(name: str = "api", **extra: Any) -> dict[str, Any]:
    service = {
        "name": name,
        "model": "gunicorn",
        "package": {"wheel": "files/api-1.0-py3-none-any.whl"},
        "app": "api.main:app",
    }
    service.update(extra)
    return service


def web_slice(**extra: Any) -> dict[str, Any]:
    sl = {
        "name": "web",
        "cpu_quota": "150%",
        "memory_max": "2G",
        "memory_high": "1800M",
        "tasks_max": 512,
    }
    sl.update(extra)
    return sl


def errors(slices: Any = None, services: Any = None) -> list[str]:
    found: list[str] = ps.procslice_errors(slices or [], services or [])
    return found


def one_error(slices: Any = None, services: Any = None) -> str:
    found = errors(slices, services)
    assert len(found) == 1, found
    return found[0]


def service(data: dict[str, Any], slices: Any = None) -> dict[str, Any]:
    normalized: dict[str, Any] = ps.procslice_normalize_services([data], slices)[0]
    return normalized


def a_slice(data: dict[str, Any]) -> dict[str, Any]:
    normalized: dict[str, Any] = ps.procslice_normalize_slices([data])[0]
    return normalized


# ---- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        (0, 0),
        ("1024", 1024),
        ("512M", 512 * M),
        ("2G", 2 * G),
        ("2g", 2 * G),
        ("1.5g", 3 * G // 2),
        ("64MiB", 64 * M),
        ("64mb", 64 * M),
        ("100K", 100 * 1024),
        ("1T", 1024**4),
        ("1024B", 1024),
        (" 2G ", 2 * G),
        (".5G", G // 2),
    ],
)
def test_size_accepts_documented_forms(value: Any, expected: int) -> None:
    assert ps.procslice_size(value) == expected


@pytest.mark.parametrize(
    "value", ["2 gigs", "-1G", "", "12X", "1.5", "G", "1.2.3G", "1iB", -1, None, [], True]
)
def test_size_refuses_garbage_with_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="(not a size|not a whole)"):
        ps.procslice_size(value)


def test_size_error_says_how_to_write_a_size() -> None:
    with pytest.raises(ps.ProcsliceDataError) as caught:
        ps.procslice_size("2 gigs")
    assert str(caught.value) == (
        '"2 gigs" is not a size; write bytes or a number with K, M, G, T, P or E (e.g. 2G)'
    )


def test_size_negative_is_called_negative() -> None:
    with pytest.raises(ps.ProcsliceDataError, match="negative"):
        ps.procslice_size("-1G")


def test_size_fraction_rounds_down_to_whole_bytes() -> None:
    assert ps.procslice_size("0.3K") == 307


# ---- slices: systemd directives and compose aliases ----------------------------------


def test_slice_gets_its_unit_name_and_state() -> None:
    sl = a_slice({"name": "web"})
    assert sl["unit"] == "procslice-web.slice"
    assert sl["state"] == "present"
    assert sl["directives"] == {}
    assert sl["limits"] == dict.fromkeys(ps.LIMIT_KEYS)


def test_slice_directives_use_systemd_names_and_values() -> None:
    sl = a_slice(
        {
            "name": "web",
            "cpu_quota": "150%",
            "cpu_weight": 200,
            "memory_max": "2G",
            "memory_high": "1800M",
            "memory_low": "256M",
            "memory_swap_max": 0,
            "tasks_max": 512,
            "io_read_bandwidth_max": {"/dev/vda": "50M", "/dev/vdb": "10M"},
            "io_write_bandwidth_max": {"/dev/vda": "20M"},
            "allowed_cpus": "0-1",
        }
    )
    assert sl["directives"] == {
        "CPUQuota": "150%",
        "CPUWeight": "200",
        "MemoryMax": str(2 * G),
        "MemoryHigh": str(1800 * M),
        "MemoryLow": str(256 * M),
        "MemorySwapMax": "0",
        "TasksMax": "512",
        "IOReadBandwidthMax": [f"/dev/vda {50 * M}", f"/dev/vdb {10 * M}"],
        "IOWriteBandwidthMax": [f"/dev/vda {20 * M}"],
        "AllowedCPUs": "0-1",
    }
    assert sl["limits"] == {
        "cpu_quota_percent": 150.0,
        "memory_max": 2 * G,
        "memory_high": 1800 * M,
        "memory_low": 256 * M,
        "memory_swap_max": 0,
        "tasks_max": 512,
        "cpu_weight": 200,
        "allowed_cpus": "0-1",
    }


def test_slice_only_set_keys_appear_in_directives() -> None:
    assert a_slice({"name": "web", "memory_max": "1G"})["directives"] == {"MemoryMax": str(G)}


def test_infinity_is_written_as_infinity_and_is_no_limit() -> None:
    sl = a_slice({"name": "web", "memory_max": "infinity", "tasks_max": "infinity"})
    assert sl["directives"] == {"MemoryMax": "infinity", "TasksMax": "infinity"}
    assert sl["limits"]["memory_max"] is None
    assert sl["limits"]["tasks_max"] is None


def test_compose_cpus_maps_to_cpu_quota() -> None:
    sl = a_slice({"name": "web", "cpus": 1.5})
    assert sl["directives"] == {"CPUQuota": "150%"}
    assert sl["limits"]["cpu_quota_percent"] == 150.0


def test_compose_cpus_as_string_and_fraction() -> None:
    assert a_slice({"name": "web", "cpus": "0.333"})["directives"]["CPUQuota"] == "33.3%"


def test_cpu_quota_keeps_two_decimals() -> None:
    assert a_slice({"name": "web", "cpu_quota": "33.333%"})["directives"]["CPUQuota"] == "33.33%"


def test_compose_memory_maps_to_memory_max() -> None:
    assert a_slice({"name": "web", "memory": "2g"})["directives"] == {"MemoryMax": str(2 * G)}


def test_compose_reservations_map_to_memory_low_and_cpu_weight() -> None:
    sl = a_slice({"name": "web", "reservations": {"memory": "256M", "cpus": 0.5}})
    assert sl["directives"] == {"CPUWeight": "50", "MemoryLow": str(256 * M)}
    assert sl["limits"]["cpu_weight"] == 50


@pytest.mark.parametrize(("cpus", "weight"), [(0.001, 1), (2, 200), (500, 10000), (0.125, 13)])
def test_compose_reservation_cpus_weight_is_rounded_and_clamped(cpus: float, weight: int) -> None:
    sl = a_slice({"name": "web", "reservations": {"cpus": cpus}})
    assert sl["directives"]["CPUWeight"] == str(weight)


def test_compose_pids_limit_maps_to_tasks_max() -> None:
    assert a_slice({"name": "web", "pids_limit": 100})["directives"] == {"TasksMax": "100"}


def test_compose_device_bps_list_maps_to_io_bandwidth_lists() -> None:
    sl = a_slice(
        {
            "name": "web",
            "device_read_bps": [
                {"path": "/dev/sda", "rate": "12mb"},
                {"path": "/dev/sdb", "rate": "1g"},
            ],
            "device_write_bps": [{"path": "/dev/sda", "rate": "1024k"}],
        }
    )
    assert sl["directives"] == {
        "IOReadBandwidthMax": [f"/dev/sda {12 * M}", f"/dev/sdb {G}"],
        "IOWriteBandwidthMax": [f"/dev/sda {M}"],
    }


def test_compose_device_bps_mapping_form() -> None:
    sl = a_slice({"name": "web", "device_read_bps": {"/dev/sda": "1M"}})
    assert sl["directives"] == {"IOReadBandwidthMax": [f"/dev/sda {M}"]}


def test_compose_cpuset_maps_to_allowed_cpus() -> None:
    sl = a_slice({"name": "web", "cpuset": "0,2-3"})
    assert sl["directives"] == {"AllowedCPUs": "0,2-3"}


def test_normalize_slices_raises_listing_every_problem() -> None:
    with pytest.raises(ps.ProcsliceDataError) as caught:
        ps.procslice_normalize_slices([{"name": "web", "memory_max": "2 gigs", "tasks_max": 0}])
    text = str(caught.value)
    assert "procslice_slices[web].memory_max" in text
    assert "procslice_slices[web].tasks_max" in text


# ---- services: defaults and limits ---------------------------------------------------


def test_gunicorn_service_defaults() -> None:
    svc = service(gunicorn(listen=["0.0.0.0:8000"]))
    assert svc["unit"] == "procslice-api"
    assert svc["user"] == "procslice-api"
    assert svc["slice"] is None
    assert svc["slice_unit"] == "procslice.slice"
    assert svc["state"] == "present"
    assert svc["interface"] == "wsgi"
    assert svc["listen"] == ["0.0.0.0:8000"]
    assert svc["ports"] == [8000]
    assert svc["workers"] == "auto"
    assert svc["worker_class"] == "sync"
    assert svc["threads"] == 1
    assert (svc["timeout"], svc["graceful_timeout"]) == (30, 20)
    assert (svc["max_requests"], svc["max_requests_jitter"]) == (1000, 100)
    assert svc["preload"] is False
    assert svc["health"] == {
        "http": "/healthz",
        "tcp": False,
        "timeout": 10,
        "url": "http://127.0.0.1:8000/healthz",
        "default": True,  # not set by the data: the plan names it until its gate passed
    }
    assert svc["env"] == {}
    assert svc["directives"] == {}
    assert svc["limits"] == dict.fromkeys(ps.SERVICE_LIMIT_KEYS)
    assert svc["package"] == {"wheel": "files/api-1.0-py3-none-any.whl"}
    assert svc["app"] == "api.main:app"


def test_gunicorn_asgi_gets_the_uvicorn_worker() -> None:
    svc = service(gunicorn(interface="asgi"))
    assert svc["worker_class"] == "uvicorn"


def test_gthread_defaults_to_four_threads() -> None:
    assert service(gunicorn(worker_class="gthread"))["threads"] == 4


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_aio_and_swoole_default_to_asgi(model: str) -> None:
    svc = service(gunicorn(model=model))
    assert svc["interface"] == "asgi"
    assert svc["worker_class"] is None


def test_service_in_a_slice_gets_the_slice_unit() -> None:
    svc = service(gunicorn(slice="web"), [web_slice()])
    assert svc["slice"] == "web"
    assert svc["slice_unit"] == "procslice-web.slice"


def test_service_limits_become_directives() -> None:
    svc = service(
        gunicorn(
            limits={
                "cpu_quota": "100%",
                "memory_max": "1G",
                "memory_high": "900M",
                "tasks_max": 128,
                "limit_nofile": 65536,
                "limit_as": "4G",
            }
        )
    )
    assert svc["directives"] == {
        "CPUQuota": "100%",
        "MemoryMax": str(G),
        "MemoryHigh": str(900 * M),
        "TasksMax": "128",
        "LimitNOFILE": "65536",
        "LimitAS": str(4 * G),
    }
    assert svc["limits"]["limit_nofile"] == 65536
    assert svc["limits"]["limit_as"] == 4 * G


def test_service_limits_accept_compose_aliases() -> None:
    svc = service(gunicorn(limits={"cpus": 0.5, "memory": "512m", "pids_limit": 64}))
    assert svc["directives"] == {"CPUQuota": "50%", "MemoryMax": str(512 * M), "TasksMax": "64"}


def test_limit_nofile_soft_hard() -> None:
    svc = service(gunicorn(limits={"limit_nofile": "1024:65536"}))
    assert svc["directives"]["LimitNOFILE"] == "1024:65536"
    assert svc["limits"]["limit_nofile"] == 65536


def test_env_values_are_stringified() -> None:
    svc = service(gunicorn(env={"LOG_LEVEL": "info", "WORKERS": 3, "DEBUG": False, "EMPTY": None}))
    assert svc["env"] == {"LOG_LEVEL": "info", "WORKERS": "3", "DEBUG": "false", "EMPTY": ""}


def test_model_specific_keys_pass_through_unchanged() -> None:
    svc = service(
        gunicorn(model="swoole", max_request=10000, memory_limit="200M", task_worker_num=2)
    )
    assert (svc["max_request"], svc["memory_limit"], svc["task_worker_num"]) == (10000, "200M", 2)


def test_podman_ports_become_publish_and_feed_listen_and_ports() -> None:
    svc = service(
        {
            "name": "proxy",
            "model": "podman",
            "image": "nginx:1.27",
            "ports": ["8080:80", "127.0.0.1:8443:443/tcp", "53:53/udp"],
        }
    )
    # the publish list as podman takes it; `ports` are the host's tcp ports, as for
    # every model (playbooks read service.ports[0])
    assert svc["publish"] == ["8080:80", "127.0.0.1:8443:443/tcp", "53:53/udp"]
    assert svc["ports"] == [8080, 8443]
    assert svc["listen"] == ["0.0.0.0:8080", "127.0.0.1:8443"]
    assert svc["image"] == "nginx:1.27"
    assert svc["health"] == {
        "http": None,
        "tcp": True,
        "timeout": 10,
        "url": "tcp://127.0.0.1:8080",  # the gate's TCP connect check
        "default": False,
    }
    assert svc["interface"] is None


# ---- podman: image source, command, volumes, run flags --------------------------------


def podman(name: str = "proxy", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "model": "podman",
        "image": "docker.io/library/nginx:1.27",
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("extra", "pull"),
    [
        ({}, "missing"),  # a registry image: podman's default
        ({"pull": True}, "missing"),
        ({"pull": False}, "never"),
        ({"pull": "always"}, "always"),
        ({"pull": "newer"}, "newer"),
        ({"image": "localhost/demo:1"}, "never"),  # no registry serves it
        ({"image": "nginx"}, "never"),  # a short name: no search registries
        ({"image_archive": "files/demo.tar.gz"}, "never"),
    ],
)
def test_podman_pull_policy_defaults_to_what_can_be_pulled(
    extra: dict[str, Any], pull: str
) -> None:
    assert service(podman(**extra))["pull"] == pull


def test_podman_limits_become_podman_run_flags_and_unit_directives() -> None:
    svc = service(
        podman(
            limits={
                "cpus": 1.5,
                "cpu_weight": 50,
                "memory": "256M",
                "memory_swap_max": "64M",
                "reservations": {"memory": "128M"},
                "pids_limit": 64,
                "device_read_bps": {"/dev/vda": "50M"},
                "device_write_bps": [{"path": "/dev/vda", "rate": "20M"}],
                "cpuset": "0 2-3",
                "limit_nofile": "1024:4096",
            }
        )
    )
    assert svc["podman_args"] == [
        "--cpus=1.5",
        "--cpu-shares=512",
        f"--memory={256 * M}",
        f"--memory-swap={320 * M}",  # podman counts memory plus swap
        f"--memory-reservation={128 * M}",
        "--pids-limit=64",
        f"--device-read-bps=/dev/vda:{50 * M}",
        f"--device-write-bps=/dev/vda:{20 * M}",
        "--cpuset-cpus=0,2-3",
        "--ulimit=nofile=1024:4096",
    ]
    # the unit (50-limits.conf) gets the container's memory and task limits plus
    # podman's own headroom (conmon, podman stop), so the container's limit binds first
    assert svc["directives"]["MemoryMax"] == str((256 + 64) * M)
    assert svc["directives"]["TasksMax"] == str(64 + 32)
    assert svc["directives"]["CPUQuota"] == "150%"


def test_podman_no_swap_and_unlimited_values() -> None:
    svc = service(podman(limits={"memory": "64M", "memory_swap_max": 0, "tasks_max": "infinity"}))
    assert svc["podman_args"] == [
        f"--memory={64 * M}",
        f"--memory-swap={64 * M}",
        "--pids-limit=-1",
    ]
    svc = service(podman(limits={"memory": "64M", "memory_swap_max": "infinity"}))
    assert svc["podman_args"] == [f"--memory={64 * M}", "--memory-swap=-1"]
    assert service(podman(limits={"memory": "infinity", "limit_nofile": 4096}))["podman_args"] == [
        "--ulimit=nofile=4096:4096"
    ]


def test_podman_cpu_quota_percent_becomes_cpus() -> None:
    assert service(podman(limits={"cpu_quota": "33.33%"}))["podman_args"] == ["--cpus=0.3333"]


def test_podman_command_and_volumes_are_lists() -> None:
    svc = service(
        podman(command="serve --port '8 0'", volumes=["/srv/data:/data:ro", "cache:/cache"])
    )
    assert svc["command"] == ["serve", "--port", "8 0"]
    assert svc["volumes"] == ["/srv/data:/data:ro", "cache:/cache"]
    assert service(podman(command=["sleep", 10]))["command"] == ["sleep", "10"]
    assert service(podman())["command"] == [] and service(podman())["volumes"] == []


def test_non_podman_services_get_no_podman_keys() -> None:
    assert "podman_args" not in service(gunicorn())


@pytest.mark.parametrize(
    ("limits", "path", "text"),
    [
        ({"memory_swap_max": 0}, "limits.memory_swap_max", "needs a memory limit"),
        ({"memory": "infinity", "memory_swap_max": 0}, "limits.memory_swap_max", "needs a"),
        ({"limit_nofile": "infinity"}, "limits.limit_nofile", "cannot set an unlimited nofile"),
        ({"limit_as": "4G"}, "limits.limit_as", "cannot set an address-space limit"),
        (
            {"device_read_bps": {"/dev/vda": "infinity"}},
            "limits.device_read_bps",
            "--device-read-bps takes a rate, not infinity",
        ),
        (
            {"io_write_bandwidth_max": {"/dev/vda": "infinity"}},
            "limits.io_write_bandwidth_max",
            "--device-write-bps takes a rate",
        ),
    ],
)
def test_error_limit_podman_cannot_express(limits: dict[str, Any], path: str, text: str) -> None:
    message = one_error(services=[podman(limits=limits)])
    assert message.startswith(f"procslice_services[proxy].{path}: "), message
    assert text in message


def test_limits_podman_cannot_express_are_fine_on_other_models() -> None:
    assert errors(services=[gunicorn(limits={"limit_as": "4G", "memory_swap_max": 0})]) == []


@pytest.mark.parametrize(
    ("extra", "path", "text"),
    [
        ({"pull": "sometimes"}, "pull", "is not a pull policy"),
        ({"pull": True, "image_archive": "files/a.tar"}, "pull", "pulls the image that"),
        ({"pull": "always", "image": "localhost/demo:1"}, "image", "built locally"),
        ({"pull": True, "image": "nginx:1.27"}, "image", "docker.io/library/nginx:1.27"),
        ({"image_archive": ""}, "image_archive", "is not a path"),
        ({"command": {"run": "x"}}, "command", "is not a command"),
        ({"command": "serve 'unclosed"}, "command", "does not parse"),
        ({"volumes": "/srv:/data"}, "volumes", "is not a list"),
        ({"volumes": ["data"]}, "volumes[0]", "is not a volume"),
        ({"volumes": ["/srv:data"]}, "volumes[0]", "is not a volume"),
        ({"volumes": ["bad name!:/data"]}, "volumes[0]", "is not a volume"),
        ({"podman_options": "--cap-add=CHOWN"}, "podman_options", "is not a list"),
        ({"podman_options": ["cap-add=CHOWN"]}, "podman_options[0]", "is not a podman run option"),
    ],
)
def test_error_podman_image_source_command_volumes(
    extra: dict[str, Any], path: str, text: str
) -> None:
    # (an archive is looked for on disk too: that check has its own test)
    found = [
        m for m in errors(services=[podman(**extra)]) if "not a file on the controller" not in m
    ]
    assert len(found) == 1, found
    message = found[0]
    assert message.startswith(f"procslice_services[proxy].{path}: "), message
    assert text in message


def test_image_archive_must_exist_on_the_controller(tmp_path: Path) -> None:
    data = podman(image="localhost/demo:1", image_archive="images/demo.tar.gz")
    message = ps.procslice_errors([], [data], str(tmp_path))
    assert len(message) == 1, message
    assert message[0].startswith(
        'procslice_services[proxy].image_archive: "images/demo.tar.gz" is not a file on the '
        f"controller (looked for {tmp_path}/images/demo.tar.gz)"
    )
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "demo.tar.gz").write_bytes(b"")
    assert ps.procslice_errors([], [data], str(tmp_path)) == []
    # an absolute path is taken as it is
    absolute = podman(image="localhost/demo:1", image_archive=str(tmp_path / "images/demo.tar.gz"))
    assert ps.procslice_errors([], [absolute], "/nonexistent") == []


def test_image_archive_of_an_absent_service_is_not_checked(tmp_path: Path) -> None:
    data = podman(image_archive="gone.tar", state="absent")
    assert ps.procslice_errors([], [data], str(tmp_path)) == []


def test_normalize_does_not_look_at_the_image_archive_on_disk() -> None:
    svc = service(podman(image="localhost/demo:1", image_archive="/nonexistent/demo.tar.gz"))
    assert svc["image_archive"] == "/nonexistent/demo.tar.gz" and svc["pull"] == "never"


def test_raw_listener_gets_a_tcp_health_check() -> None:
    svc = service(gunicorn(model="aio", interface="raw", listen=["127.0.0.1:9000"]))
    assert svc["health"] == {
        "http": None,
        "tcp": True,
        "timeout": 10,
        "url": "tcp://127.0.0.1:9000",
        "default": False,
    }


def test_service_without_listen_has_no_probe() -> None:
    assert service(gunicorn(model="aio"))["health"] == {
        "http": None,
        "tcp": False,
        "timeout": 10,
        "url": None,
        "default": False,
    }


def test_numeric_workers_string_becomes_int() -> None:
    assert service(gunicorn(workers="4"))["workers"] == 4


def test_normalize_services_with_slices_runs_the_cross_checks() -> None:
    with pytest.raises(ps.ProcsliceDataError, match=r"procslice_services\[api\]\.slice"):
        ps.procslice_normalize_services([gunicorn(slice="webb")], [web_slice()])


def test_normalize_services_without_slices_checks_the_service_alone() -> None:
    assert service(gunicorn(slice="anything"))["slice_unit"] == "procslice-anything.slice"
    with pytest.raises(ps.ProcsliceDataError, match=r"procslice_services\[api\]\.model"):
        service(gunicorn(model="uwsgi"))


def test_normalize_does_not_change_its_input() -> None:
    data = [gunicorn(limits={"cpus": 1}, env={"A": 1})]
    before = copy.deepcopy(data)
    ps.procslice_normalize_services(data, [])
    assert data == before


def test_filter_module_maps_the_filters() -> None:
    filters = ps.FilterModule().filters()
    assert filters == {
        "procslice_size": ps.procslice_size,
        "procslice_normalize_slices": ps.procslice_normalize_slices,
        "procslice_normalize_services": ps.procslice_normalize_services,
        "procslice_errors": ps.procslice_errors,
        "procslice_layers": ps.procslice_layers,
        "procslice_layer_vars": ps.procslice_layer_vars,
        "procslice_errors_with_layers": ps.procslice_errors_with_layers,
        "procslice_build_variants": ps.procslice_build_variants,
        "procslice_build_pick": ps.procslice_build_pick,
        "procslice_toml": ps.procslice_toml,
        "procslice_releases": ps.procslice_releases,
    }


DATA_MODEL_EXAMPLE_SLICES = [
    {
        "name": "web",
        "cpu_quota": "150%",
        "cpu_weight": 200,
        "memory_max": "2G",
        "memory_high": "1800M",
        "memory_low": "256M",
        "memory_swap_max": 0,
        "tasks_max": 512,
        "io_read_bandwidth_max": {"/dev/vda": "50M"},
        "io_write_bandwidth_max": {"/dev/vda": "20M"},
        "allowed_cpus": "0-1",
        "state": "present",
    }
]
DATA_MODEL_EXAMPLE_SERVICES = [
    {
        "name": "api",
        "model": "gunicorn",
        "slice": "web",
        "package": {"source": "examples/hello_wsgi"},
        "app": "hello_wsgi:app",
        "interface": "wsgi",
        "listen": ["0.0.0.0:8000"],
        "workers": "auto",
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 30,
        "graceful_timeout": 20,
        "max_requests": 1000,
        "max_requests_jitter": 100,
        "preload": False,
        "limits": {
            "cpu_quota": "100%",
            "memory_max": "1G",
            "memory_high": "900M",
            "tasks_max": 128,
            "limit_nofile": 65536,
            "limit_as": "4G",
        },
        "health": {"http": "/healthz", "timeout": 10},
        "env": {"LOG_LEVEL": "info"},
        "state": "present",
    }
]


def test_the_data_model_example_is_valid() -> None:
    assert errors(DATA_MODEL_EXAMPLE_SLICES, DATA_MODEL_EXAMPLE_SERVICES) == []


@pytest.mark.parametrize("empty", [None, [], ""])
def test_no_data_is_valid(empty: Any) -> None:
    assert ps.procslice_errors(empty, empty) == []


# ---- errors: one test per check ------------------------------------------------------


def test_error_invalid_slice_name() -> None:
    assert one_error([{"name": "Web_1"}]).startswith(
        'procslice_slices[Web_1].name: "Web_1" is not a valid name;'
    )


def test_error_invalid_service_name() -> None:
    message = one_error(services=[gunicorn(name="-api")])
    assert message.startswith('procslice_services[-api].name: "-api" is not a valid name')


def test_error_name_too_long() -> None:
    assert "is not a valid name" in one_error(services=[gunicorn(name="a" * 42)])


def test_error_missing_name_uses_the_index() -> None:
    data = gunicorn()
    del data["name"]
    assert one_error(services=[data]).startswith("procslice_services[0].name: missing")


def test_error_duplicate_slice_name() -> None:
    message = one_error([{"name": "web"}, {"name": "web"}])
    assert message.startswith('procslice_slices[web].name: "web" is defined twice')


def test_error_duplicate_service_name() -> None:
    message = one_error(services=[gunicorn(), gunicorn(listen=["0.0.0.0:1"])])
    assert message.startswith('procslice_services[api].name: "api" is defined twice')


def test_error_unknown_model() -> None:
    assert one_error(services=[gunicorn(model="uwsgi")]) == (
        'procslice_services[api].model: "uwsgi" is not a model; '
        "use one of: gunicorn, aio, swoole, podman"
    )


def test_error_missing_model() -> None:
    data = gunicorn()
    del data["model"]
    assert one_error(services=[data]).startswith("procslice_services[api].model: missing")


def test_error_unknown_interface() -> None:
    assert one_error(services=[gunicorn(interface="cgi")]).startswith(
        'procslice_services[api].interface: "cgi" is not an interface'
    )


def test_error_gunicorn_cannot_serve_raw() -> None:
    assert one_error(services=[gunicorn(interface="raw")]).startswith(
        "procslice_services[api].interface: gunicorn serves wsgi or asgi"
    )


def test_error_unknown_service_key() -> None:
    message = one_error(services=[gunicorn(wokers=4)])
    assert message.startswith("procslice_services[api].wokers: unknown key; did you mean workers?")
    assert "valid keys: " in message


def test_error_unknown_slice_key() -> None:
    message = one_error([{"name": "web", "memroy_max": "1G"}])
    assert message.startswith(
        "procslice_slices[web].memroy_max: unknown key; did you mean memory_max?"
    )


def test_error_unknown_limits_key_lists_the_valid_keys() -> None:
    message = one_error(services=[gunicorn(limits={"memroy_max": "1G"})])
    assert message.startswith(
        "procslice_services[api].limits.memroy_max: unknown key; did you mean memory_max? "
        "valid keys: allowed_cpus, cpu_quota,"
    )
    assert "limit_nofile" in message


def test_error_unknown_health_key() -> None:
    assert one_error(services=[gunicorn(health={"path": "/x"})]).startswith(
        "procslice_services[api].health.path: unknown key"
    )


def test_error_memswap_limit_points_to_memory_swap_max() -> None:
    message = one_error([{"name": "web", "memswap_limit": "2G"}])
    assert message.startswith("procslice_slices[web].memswap_limit: ")
    assert "memory_swap_max" in message


def test_error_size_that_does_not_parse() -> None:
    assert one_error(services=[gunicorn(limits={"memory_max": "2 gigs"})]) == (
        'procslice_services[api].limits.memory_max: "2 gigs" is not a size; '
        "write bytes or a number with K, M, G, T, P or E (e.g. 2G)"
    )


@pytest.mark.parametrize("value", ["abc%", "0%", "-5%", 1.5, "1.5", "150"])
def test_error_cpu_quota_that_does_not_parse(value: Any) -> None:
    assert one_error([{"name": "web", "cpu_quota": value}]).startswith(
        "procslice_slices[web].cpu_quota: "
    )


def test_error_cpu_quota_as_a_number_suggests_cpus() -> None:
    assert "cpus: 1.5" in one_error([{"name": "web", "cpu_quota": 1.5}])


@pytest.mark.parametrize("value", ["150", 150, "50"])
def test_error_cpu_quota_without_a_percent_sign_suggests_the_percentage_first(value: Any) -> None:
    message = one_error([{"name": "web", "cpu_quota": value}])
    assert message.index(f'write "{value}%"') < message.index(f"cpus: {value}"), message


def test_error_a_slice_named_procslice_is_refused() -> None:
    message = one_error([{"name": "procslice", "cpu_quota": "50%"}])
    assert message.startswith("procslice_slices[procslice].name: ")
    assert "procslice_slices_parent_directives" in message


@pytest.mark.parametrize("value", [0, -1, "two", "150%"])
def test_error_cpus_that_do_not_parse(value: Any) -> None:
    assert one_error([{"name": "web", "cpus": value}]).startswith("procslice_slices[web].cpus: ")


@pytest.mark.parametrize("value", [0, 10001, "heavy", True])
def test_error_cpu_weight_out_of_range(value: Any) -> None:
    assert one_error([{"name": "web", "cpu_weight": value}]).startswith(
        "procslice_slices[web].cpu_weight: "
    )


@pytest.mark.parametrize("value", [0, -3, "lots", "50%"])
def test_error_tasks_max_that_does_not_parse(value: Any) -> None:
    assert one_error([{"name": "web", "tasks_max": value}]).startswith(
        "procslice_slices[web].tasks_max: "
    )


@pytest.mark.parametrize("value", ["0-", "a", "3-1", "0;1"])
def test_error_allowed_cpus_that_do_not_parse(value: Any) -> None:
    assert one_error([{"name": "web", "allowed_cpus": value}]).startswith(
        "procslice_slices[web].allowed_cpus: "
    )


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"sda": "1M"}, "procslice_slices[web].io_read_bandwidth_max[sda]"),
        ({"/dev/sda": "fast"}, "procslice_slices[web].io_read_bandwidth_max[/dev/sda]"),
        ({"/dev/sda": 0}, "procslice_slices[web].io_read_bandwidth_max[/dev/sda]"),
        ([{"path": "/dev/sda"}], "procslice_slices[web].io_read_bandwidth_max[0]"),
        ("/dev/sda 1M", "procslice_slices[web].io_read_bandwidth_max"),
    ],
)
def test_error_device_bandwidth_that_does_not_parse(value: Any, path: str) -> None:
    assert one_error([{"name": "web", "io_read_bandwidth_max": value}]).startswith(f"{path}: ")


@pytest.mark.parametrize("value", ["lots", 0, "1:0", "2048:1024"])
def test_error_limit_nofile_that_does_not_parse(value: Any) -> None:
    assert one_error(services=[gunicorn(limits={"limit_nofile": value})]).startswith(
        "procslice_services[api].limits.limit_nofile: "
    )


def test_error_memory_high_above_memory_max_in_a_slice() -> None:
    assert one_error([{"name": "web", "memory_max": "1G", "memory_high": "2G"}]) == (
        "procslice_slices[web].memory_high: 2G is above procslice_slices[web].memory_max (1G); "
        "memory_high must be at most memory_max: lower it or raise memory_max"
    )


def test_error_memory_high_above_memory_max_in_a_service() -> None:
    message = one_error(services=[gunicorn(limits={"memory": "1G", "memory_high": "2G"})])
    assert message.startswith(
        "procslice_services[api].limits.memory_high: 2G is above "
        "procslice_services[api].limits.memory (1G)"
    )


def test_error_memory_low_above_memory_max() -> None:
    assert one_error([{"name": "web", "memory_max": "1G", "memory_low": "2G"}]).startswith(
        "procslice_slices[web].memory_low: 2G is above"
    )


def test_error_unknown_slice_lists_the_slices() -> None:
    assert one_error([web_slice(), {"name": "batch"}], [gunicorn(slice="webb")]) == (
        'procslice_services[api].slice: "webb" is not a slice; '
        "define it in procslice_slices or use one of: batch, web"
    )


def test_error_slice_absent_while_a_service_uses_it() -> None:
    assert one_error([web_slice(state="absent")], [gunicorn(slice="web")]).startswith(
        "procslice_slices[web].state: absent, but service api still uses it"
    )


@pytest.mark.parametrize(
    ("limits", "path", "text"),
    [
        (
            {"cpu_quota": "200%"},
            "limits.cpu_quota",
            "200% is above its slice's procslice_slices[web].cpu_quota (150%)",
        ),
        ({"cpus": 2}, "limits.cpus", "200% is above"),
        (
            {"memory_max": "4G"},
            "limits.memory_max",
            "4G is above its slice's procslice_slices[web].memory_max (2G); lower it to at most 2G",
        ),
        ({"memory_high": "1900M"}, "limits.memory_high", "1900M is above"),
        (
            {"tasks_max": 1000},
            "limits.tasks_max",
            "1000 is above its slice's procslice_slices[web].tasks_max (512)",
        ),
    ],
)
def test_error_service_limit_above_its_slice(limits: dict[str, Any], path: str, text: str) -> None:
    message = one_error([web_slice()], [gunicorn(slice="web", limits=limits)])
    assert message.startswith(f"procslice_services[api].{path}: {text}")


def test_service_limit_equal_to_its_slice_is_fine() -> None:
    limits = {"cpu_quota": "150%", "memory_max": "2G", "tasks_max": 512}
    assert errors([web_slice()], [gunicorn(slice="web", limits=limits)]) == []


def test_error_two_services_on_one_port_of_one_address() -> None:
    message = one_error(
        services=[
            gunicorn(listen=["127.0.0.1:8000"]),
            gunicorn(name="admin", listen=["127.0.0.1:8000"]),
        ]
    )
    assert message == (
        "procslice_services[admin].listen: 127.0.0.1:8000 collides with "
        "procslice_services[api] (127.0.0.1:8000); give one of them another port or a "
        "distinct address"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("0.0.0.0:8000", "127.0.0.1:8000"),
        ("10.0.0.1:8000", "0.0.0.0:8000"),
        ("[::]:8000", "127.0.0.1:8000"),
        ("0.0.0.0:8000", "[::1]:8000"),
    ],
)
def test_error_wildcard_address_collides_with_every_address(first: str, second: str) -> None:
    message = one_error(
        services=[gunicorn(listen=[first]), gunicorn(name="admin", listen=[second])]
    )
    assert message.startswith("procslice_services[admin].listen: ")


def test_error_podman_published_port_collides_with_a_listener() -> None:
    message = one_error(
        services=[
            gunicorn(listen=["0.0.0.0:8080"]),
            {"name": "proxy", "model": "podman", "image": "nginx", "ports": ["8080:80"]},
        ]
    )
    assert message.startswith("procslice_services[proxy].ports: 0.0.0.0:8080 collides")


def test_distinct_addresses_or_ports_do_not_collide() -> None:
    services = [
        gunicorn(listen=["127.0.0.1:8000", "127.0.0.1:8001"]),
        gunicorn(name="admin", listen=["127.0.0.2:8000", "[::1]:8001"]),
    ]
    assert errors(services=services) == []


def test_udp_and_tcp_on_one_port_do_not_collide() -> None:
    services = [
        gunicorn(listen=["0.0.0.0:53"]),
        {"name": "dns", "model": "podman", "image": "dns", "ports": ["53:53/udp"]},
    ]
    assert errors(services=services) == []


def test_absent_service_holds_no_port() -> None:
    services = [
        gunicorn(listen=["0.0.0.0:8000"]),
        gunicorn(name="old", listen=["0.0.0.0:8000"], state="absent"),
    ]
    assert errors(services=services) == []


def test_error_one_service_listing_an_address_twice() -> None:
    assert one_error(services=[gunicorn(listen=["0.0.0.0:80", "0.0.0.0:80"])]).startswith(
        "procslice_services[api].listen: 0.0.0.0:80 is listed twice"
    )


@pytest.mark.parametrize(
    "value",
    [
        "8000",
        "localhost:8000",
        "1.2.3.4:0",
        "1.2.3.4:70000",
        "[zz]:80",
        8000,
        "::1:80",
        "1.2.3.4:http",
    ],
)
def test_error_listen_that_does_not_parse(value: Any) -> None:
    assert one_error(services=[gunicorn(listen=[value])]).startswith(
        "procslice_services[api].listen[0]: "
    )


@pytest.mark.parametrize("value", ["8080:80:90:1", "a:80", "8080:80/xyz", 99999])
def test_error_podman_port_that_does_not_parse(value: Any) -> None:
    data = {"name": "proxy", "model": "podman", "image": "nginx", "ports": [value]}
    assert one_error(services=[data]).startswith("procslice_services[proxy].ports[0]: ")


def test_error_ports_on_a_non_podman_service_points_to_listen() -> None:
    message = one_error(services=[gunicorn(ports=[8000])])
    assert message.startswith("procslice_services[api].ports: ")
    assert "listen" in message


@pytest.mark.parametrize("model", ["gunicorn", "aio", "swoole"])
def test_error_missing_app(model: str) -> None:
    data = gunicorn(model=model)
    del data["app"]
    assert one_error(services=[data]).startswith(
        f"procslice_services[api].app: missing; model {model} needs the app"
    )


def test_error_app_not_module_attribute() -> None:
    assert one_error(services=[gunicorn(app="api.main")]).startswith(
        'procslice_services[api].app: "api.main" is not module:attribute or module:factory(...)'
        " (no colon between the module and the attribute)"
    )


@pytest.mark.parametrize("model", ["gunicorn", "aio", "swoole"])
@pytest.mark.parametrize(
    "app",
    ["api.main:app", "api.main:create_app()", "api:make('prod', workers=2, tags=['a'])", "a:b.c"],
)
def test_an_app_or_an_app_factory_is_accepted(model: str, app: str) -> None:
    assert errors(services=[gunicorn(model=model, app=app)]) == []


@pytest.mark.parametrize(
    ("app", "problem"),
    [
        ("api.main:create_app(", "'create_app(' is not an attribute or a call of one"),
        ("api.main:create_app(os.environ)", "a factory's arguments must be literals"),
        ("api.main:create_app(*args)", "not *args or **kwargs"),
        ("api-main:app", "'api-main' is not a module path"),
        ("api:app[0]", "'app[0]' is not an attribute or a call of one"),
    ],
)
def test_a_bad_app_factory_is_refused_with_what_is_wrong(app: str, problem: str) -> None:
    message = one_error(services=[gunicorn(app=app)])
    assert message.startswith(f"procslice_services[api].app: {app!r}".replace("'", '"'))
    assert problem in message, message
    assert 'or "api.main:create_app()" for an app factory' in message


def test_error_missing_image_for_podman() -> None:
    assert one_error(services=[{"name": "proxy", "model": "podman"}]).startswith(
        "procslice_services[proxy].image: missing; model podman runs an image"
    )


def test_error_missing_package() -> None:
    data = gunicorn()
    del data["package"]
    assert one_error(services=[data]).startswith("procslice_services[api].package: missing;")


def test_error_ambiguous_package() -> None:
    message = one_error(services=[gunicorn(package={"wheel": "a.whl", "source": "src"})])
    assert message.startswith(
        "procslice_services[api].package: both source and wheel are set; set exactly one"
    )


def test_error_unknown_package_kind() -> None:
    message = one_error(services=[gunicorn(package={"wheel": "a.whl", "git": "x"})])
    assert message.startswith("procslice_services[api].package.git: unknown key")


def test_podman_needs_neither_package_nor_app() -> None:
    assert errors(services=[{"name": "proxy", "model": "podman", "image": "nginx"}]) == []


@pytest.mark.parametrize("value", [0, -1, "many", 1.5, True])
def test_error_workers_not_auto_nor_a_positive_int(value: Any) -> None:
    assert one_error(services=[gunicorn(workers=value)]).startswith(
        "procslice_services[api].workers: "
    )


def test_error_workers_above_the_service_tasks_max() -> None:
    message = one_error(services=[gunicorn(workers=20, limits={"tasks_max": 16})])
    assert message == (
        "procslice_services[api].workers: 20 workers need 24 tasks (1 task each + 4 for the "
        "master) but procslice_services[api].limits.tasks_max is 16; lower workers (at most "
        "12), use auto, or raise tasks_max"
    )


def test_error_workers_above_the_slice_tasks_max() -> None:
    message = one_error([web_slice(tasks_max=32)], [gunicorn(slice="web", workers=30)])
    assert message.startswith("procslice_services[api].workers: 30 workers need 34 tasks")
    assert "procslice_slices[web].tasks_max is 32" in message


def test_error_workers_count_gthread_threads() -> None:
    svc = gunicorn(workers=4, worker_class="gthread", threads=8, limits={"tasks_max": 32})
    message = one_error(services=[svc])
    assert "4 workers need 40 tasks (9 tasks each + 4 for the master)" in message


def test_workers_within_tasks_max_are_fine() -> None:
    assert errors(services=[gunicorn(workers=12, limits={"tasks_max": 16})]) == []


def test_error_services_of_a_slice_need_more_tasks_together() -> None:
    message = one_error(
        [web_slice(tasks_max=36)],
        [
            gunicorn(slice="web", workers=20, listen=["0.0.0.0:1"]),
            gunicorn(name="admin", slice="web", workers=10, listen=["0.0.0.0:2"]),
        ],
    )
    assert message == (
        "procslice_slices[web].tasks_max: 36 is below the 38 tasks its services' workers "
        "need together (api 24 + admin 14); raise it or lower their workers"
    )


def test_error_threads_with_the_sync_worker() -> None:
    assert one_error(services=[gunicorn(worker_class="sync", threads=4)]).startswith(
        "procslice_services[api].threads: threads only applies to worker_class gthread"
    )


def test_error_asgi_app_with_a_sync_worker() -> None:
    assert one_error(services=[gunicorn(interface="asgi", worker_class="sync")]).startswith(
        "procslice_services[api].worker_class: sync workers cannot serve an asgi app"
    )


def test_error_unknown_worker_class() -> None:
    assert one_error(services=[gunicorn(worker_class="gevent")]).startswith(
        'procslice_services[api].worker_class: "gevent" is not a worker class'
    )


def test_threads_on_other_models_are_fine() -> None:
    assert errors(services=[gunicorn(model="aio", threads=8)]) == []


@pytest.mark.parametrize("key", ["timeout", "max_requests", "preload"])
def test_error_gunicorn_setting_of_the_wrong_type(key: str) -> None:
    assert one_error(services=[gunicorn(**{key: "soon"})]).startswith(
        f"procslice_services[api].{key}: "
    )


@pytest.mark.parametrize("value", [0, -1, "ten"])
def test_error_health_timeout_not_positive(value: Any) -> None:
    assert one_error(services=[gunicorn(health={"timeout": value})]).startswith(
        "procslice_services[api].health.timeout: "
    )


def test_error_health_http_without_listen() -> None:
    assert one_error(services=[gunicorn(health={"http": "/healthz"})]).startswith(
        "procslice_services[api].health.http: the service does not listen"
    )


def test_error_health_http_not_a_path() -> None:
    assert one_error(
        services=[gunicorn(listen=["0.0.0.0:1"], health={"http": "healthz"})]
    ).startswith('procslice_services[api].health.http: "healthz" is not a URL path')


@pytest.mark.parametrize("name", ["1BAD", "LOG-LEVEL", "A B"])
def test_error_env_name_not_an_environment_name(name: str) -> None:
    assert one_error(services=[gunicorn(env={name: "x"})]).startswith(
        f"procslice_services[api].env.{name}: "
    )


def test_error_env_value_not_a_scalar_or_multiline() -> None:
    found = errors(services=[gunicorn(env={"A": {"b": 1}, "B": "x\ny"})])
    assert [m.split(":")[0] for m in found] == [
        "procslice_services[api].env.A",
        "procslice_services[api].env.B",
    ]


def test_error_bad_service_state() -> None:
    assert one_error(services=[gunicorn(state="stopped")]) == (
        'procslice_services[api].state: "stopped" is not a state; use present or absent'
    )


def test_error_bad_slice_state() -> None:
    assert one_error([{"name": "web", "state": "on"}]).startswith(
        'procslice_slices[web].state: "on" is not a state'
    )


@pytest.mark.parametrize(
    ("data", "path", "canonical"),
    [
        ({"cpus": 1, "cpu_quota": "100%"}, "procslice_slices[web].cpus", "cpu_quota"),
        ({"memory": "1G", "memory_max": "1G"}, "procslice_slices[web].memory", "memory_max"),
        ({"pids_limit": 1, "tasks_max": 1}, "procslice_slices[web].pids_limit", "tasks_max"),
        ({"cpuset": "0", "allowed_cpus": "0"}, "procslice_slices[web].cpuset", "allowed_cpus"),
        (
            {"device_read_bps": {}, "io_read_bandwidth_max": {}},
            "procslice_slices[web].device_read_bps",
            "io_read_bandwidth_max",
        ),
        (
            {"reservations": {"memory": "1G"}, "memory_low": "1G"},
            "procslice_slices[web].reservations.memory",
            "memory_low",
        ),
        (
            {"reservations": {"cpus": 1}, "cpu_weight": 100},
            "procslice_slices[web].reservations.cpus",
            "cpu_weight",
        ),
    ],
)
def test_error_compose_alias_and_canonical_key_both_set(
    data: dict[str, Any], path: str, canonical: str
) -> None:
    message = one_error([{"name": "web", **data}])
    assert message.startswith(f"{path}: ")
    assert f"compose spelling of {canonical}" in message


def test_error_compose_alias_and_canonical_in_service_limits() -> None:
    message = one_error(services=[gunicorn(limits={"memory": "1G", "memory_max": "1G"})])
    assert message.startswith("procslice_services[api].limits.memory: memory is the compose")


def test_error_slice_name_that_would_nest_in_another_slice() -> None:
    message = one_error([{"name": "web"}, {"name": "web-api"}])
    assert message.startswith('procslice_slices[web-api].name: "web-api" would nest inside')


def test_dashed_slice_name_without_its_prefix_slice_is_fine() -> None:
    assert errors([{"name": "web-api"}]) == []


def test_error_data_not_a_list() -> None:
    assert one_error(services={"api": gunicorn()}).startswith("procslice_services: {")


def test_error_entry_not_a_mapping() -> None:
    assert one_error(["web"]).startswith('procslice_slices[0]: "web" is not a mapping')


def test_absent_service_needs_no_package_app_or_listen() -> None:
    assert errors(services=[{"name": "old", "model": "gunicorn", "state": "absent"}]) == []


def test_errors_are_collected_not_stopped_at_the_first() -> None:
    found = errors(
        [{"name": "web", "memory_max": "lots"}],
        [gunicorn(model="uwsgi", workers=0, state="gone")],
    )
    assert len(found) == 4


# ---- aio and swoole --------------------------------------------------------------------


def supervisor(model: str = "swoole", **extra: Any) -> dict[str, Any]:
    return gunicorn(model=model, listen=["127.0.0.1:8003"], **extra)


def test_supervisor_keys_match_the_runtime_config() -> None:
    from dataclasses import fields

    from procslice import config

    runtime = {f.name for f in fields(config.ServiceConfig)}
    ours = set(ps.AIO_KEYS) | set(ps.SWOOLE_KEYS)
    assert ours <= runtime
    assert set(ps.SWOOLE_KEYS) == set(config.SWOOLE_ONLY)
    # the runtime's defaults are the filter's
    defaults = config.ServiceConfig()
    for key, value in {**ps.AIO_DEFAULTS, **ps.SWOOLE_DEFAULTS}.items():
        expected = getattr(defaults, key)
        if key == "memory_limit":
            assert (value, expected) == ("auto", None)
        elif isinstance(expected, tuple):  # a TOML list
            assert value == list(expected), key
        else:
            assert value == expected, key
    assert defaults.threads == ps.SUPERVISOR_THREADS
    assert ps.LOG_LEVELS == config.LOG_LEVELS


def test_aio_gets_the_runtime_defaults_and_no_swoole_keys() -> None:
    svc = service(supervisor("aio"))
    assert {k: svc[k] for k in ps.AIO_DEFAULTS} == ps.AIO_DEFAULTS
    assert svc["threads"] == 8
    assert not set(ps.SWOOLE_KEYS) & set(svc)


def test_swoole_gets_the_runtime_defaults() -> None:
    svc = service(supervisor())
    assert {k: svc[k] for k in ps.SWOOLE_DEFAULTS} == ps.SWOOLE_DEFAULTS
    assert svc["memory_limit_bytes"] is None
    assert service(supervisor(memory_limit="200M"))["memory_limit_bytes"] == 200 * M
    assert service(supervisor(memory_limit=0))["memory_limit_bytes"] == 0


def test_gunicorn_gets_no_supervisor_keys() -> None:
    svc = service(gunicorn())
    assert not (set(ps.AIO_KEYS) | set(ps.SWOOLE_KEYS)) & set(svc)


@pytest.mark.parametrize("key", ["task_worker_num", "memory_limit", "cpu_affinity"])
def test_error_swoole_key_on_a_gunicorn_service(key: str) -> None:
    value = {"task_worker_num": 2, "memory_limit": "200M", "cpu_affinity": True}[key]
    message = one_error(services=[gunicorn(**{key: value})])
    assert message.startswith(f"procslice_services[api].{key}: is a swoole setting; ")


def test_error_task_workers_on_gunicorn_says_use_swoole() -> None:
    message = one_error(services=[gunicorn(task_worker_num=2)])
    assert "gunicorn has no task workers; use model: swoole" in message


def test_error_max_request_on_gunicorn_points_to_max_requests() -> None:
    assert "max_requests" in one_error(services=[gunicorn(max_request=1000)])


def test_error_swoole_key_on_an_aio_service() -> None:
    message = one_error(services=[supervisor("aio", task_worker_num=2)])
    assert message.startswith("procslice_services[api].task_worker_num: is a swoole setting;")
    assert "use model: swoole" in message


def test_error_supervisor_key_on_a_gunicorn_service() -> None:
    message = one_error(services=[gunicorn(max_wait_time=10)])
    assert message.startswith("procslice_services[api].max_wait_time: is an aio and swoole setting")
    assert "graceful_timeout" in message


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_error_gunicorn_key_on_a_supervisor_service(model: str) -> None:
    message = one_error(services=[supervisor(model, max_requests=1000)])
    assert message.startswith("procslice_services[api].max_requests: is a gunicorn setting;")
    assert "max_request" in message


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_error_wsgi_on_a_supervisor_service(model: str) -> None:
    message = one_error(services=[supervisor(model, interface="wsgi")])
    assert message.startswith(f"procslice_services[api].interface: procslice {model} serves")
    assert "model gunicorn" in message


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("max_request", -1, "is not valid; write an integer, 0 or more"),
        ("max_concurrency", "lots", "is not valid"),
        ("memory_limit", "2 gigs", "is not a memory limit; write auto"),
        ("cpu_affinity", [0, 1], "is not true or false; true pins worker i"),
        ("tcp_nodelay", "yes", "is not true or false"),
        ("max_wait_time", "soon", "is not a number of seconds"),
        ("keepalive_timeout", 0, "is not a number of seconds above 0"),
        ("forwarded_allow_ips", "10.0.0.5", "is not a list; write a list of the proxies'"),
        ("metrics_listen", "localhost:9100", "is not an address"),
        ("log_level", "loud", "is not a log level"),
    ],
)
def test_error_supervisor_setting_of_the_wrong_type(key: str, value: Any, text: str) -> None:
    message = one_error(services=[supervisor(**{key: value})])
    assert message.startswith(f"procslice_services[api].{key}: {ps._show(value)} {text}")


def test_forwarded_allow_ips_names_the_bad_entry() -> None:
    message = one_error(services=[supervisor(forwarded_allow_ips=["10.0.0.5", "lb.internal"])])
    assert message.startswith(
        'procslice_services[api].forwarded_allow_ips: ["10.0.0.5", "lb.internal"] has '
        '"lb.internal", which is not an IP address or network;'
    ), message
    assert errors(services=[supervisor(forwarded_allow_ips=["10.0.0.0/8", "*"])]) == []


def test_cpu_affinity_true_with_slice_allowed_cpus_is_fine() -> None:
    data = supervisor(slice="web", cpu_affinity=True)
    assert errors([web_slice(allowed_cpus="0-1")], [data]) == []


def test_error_max_request_grace_without_max_request() -> None:
    message = one_error(services=[supervisor(max_request_grace=100)])
    assert message.startswith("procslice_services[api].max_request_grace: only spreads")


def test_error_memory_limit_above_the_service_memory_max() -> None:
    data = supervisor(memory_limit="300M", limits={"memory_max": "256M"})
    message = one_error(services=[data])
    assert message.startswith(
        "procslice_services[api].memory_limit: 300M is not below "
        "procslice_services[api].limits.memory_max (256M)"
    )
    assert "OOM-kill" in message


def test_error_memory_limit_above_the_slice_memory_max() -> None:
    data = supervisor(slice="web", memory_limit="3G")
    message = one_error([web_slice()], [data])
    assert message.startswith(
        "procslice_services[api].memory_limit: 3G is not below procslice_slices[web].memory_max"
    )


def test_memory_limit_auto_or_below_memory_max_is_fine() -> None:
    for limit in ("auto", "100M", 0):
        data = supervisor(memory_limit=limit, limits={"memory_max": "256M"})
        assert errors(services=[data]) == []


def test_error_metrics_listen_on_its_own_listen_port() -> None:
    message = one_error(services=[supervisor(metrics_listen="127.0.0.1:8003")])
    assert message.startswith("procslice_services[api].metrics_listen: 127.0.0.1:8003 is one")


def test_error_metrics_listen_collides_with_another_service() -> None:
    other = supervisor(metrics_listen="127.0.0.1:9000")
    mine = gunicorn(name="web", listen=["0.0.0.0:9000"])
    message = one_error(services=[other, mine])
    assert message.startswith("procslice_services[web].listen: 0.0.0.0:9000 collides with")


def test_supervisor_workers_count_their_threads_and_task_workers() -> None:
    # 2 workers x (8 threads + 1) + 2 task workers + 4 = 24 tasks
    fits = supervisor(workers=2, task_worker_num=2, limits={"tasks_max": 24})
    assert errors(services=[fits]) == []
    tight = supervisor(workers=2, task_worker_num=2, limits={"tasks_max": 23})
    assert one_error(services=[tight]).startswith("procslice_services[api].workers: 2 workers")


@pytest.mark.parametrize(
    "listen,url",
    [
        ("0.0.0.0:8000", "http://127.0.0.1:8000/healthz"),
        ("[::]:8000", "http://[::1]:8000/healthz"),
        ("10.0.0.5:9000", "http://10.0.0.5:9000/healthz"),
        ("[fd00::1]:9000", "http://[fd00::1]:9000/healthz"),
    ],
)
def test_health_url_probes_a_wildcard_listen_on_loopback(listen: str, url: str) -> None:
    service = {
        "name": "api",
        "model": "gunicorn",
        "app": "a:b",
        "package": {"source": "x"},
        "listen": [listen],
    }
    (normalized,) = ps.procslice_normalize_services([service])
    assert normalized["health"]["url"] == url


# ---- build variants --------------------------------------------------------------------


def test_one_service_name_from_two_packages_is_built_twice_and_each_host_gets_its_own() -> None:
    old = ps.procslice_normalize_services([gunicorn()])
    new = ps.procslice_normalize_services(
        [gunicorn(package={"wheel": "files/api-2.0-py3-none-any.whl"})]
    )
    variants = ps.procslice_build_variants(old + old + new)
    assert [v["name"] for v in variants] == ["api", "api"]
    keys = [v["build_key"] for v in variants]
    assert len(set(keys)) == 2 and all(key.startswith("api@") for key in keys)
    built = {key: {"hash": key[-4:]} for key in keys}
    assert ps.procslice_build_pick(built, old) == {"api": built[keys[0]]}
    assert ps.procslice_build_pick(built, new) == {"api": built[keys[1]]}


def test_a_build_key_ignores_what_does_not_go_into_the_wheelhouse() -> None:
    one = service(gunicorn(env={"A": "1"}))
    two = service(gunicorn(env={"A": "2"}, listen=["127.0.0.1:9000"]))
    assert ps.procslice_build_key(one) == ps.procslice_build_key(two)
    assert ps.procslice_build_key(one) != ps.procslice_build_key(service(gunicorn(model="aio")))


# ---- directories -------------------------------------------------------------------------


def test_directories_state_with_subdirectories_cache_and_logs() -> None:
    svc = service(gunicorn(directories={"state": ["uploads", "media/thumbs"], "logs": True}))
    assert svc["directories"] == {"state": ["media/thumbs", "uploads"], "logs": []}
    assert svc["purge"] is False
    assert service(gunicorn())["directories"] == {}


@pytest.mark.parametrize(
    ("directories", "problem"),
    [
        ({"state": "uploads"}, 'directories.state: "uploads" is not true or a list'),
        ({"state": ["../etc"]}, "is not a relative subdirectory"),
        ({"state": ["/abs"]}, "is not a relative subdirectory"),
        ({"data": True}, "directories.data: unknown key"),
        ("yes", "is not a mapping; write {state: [uploads]}"),
    ],
)
def test_bad_directories_are_refused(directories: Any, problem: str) -> None:
    assert problem in one_error(services=[gunicorn(directories=directories)])


def test_directories_on_podman_or_a_reserved_name_are_refused() -> None:
    podman = {"name": "proxy", "model": "podman", "image": "nginx", "directories": {"state": True}}
    assert "keeps its data in volumes" in one_error(services=[podman])
    assert "procslice keeps its own files in /var/lib/procslice/front" in one_error(
        services=[gunicorn(name="front", directories={"cache": True})]
    )
    assert 'purge: "yes" is not true or false' in one_error(services=[gunicorn(purge="yes")])


# ---- inventory layers --------------------------------------------------------------------


def test_layers_merge_by_name_in_the_order_of_their_variable_names() -> None:
    base = [gunicorn(env={"A": "1", "B": "1"}, limits={"memory_max": "1G"}), gunicorn("web")]
    layers = {
        "procslice_services__90_host": [{"name": "api", "env": {"B": "2"}, "listen": ["::1:1"]}],
        "procslice_services__10_more": [gunicorn("extra"), {"name": "api", "workers": 3}],
    }
    merged = ps.procslice_layers(base, layers)
    assert [item["name"] for item in merged["items"]] == ["api", "web", "extra"]
    api = merged["items"][0]
    assert api["env"] == {"A": "1", "B": "2"}  # mappings key by key
    assert api["limits"] == {"memory_max": "1G"} and api["workers"] == 3
    assert api["listen"] == ["::1:1"]  # lists replaced
    assert merged["origins"]["api"]["env"] == "procslice_services__90_host"
    assert merged["origins"]["api"]["app"] == "procslice_services"
    assert merged["errors"] == []
    assert base[0]["env"] == {"A": "1", "B": "1"}  # the inventory's data is not changed


def test_a_refused_field_names_the_layer_that_set_it() -> None:
    origins = {"api": {"limits": "procslice_services__90_host", "app": "procslice_services"}}
    messages = [
        "procslice_services[api].limits.memory_max: 64G is above the slice's",
        "procslice_services[api].app: missing",
        "procslice_slices[web].memory_max: bad",
    ]
    named = ps.procslice_errors_with_layers(messages, origins, "procslice_services")
    assert named[0].endswith("(set in procslice_services__90_host)")
    assert named[1:] == messages[1:]


# ---- unix sockets in listen --------------------------------------------------------------

SOCKET_HINT = 'write an absolute path (e.g. "unix:/run/procslice/api/http.sock")'


@pytest.mark.parametrize("model", ["gunicorn", "aio", "swoole"])
def test_unix_listen_is_accepted_with_the_service_as_socket_owner(model: str) -> None:
    normalized = service(gunicorn(model=model, listen=["unix:/run/procslice/api/http.sock"]))
    assert normalized["listen"] == ["unix:/run/procslice/api/http.sock"]
    assert normalized["unix_listen"] == ["/run/procslice/api/http.sock"]
    assert normalized["ports"] == []
    assert (normalized["socket_user"], normalized["socket_group"], normalized["socket_mode"]) == (
        "procslice-api",
        "procslice-api",
        "0660",
    )


def test_socket_owner_and_mode_are_settable() -> None:
    normalized = service(
        gunicorn(
            listen=["unix:/run/procslice/api/http.sock"],
            socket_user="procslice-api",
            socket_group="www-data",
            socket_mode="660",
        )
    )
    assert (normalized["socket_group"], normalized["socket_mode"]) == ("www-data", "0660")


@pytest.mark.parametrize(
    "listen,message",
    [
        (
            "unix:run/api.sock",
            '"unix:run/api.sock": "run/api.sock" is a relative path (systemd binds it before '
            f"the service has a working directory); {SOCKET_HINT}",
        ),
        ("unix:", f'"unix:" has no path after unix:; {SOCKET_HINT}'),
        (
            "unix:/" + "a" * 107,
            f'"unix:/{"a" * 107}": the path is 108 bytes, over the 107 a unix socket address '
            "holds; use a shorter path (e.g. under /run/procslice/)",
        ),
    ],
)
def test_bad_unix_listen_names_the_entry_and_the_fix(listen: str, message: str) -> None:
    assert one_error(services=[gunicorn(listen=[listen])]) == (
        f"procslice_services[api].listen[0]: {message}"
    )


def test_a_path_of_exactly_107_bytes_fits_sun_path() -> None:
    assert errors(services=[gunicorn(listen=["unix:/" + "a" * 106])]) == []


def test_two_services_on_one_unix_socket_are_refused() -> None:
    assert one_error(
        services=[
            gunicorn(listen=["unix:/run/x.sock"]),
            gunicorn("web", listen=["unix:/run/x.sock"]),
        ]
    ) == (
        "procslice_services[web].listen[0]: unix:/run/x.sock is also "
        "procslice_services[api].listen[0]; give each service a socket of its own "
        "(e.g. unix:/run/procslice/web/http.sock)"
    )


def test_unix_listen_on_podman_is_refused() -> None:
    assert one_error(services=[podman(listen=["unix:/run/x.sock"])]) == (
        'procslice_services[proxy].listen[0]: "unix:/run/x.sock": a podman service cannot '
        "listen on a unix socket (its ports are published by podman); publish a port with "
        'ports (e.g. "127.0.0.1:8080:80") or run the app under gunicorn, aio or swoole'
    )


def test_unquoted_socket_mode_is_refused() -> None:
    assert one_error(services=[gunicorn(listen=["unix:/run/x.sock"], socket_mode=660)]) == (
        "procslice_services[api].socket_mode: 660 is not an octal mode; write it quoted, "
        'e.g. "0660"'
    )


@pytest.mark.parametrize(
    "health,url",
    [
        ({}, "http+unix://%2Frun%2Fprocslice%2Fapi%2Fhttp.sock/healthz"),
        ({"tcp": True}, "unix://%2Frun%2Fprocslice%2Fapi%2Fhttp.sock"),
    ],
)
def test_health_url_of_a_unix_listen_names_the_socket(health: dict[str, Any], url: str) -> None:
    normalized = service(
        gunicorn(listen=["unix:/run/procslice/api/http.sock", "127.0.0.1:8000"], health=health)
    )
    assert normalized["health"]["url"] == url


def test_front_leaves_out_a_unix_only_service_with_a_note() -> None:
    front = _front_filters()
    services = ps.procslice_normalize_services(
        [
            gunicorn(listen=["unix:/run/procslice/api/http.sock"]),
            gunicorn("web", listen=["0.0.0.0:8001"]),
        ]
    )
    assert [f["name"] for f in front.procslice_front_frontends(services)] == ["web"]
    assert front.procslice_front_left_out(services) == [
        "procslice_services[api] listens only on unix sockets (/run/procslice/api/http.sock), "
        "which the front host cannot reach: it is left out of the front; add an IP:port to "
        "its listen to put it in"
    ]


def _front_filters() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "procslice_front", Path(__file__).resolve().parents[1] / "plugins/filter/procslice_front.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- metrics and StatsD (gunicorn, aio, swoole) ---------------------------------------


@pytest.mark.parametrize("model", ["gunicorn", "aio", "swoole"])
def test_metrics_and_statsd_defaults(model: str) -> None:
    svc = service(supervisor(model=model))
    assert (svc["metrics_listen"], svc["request_metrics"]) == ("", True)
    assert (svc["statsd"], svc["statsd_tags"]) == ("", False)
    assert svc["statsd_prefix"] == "api"  # the service's name


def test_gunicorn_takes_metrics_listen_and_statsd() -> None:
    svc = service(
        gunicorn(
            listen=["0.0.0.0:8000"],
            metrics_listen="127.0.0.1:9004",
            request_metrics=False,
            statsd="127.0.0.1:8125",
            statsd_prefix="prod.api",
        )
    )
    assert svc["metrics_listen"] == "127.0.0.1:9004"
    assert svc["request_metrics"] is False
    assert (svc["statsd"], svc["statsd_prefix"]) == ("127.0.0.1:8125", "prod.api")


def test_statsd_tags_make_the_service_a_tag_instead_of_a_prefix() -> None:
    svc = service(supervisor(statsd="[::1]:8125", statsd_tags=True))
    assert (svc["statsd"], svc["statsd_prefix"], svc["statsd_tags"]) == ("[::1]:8125", "", True)
    assert service(supervisor(statsd_tags=True, statsd_prefix="web"))["statsd_prefix"] == "web"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("localhost:8125", '"localhost" is not an IP address (the runtimes look no name up'),
        ("statsd.internal:8125", '"statsd.internal" is not an IP address'),
        ("127.0.0.1", "is not IP:port; write"),
        ("127.0.0.1:0", "the port must be 1 to 65535"),
        ("::1:8125", "write an IPv6 address in brackets"),
        (8125, "is not IP:port; write"),
    ],
)
@pytest.mark.parametrize("model", ["gunicorn", "aio"])
def test_error_statsd_not_an_address_names_the_key_and_the_fix(
    value: Any, why: str, model: str
) -> None:
    message = one_error(services=[supervisor(model=model, statsd=value)])
    assert message.startswith(f"procslice_services[api].statsd: {ps._show(value)} is not IP:port")
    assert why in message
    assert message.endswith('e.g. statsd: "127.0.0.1:8125", or "" for none')


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("statsd_prefix", "api..web", "is not a StatsD prefix; write dot-separated parts"),
        ("statsd_prefix", "api web", "is not a StatsD prefix"),
        ("statsd_prefix", 7, "is not a StatsD prefix"),
        ("statsd_tags", "yes", "is not true or false"),
        ("request_metrics", "off", "is not true or false"),
        ("metrics_listen", "localhost:9100", "is not an address"),
    ],
)
def test_error_metrics_setting_of_the_wrong_type(key: str, value: Any, text: str) -> None:
    message = one_error(services=[gunicorn(**{key: value})])
    assert message.startswith(f"procslice_services[api].{key}: {ps._show(value)} {text}")


@pytest.mark.parametrize("key", ["request_metrics", "statsd", "statsd_tags"])
def test_error_metrics_keys_on_a_podman_service(key: str) -> None:
    value = {"request_metrics": True, "statsd_tags": True}.get(key, "127.0.0.1:9100")
    data = {"name": "proxy", "model": "podman", "image": "docker.io/library/nginx:1.27", key: value}
    message = one_error(services=[data])
    assert message.startswith(
        f"procslice_services[proxy].{key}: is a gunicorn, aio and swoole setting; "
        "a podman service's app runs"
    )
    assert message.endswith("remove it")


def test_a_podman_services_metrics_listen_is_where_its_image_serves_metrics() -> None:
    # One of the container's published ports: the app's own /metrics, which the host's
    # exporter passes on; no bind of procslice's, so no port collision with `ports`.
    data = {
        "name": "proxy",
        "model": "podman",
        "image": "docker.io/library/nginx:1.27",
        "ports": ["127.0.0.1:8004:8000"],
        "metrics_listen": "127.0.0.1:8004",
    }
    assert errors(services=[data]) == []
    svc = service(data)
    assert svc["metrics_listen"] == "127.0.0.1:8004"
    assert "_metrics_bind" not in svc and "statsd" not in svc
    off = service({k: v for k, v in data.items() if k != "metrics_listen"})
    assert off["metrics_listen"] == ""
    message = one_error(services=[dict(data, metrics_listen="localhost:8004")])
    assert message.startswith('procslice_services[proxy].metrics_listen: "localhost:8004" is not')


def test_error_gunicorn_metrics_listen_on_its_own_listen_port() -> None:
    data = gunicorn(listen=["0.0.0.0:8000"], metrics_listen="127.0.0.1:8000")
    message = one_error(services=[data])
    assert message.startswith("procslice_services[api].metrics_listen: 127.0.0.1:8000 is one")


def test_metrics_keys_reach_the_runtime_config() -> None:
    from dataclasses import fields

    from procslice import config

    runtime = {f.name for f in fields(config.ServiceConfig)}
    # statsd_tags is a flag here; the runtime takes the tags themselves (dogstatsd_tags)
    assert set(ps.METRICS_KEYS) - {"statsd_tags"} <= runtime
    assert "dogstatsd_tags" in runtime


def test_layer_vars_name_each_host_with_layers_and_its_layer_variables() -> None:
    hostvars = {
        "a": {"procslice_services": [], "procslice_services__90_host": [], "x": 1},
        "b": {
            "procslice_services": [],
            "procslice_slices__10_common": [],
            "procslice_services__": [],
        },
        "c": {"procslice_services": [], "procslice_service__typo": []},
    }
    assert ps.procslice_layer_vars(["a", "b", "c"], hostvars) == [
        {
            "host": "a",
            "procslice_services": ["procslice_services__90_host"],
            "procslice_slices": [],
        },
        {
            "host": "b",
            "procslice_services": [],
            "procslice_slices": ["procslice_slices__10_common"],
        },
    ]
    assert ps.procslice_layer_vars(["c"], hostvars) == []
