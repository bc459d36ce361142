"""The table of keys (src/procslice/data/keys.py) and what is made from it: the
argument specs and the docs (scripts/keys.py), procslice.toml and the runtime's
config (procslice.config), the filter's checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from filter_plugin import load_file, ps

from procslice import config
from procslice.data import keys as table
from procslice_controller.settings_file import procslice_toml, toml_value

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "keys.py"


def _script() -> ModuleType:
    return load_file("procslice_keys_script", SCRIPT)


def test_the_generated_files_are_current() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_check_names_a_file_whose_block_was_edited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script()
    docs = tmp_path / "data-model.md"
    docs.write_text(script.DOCS.read_text().replace("| `max_request` |", "| `max_requests` |"))
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(
        script, "BLOCKS", ((docs, "<!-- BEGIN KEYS", "<!-- END KEYS", script.render_docs),)
    )
    assert script.main(["--check"]) == 1
    assert "keys: data-model.md differs from src/procslice/data/keys.py" in (
        capsys.readouterr().err
    )
    # writing rewrites the block (then renders the role docs, which are current)
    assert script.main([]) == 0
    assert "| `max_request` |" in docs.read_text()


def test_a_key_added_to_the_table_reaches_the_spec_the_docs_and_the_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new = table.Key(
        "accept_backlog",
        "int",
        "Connections the kernel queues before the workers accept them.",
        default=2048,
        models=table.SUPERVISOR,
        check=table.checks.positive_int,
        toml=True,
    )
    monkeypatch.setattr(table, "SERVICE", (*table.SERVICE, new))
    monkeypatch.setitem(table.SERVICE_KEYS, new.name, new)
    monkeypatch.setitem(table.KEYS, new.name, new)
    script = _script()
    spec = yaml.safe_load(textwrap.dedent(script.render_specs()))
    assert spec["procslice_services"]["options"]["accept_backlog"] == {
        "type": "int",
        "default": 2048,
        "description": "aio and swoole; Connections the kernel queues before the workers "
        "accept them.",
    }
    assert "| `accept_backlog` | int | `2048` | aio and swoole |" in script.render_docs()
    assert "accept_backlog = 2048" in procslice_toml(
        {"model": "aio", "name": "api", "accept_backlog": 2048}
    )


def test_the_runtime_config_is_the_tables_toml_keys() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(config.ServiceConfig)}
    fields.pop("source")
    assert set(fields) == {key.name for key in table.runtime_keys()}
    assert fields["max_request"] == table.KEYS["max_request"].default
    assert fields["memory_limit"] is None  # "auto"
    assert {
        "max_request",
        "max_request_grace",
        "memory_limit",
        "cpu_affinity",
        "task_worker_num",
        "task_max_request",
    } == config.SWOOLE_ONLY


def _service(**keys: Any) -> dict[str, Any]:
    entry = {
        "name": "api",
        "model": "swoole",
        "package": {"source": "examples/hello_asgi"},
        "app": "hello_asgi:app",
        "listen": ["127.0.0.1:8000"],
        **keys,
    }
    services = ps.procslice_normalize_services([entry])
    return dict(services[0])


def test_procslice_toml_is_read_back_by_the_runtime_as_written(tmp_path: Path) -> None:
    service = _service(
        max_request=500,
        max_request_grace=50,
        memory_limit="300M",
        forwarded_allow_ips=["10.0.0.5"],
        statsd="127.0.0.1:8125",
        statsd_tags=True,
        threads=3,
    )
    path = tmp_path / "procslice.toml"
    path.write_text(procslice_toml(service))
    loaded = config.load(str(path), model="swoole")
    assert loaded.max_request == 500
    assert loaded.max_request_grace == 50
    assert loaded.memory_limit == 300 * 1024**2
    assert loaded.forwarded_allow_ips == ("10.0.0.5",)
    assert loaded.statsd == "127.0.0.1:8125"
    assert loaded.dogstatsd_tags == "service:api"
    assert loaded.statsd_prefix == ""
    assert loaded.threads == 3
    assert loaded.listen == ("127.0.0.1:8000",)
    # every key the table writes for swoole is in the file, under its help
    text = path.read_text()
    for key in table.runtime_keys("swoole"):
        if key.data and key.name not in ("statsd_tags",):
            assert f"\n{key.name} = " in f"\n{text}", key.name


def test_an_aio_service_gets_no_swoole_key(tmp_path: Path) -> None:
    service = _service(model="aio")
    text = procslice_toml(service)
    assert "max_request" not in text and "memory_limit" not in text
    path = tmp_path / "procslice.toml"
    path.write_text(text)
    assert config.load(str(path), model="aio").workers is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_request", "lots"),
        ("keepalive_timeout", 0),
        ("log_level", "loud"),
        ("memory_limit", "2 gigs"),
    ],
)
def test_the_filter_and_the_runtime_refuse_a_value_with_the_same_words(
    tmp_path: Path, key: str, value: Any
) -> None:
    errors = ps.procslice_errors(
        [],
        [
            {
                "name": "api",
                "model": "swoole",
                "package": {"source": "x"},
                "app": "a:b",
                key: value,
            }
        ],
    )
    problem = next(e for e in errors if e.startswith(f"procslice_services[api].{key}: "))
    path = tmp_path / "procslice.toml"
    path.write_text(f'app = "a:b"\n{key} = {toml_value(value)}\n')
    with pytest.raises(config.ConfigError) as refused:
        config.load(str(path))
    assert problem.split(": ", 1)[1] == str(refused.value).split(": ", 2)[2]


_NARROW = [
    (key, model)
    for key in table.SERVICE
    if key.data
    for model in table.MODELS
    if not key.applies_to(model)
]


@pytest.mark.parametrize(
    ("key", "model"), _NARROW, ids=[f"{key.name}-on-{model}" for key, model in _NARROW]
)
def test_every_key_on_a_model_that_does_not_read_it_is_refused(key: table.Key, model: str) -> None:
    value = next(
        v for v in (key.default, key.runtime_default, "x") if v not in (table.MISSING, None)
    )
    entry: dict[str, Any] = {"name": "api", "model": model, key.name: value}
    if model == "podman":
        entry["image"] = "localhost/api:1"
    else:
        entry.update(package={"source": "x"}, app="a:b")
    errors = ps.procslice_errors([], [entry])
    mine = [e for e in errors if e.startswith(f"procslice_services[api].{key.name}: ")]
    owner = table.models_phrase(key.models)
    assert len(mine) == 1, errors
    assert f" {owner} setting; " in mine[0]
    assert key.elsewhere.get(model, "remove it")[-20:] in mine[0]


def test_every_limit_is_checked_by_the_table_but_the_per_device_rates() -> None:
    unchecked = {name for name, key in table.LIMIT_KEYS.items() if key.check is None}
    assert unchecked == {"io_read_bandwidth_max", "io_write_bandwidth_max"}
    quota = table.LIMIT_KEYS["cpu_quota"]
    assert quota.check and quota.compose_check
    assert quota.check("150%") == quota.compose_check(1.5) == ("150%", 150.0)
    errors = ps.procslice_errors([{"name": "web", "cpu_quota": "lots"}], [])
    assert errors == [
        'procslice_slices[web].cpu_quota: "lots" is not a CPU quota; write a percentage of '
        'one CPU (e.g. "150%")'
    ]
    errors = ps.procslice_errors([{"name": "web", "cpus": "lots"}], [])
    assert errors == [
        'procslice_slices[web].cpus: "lots" is not a number of CPUs; write a number above 0 '
        "(e.g. 1.5)"
    ]
