"""procslice.toml and command-line settings: defaults, overrides, and refusals naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from procslice import cli
from procslice.config import ConfigError, load


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "procslice.toml"
    path.write_text(text)
    return str(path)


def test_valid_file_is_read_with_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, 'app = "api:app"\nworkers = 3\nmemory_limit = "512M"\n'))
    assert config.app == "api:app"
    assert config.workers == 3
    assert config.memory_limit == 512 * 1024 * 1024
    assert config.listen == ("127.0.0.1:8000",)
    assert config.max_wait_time == 5.0


def test_auto_values_stay_auto(tmp_path: Path) -> None:
    config = load(write(tmp_path, 'app = "api:app"\nworkers = "auto"\nmemory_limit = "auto"\n'))
    assert config.workers is None and config.memory_limit is None


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'app = "api:app"\nworkers = 3\nlisten = ["0.0.0.0:80"]\n')
    config = load(path, {"workers": "5", "listen": ["127.0.0.1:9000"], "cpu_affinity": "true"})
    assert config.workers == 5
    assert config.listen == ("127.0.0.1:9000",)
    assert config.cpu_affinity is True


def test_bad_integer_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, 'app = "api:app"\nmax_request = "lots"\n'))
    assert str(error.value) == (
        'procslice.toml: max_request: "lots" is not valid; write an integer, 0 or more'
    )


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^procslice.toml: max_requests: unknown key"):
        load(write(tmp_path, 'app = "api:app"\nmax_requests = 10\n'))


def test_negative_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^procslice.toml: task_worker_num: -1 is not valid; write an integer, 0 or",
    ):
        load(write(tmp_path, 'app = "api:app"\ntask_worker_num = -1\n'))


def test_zero_workers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"workers: 0 is not a worker count; write auto or a positive"
    ):
        load(write(tmp_path, 'app = "api:app"\nworkers = 0\n'))


def test_unparsable_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r'^procslice.toml: memory_limit: "2 gigs" is not a memory limit',
    ):
        load(write(tmp_path, 'app = "api:app"\nmemory_limit = "2 gigs"\n'))


def test_unknown_interface_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r'interface: "wsgi" is not an interface .*; use one of: asgi, raw',
    ):
        load(write(tmp_path, 'app = "api:app"\ninterface = "wsgi"\n'))


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tcp_nodelay: 3 is not true or false"):
        load(write(tmp_path, 'app = "api:app"\ntcp_nodelay = 3\n'))


def test_bad_listen_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'listen: \["localhost"\] has a bad address'):
        load(write(tmp_path, 'app = "api:app"\nlisten = ["localhost"]\n'))


def test_bad_command_line_value_names_the_option() -> None:
    with pytest.raises(
        ConfigError,
        match=r'^--max-request: max_request: "lots" is not valid; write an integer',
    ):
        load(None, {"app": "api:app", "max_request": "lots"})


def test_missing_app_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"app: is required"):
        load(None, {})


def test_swoole_only_key_is_refused_for_aio(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task_worker_num: is a procslice swoole setting"):
        load(write(tmp_path, 'app = "api:app"\ntask_worker_num = 2\n'), model="aio")


def test_cli_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'app = "api:app"\nmax_request = "lots"\n')
    assert cli.main(["swoole", "--config", path]) == 2
    assert 'procslice.toml: max_request: "lots" is not valid; write an integer, 0 or more' in (
        capsys.readouterr().err
    )


def test_forwarded_allow_ips_from_file_and_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'app = "api:app"\nforwarded_allow_ips = ["10.0.0.5", "fd00::/8"]\n')
    assert load(path).forwarded_allow_ips == ("10.0.0.5", "fd00::/8")
    assert load(path, {"forwarded_allow_ips": "*"}).forwarded_allow_ips == ("*",)
    assert load(path, {"forwarded_allow_ips": "192.0.2.1, 10.0.0.0/8"}).forwarded_allow_ips == (
        "192.0.2.1",
        "10.0.0.0/8",
    )
    assert load(write(tmp_path, 'app = "api:app"\n')).forwarded_allow_ips == ()


def test_bad_forwarded_allow_ips_is_refused_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load(
            write(tmp_path, 'app = "api:app"\nforwarded_allow_ips = ["10.0.0.5", "lb.internal"]\n')
        )
    assert str(error.value) == (
        'procslice.toml: forwarded_allow_ips: ["10.0.0.5", "lb.internal"] has "lb.internal", '
        "which is not an IP address or network; write a list of the proxies' IP addresses or "
        'networks (e.g. ["10.0.0.5"]), ["*"] to trust any peer, or [] to ignore '
        "X-Forwarded-* headers"
    )
    with pytest.raises(
        ConfigError, match=r'^--forwarded-allow-ips: forwarded_allow_ips: "1.2.3" has "1.2.3"'
    ):
        load(None, {"app": "api:app", "forwarded_allow_ips": "1.2.3"})
    with pytest.raises(ConfigError, match=r"forwarded_allow_ips: 5 is not a list"):
        load(write(tmp_path, 'app = "api:app"\nforwarded_allow_ips = 5\n'))


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_keepalive_timeout_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(None, {"app": "api:app", "keepalive_timeout": value})
    assert str(error.value) == (
        f'--keepalive-timeout: keepalive_timeout: "{value}" is not a number of seconds above 0; '
        "write e.g. 5 (uvicorn's default) or 75"
    )
    assert load(None, {"app": "api:app", "keepalive_timeout": "0.5"}).keepalive_timeout == 0.5


def test_parse_app_reads_an_attribute_or_a_factory_call() -> None:
    from procslice.config import parse_app

    assert parse_app("api.main:app") == ("api.main", "app", None, {})
    assert parse_app("api:holder.app") == ("api", "holder.app", None, {})
    assert parse_app("api:create_app()") == ("api", "create_app", (), {})
    assert parse_app("api:make('prod', n=2, tags=['a'])") == (
        "api",
        "make",
        ("prod",),
        {"n": 2, "tags": ["a"]},
    )
    for bad in ("api", "api:", "api:make(os.environ)", "api:make(*a)", "a-b:app", "api:x[0]"):
        with pytest.raises(ValueError):
            parse_app(bad)
