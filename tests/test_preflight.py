"""The preflight play of deploy.yml, run for real against bad and good inventories.

Each case writes an inventory of two hosts in group procslice that point at closed
loopback ports (so any connection attempt would show as UNREACHABLE), puts the data in
group_vars (or host_vars) and runs `ansible-playbook deploy.yml`. A bad case must stop
in the preflight play, naming the variable, before any host is contacted; the good
cases must get past preflight on both hosts and fail only later, on the unreachable
hosts. All runs start together in one fixture, so the module takes a few seconds.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HOSTS = ("preflight-a", "preflight-b")
PREFLIGHT_CHECK = "TASK [procslice_preflight : Check the slices and services"


def _ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:  # a missing tool fails the suite, it does not skip the bad-input cases
        pytest.fail(
            "ansible-playbook not found: run the tests from the controller venv (make pytest)"
        )
    return found


# ---- the data -------------------------------------------------------------------------

SLICES: list[dict[str, Any]] = [
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
    },
    {
        "name": "batch",
        "cpus": 0.5,
        "memory": "1g",
        "reservations": {"memory": "128M", "cpus": 0.25},
        "pids_limit": 256,
        "device_read_bps": [{"path": "/dev/vda", "rate": "10mb"}],
        "cpuset": "0",
    },
]
SERVICES: list[dict[str, Any]] = [
    {
        "name": "api",
        "model": "gunicorn",
        "slice": "web",
        "package": {"wheel": "files/api-1.4.2-py3-none-any.whl"},
        "app": "api.main:create_app('prod', debug=False)",
        "interface": "asgi",
        "listen": ["0.0.0.0:8000"],
        "workers": "auto",
        "directories": {"state": ["uploads"], "cache": True, "logs": True},
        "limits": {"memory_max": "1G", "tasks_max": 128, "limit_nofile": 65536},
        "health": {"http": "/healthz", "timeout": 10},
        "env": {"LOG_LEVEL": "info"},
        "state": "present",
    },
    {
        "name": "legacy",
        "model": "gunicorn",
        "slice": "web",
        "package": {"source": "examples/hello_wsgi"},
        "app": "hello_wsgi:app",
        "listen": ["127.0.0.1:8001"],
        "workers": 4,
        "worker_class": "gthread",
        "threads": 8,
        "limits": {"cpus": 1, "memory": "512M", "pids_limit": 64, "limit_as": "4G"},
    },
    {
        "name": "queue",
        "model": "aio",
        "slice": "batch",
        "package": {"requirements": "files/queue-requirements.txt"},
        "app": "queue_worker:main",
        "interface": "raw",
        "max_concurrency": 100,
    },
    {
        "name": "edge",
        "model": "swoole",
        "package": {"source": "examples/edge"},
        "app": "edge.app:app",
        "listen": ["[::1]:8443"],
        "workers": 2,
        "max_request": 10000,
        "memory_limit": "200M",
        "task_worker_num": 2,
    },
    {
        "name": "proxy",
        "model": "podman",
        "image": "docker.io/library/nginx:1.27",
        "ports": ["8080:80"],
        "limits": {"cpus": 0.5, "memory": "256M"},
    },
    {"name": "old", "model": "gunicorn", "state": "absent"},
]

Data = dict[str, Any]


def _svc(data: Data, name: str) -> dict[str, Any]:
    return next(s for s in data["procslice_services"] if s["name"] == name)


def _slc(data: Data, name: str) -> dict[str, Any]:
    return next(s for s in data["procslice_slices"] if s["name"] == name)


def _podman_without_image(data: Data) -> None:
    del _svc(data, "proxy")["image"]


def _missing_app(data: Data) -> None:
    del _svc(data, "api")["app"]


@dataclass
class Case:
    """One ansible-playbook run."""

    mutate: Callable[[Data], None] | None = None
    expect: list[str] = field(default_factory=list)  # exact strings in the output
    host_vars: dict[str, Data] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    data: Data | None = None  # replaces the good data when given


BAD: dict[str, Case] = {
    "unknown_model": Case(
        lambda d: _svc(d, "api").update(model="uwsgi"),
        ["procslice_services[api].model", '"uwsgi" is not a model'],
    ),
    "size_2_gigs": Case(
        lambda d: _svc(d, "api")["limits"].update(memory_max="2 gigs"),
        ["procslice_services[api].limits.memory_max", '"2 gigs" is not a size'],
    ),
    "service_memory_above_slice": Case(
        lambda d: _svc(d, "api")["limits"].update(memory_max="4G"),
        [
            "procslice_services[api].limits.memory_max",
            "above its slice's procslice_slices[web].memory_max",
        ],
    ),
    "two_services_on_one_port": Case(
        lambda d: _svc(d, "legacy").update(listen=["127.0.0.1:8000"]),
        ["procslice_services[legacy].listen", "collides with procslice_services[api]"],
    ),
    "missing_app": Case(_missing_app, ["procslice_services[api].app", "missing"]),
    "unknown_slice": Case(
        lambda d: _svc(d, "api").update(slice="webb"),
        ["procslice_services[api].slice", '"webb" is not a slice'],
    ),
    "workers_above_tasks_max": Case(
        lambda d: _svc(d, "legacy").update(workers=12),
        ["procslice_services[legacy].workers", "procslice_services[legacy].limits.pids_limit"],
    ),
    "typo_in_a_key": Case(
        lambda d: _svc(d, "api")["limits"].update(memroy_max="1G"),
        ["procslice_services[api].limits.memroy_max", "did you mean memory_max?"],
    ),
    "podman_userns_not_a_range": Case(
        None,
        ["procslice_podman_userns=auto is not START:COUNT", "no host was changed"],
        args=["-e", "procslice_podman_userns=auto"],
    ),
    "activate_parallel_zero": Case(
        None,
        ["procslice_activate_parallel='0' is not a number of services", "no host was changed"],
        args=["-e", "procslice_activate_parallel=0"],
    ),
    # A variable of a role deploy.yml imports without its own check: preflight checks it.
    "plan_only_not_a_bool": Case(
        None,
        ["argument 'procslice_plan_only' is of type", "unable to convert to bool"],
        args=["-e", "procslice_plan_only=maybe"],
    ),
    "bad_listen": Case(
        lambda d: _svc(d, "api").update(listen=["localhost:8000"]),
        ["procslice_services[api].listen[0]", "is not an IPv4 address"],
    ),
    "memory_high_above_memory_max": Case(
        lambda d: _slc(d, "web").update(memory_high="3G"),
        ["procslice_slices[web].memory_high", "above procslice_slices[web].memory_max"],
    ),
    "compose_alias_and_canonical_key": Case(
        lambda d: _slc(d, "web").update(cpus=1.5),
        ["procslice_slices[web].cpus", "compose spelling of cpu_quota"],
    ),
    "bad_state": Case(
        lambda d: _svc(d, "api").update(state="stopped"),
        ["procslice_services[api].state", '"stopped" is not a state'],
    ),
    "bad_name": Case(
        lambda d: _svc(d, "edge").update(name="Edge_1"),
        ["procslice_services[Edge_1].name", '"Edge_1" is not a valid name'],
    ),
    "podman_without_image": Case(
        _podman_without_image, ["procslice_services[proxy].image", "missing"]
    ),
    "podman_image_archive_not_on_the_controller": Case(
        lambda d: _svc(d, "proxy").update(
            image="localhost/proxy:1", image_archive="files/no-such-image.tar.gz"
        ),
        [
            "procslice_services[proxy].image_archive",
            '"files/no-such-image.tar.gz" is not a file on the controller',
        ],
    ),
    "podman_image_that_cannot_be_pulled": Case(
        lambda d: _svc(d, "proxy").update(image="localhost/proxy:1", pull=True),
        ["procslice_services[proxy].image", "cannot be pulled", "built locally"],
    ),
    "podman_limit_it_cannot_express": Case(
        lambda d: _svc(d, "proxy")["limits"].update(limit_as="1G"),
        ["procslice_services[proxy].limits.limit_as", "cannot set an address-space limit"],
    ),
    "ambiguous_package": Case(
        lambda d: _svc(d, "api")["package"].update(source="src/api"),
        ["procslice_services[api].package", "both source and wheel are set"],
    ),
    "threads_with_sync_worker": Case(
        lambda d: _svc(d, "legacy").update(worker_class="sync"),
        ["procslice_services[legacy].threads", "threads only applies to worker_class gthread"],
    ),
    "bad_env_name": Case(
        lambda d: _svc(d, "api")["env"].update({"1BAD": "x"}),
        ["procslice_services[api].env.1BAD", "is not an environment variable name"],
    ),
    "typo_in_a_slice_key": Case(
        lambda d: _slc(d, "batch").update(memroy_high="1G"),
        ["procslice_slices[batch].memroy_high", "did you mean memory_high?"],
    ),
    "bad_data_on_one_host_only": Case(
        host_vars={
            HOSTS[1]: {
                "procslice_services": [{"name": "solo", "model": "gunicorn", "app": "x:app"}]
            }
        },
        expect=["procslice_services[solo].package", "missing"],
    ),
    "task_workers_on_a_gunicorn_service": Case(
        lambda d: _svc(d, "api").update(task_worker_num=2),
        ["procslice_services[api].task_worker_num", "gunicorn has no task workers"],
    ),
    "swoole_memory_limit_above_memory_max": Case(
        lambda d: _svc(d, "edge").update(limits={"memory_max": "128M"}),
        [
            "procslice_services[edge].memory_limit",
            "is not below procslice_services[edge].limits.memory_max (128M)",
        ],
    ),
    "wsgi_on_an_aio_service": Case(
        lambda d: _svc(d, "queue").update(interface="wsgi"),
        ["procslice_services[queue].interface", "procslice aio serves asgi apps"],
    ),
    "cpu_affinity_as_a_cpu_list": Case(
        lambda d: _svc(d, "edge").update(cpu_affinity=[0, 5]),
        ["procslice_services[edge].cpu_affinity", "choose the CPUs with allowed_cpus"],
    ),
    "gunicorn_max_requests_on_swoole": Case(
        lambda d: _svc(d, "edge").update(max_requests=1000),
        ["procslice_services[edge].max_requests", "is a gunicorn setting"],
    ),
    "services_not_a_list": Case(
        data={"procslice_services": {"api": {"model": "gunicorn"}}},
        # the filter's message first: it names the fix
        expect=['procslice_services: {"api": {"model": "gunicorn"}} is not a list; write a list'],
    ),
}

# Inventory layers: the fleet's services in group_vars, one more in another layer, and
# one host's change of a field in host_vars (procslice_services__* merged by name).
BAD["layer_sets_a_limit_above_the_slice"] = Case(
    host_vars={
        HOSTS[0]: {
            "procslice_services__90_host": [{"name": "api", "limits": {"memory_max": "64G"}}]
        }
    },
    expect=["procslice_services[api].limits.memory_max", "(set in procslice_services__90_host)"],
)
BAD["layer_is_not_a_list"] = Case(
    host_vars={HOSTS[1]: {"procslice_services__90_host": {"name": "api"}}},
    expect=['procslice_services__90_host: {"name": "api"} is not a list'],
)

# Metrics and StatsD: a host name where the runtimes need an IP address.
BAD["statsd_not_an_ip_address"] = Case(
    lambda d: _svc(d, "edge").update(statsd="statsd.internal:8125"),
    [
        'procslice_services[edge].statsd: "statsd.internal:8125" is not IP:port',
        'e.g. statsd: "127.0.0.1:8125"',
    ],
)

GOOD: dict[str, Case] = {
    "good_data_in_layers": Case(
        args=["--tags", "procslice_preflight", "-v"],  # -v: the assert's success message
        data={
            "procslice_slices": copy.deepcopy(SLICES),
            "procslice_services": [copy.deepcopy(SERVICES[0])],
            "procslice_services__20_more": [copy.deepcopy(SERVICES[1])],
        },
        host_vars={
            HOSTS[0]: {"procslice_services__90_host": [{"name": "api", "env": {"EXTRA": "1"}}]}
        },
    ),
    # Every model and the compose vocabulary; only the preflight tasks run (the build
    # would build real wheelhouses): no other task, so no host is contacted at all.
    "good_data_every_model": Case(args=["--tags", "procslice_preflight"]),
    # The metrics and StatsD keys on each model that takes them (the argument spec
    # documents them all).
    "good_data_metrics_and_statsd": Case(
        args=["--tags", "procslice_preflight"],
        data={
            "procslice_slices": copy.deepcopy(SLICES),
            "procslice_services": [
                {
                    **copy.deepcopy(SERVICES[0]),
                    "metrics_listen": "127.0.0.1:9004",
                    "request_metrics": True,
                    "statsd": "127.0.0.1:8125",
                    "statsd_tags": True,
                },
                {**copy.deepcopy(SERVICES[3]), "statsd": "[::1]:8125", "statsd_prefix": "edge"},
            ],
        },
    ),
    # The whole deploy.yml, untagged: podman services need no build, so the run goes
    # through preflight and the build play and stops at the unreachable hosts when the
    # plan phase asks them what they run.
    "good_data_full_run": Case(
        data={
            "procslice_slices": copy.deepcopy(SLICES),
            "procslice_services": [copy.deepcopy(SERVICES[4])],
        }
    ),
}


# ---- running ------------------------------------------------------------------------


@dataclass
class Run:
    rc: int
    out: str

    @property
    def plays(self) -> list[str]:
        return re.findall(r"^PLAY \[(.*)\] \*+$", self.out, re.MULTILINE)

    def recap(self, host: str) -> dict[str, int]:
        """The host's PLAY RECAP counts. The preflight's tasks run once for the play
        (run_once), so a host no later task reached has no recap line: all zero, but
        only if the run printed its PLAY RECAP at all."""
        section = self.out.rpartition("PLAY RECAP")
        assert section[1], f"no PLAY RECAP in the output:\n{self.out}"
        match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", section[2], re.MULTILINE)
        if match is None:
            assert re.search(r"^\S+\s+:\s+ok=", section[2], re.MULTILINE), self.out
            return dict.fromkeys(("ok", "changed", "unreachable", "failed", "skipped"), 0)
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def task_section(self, title_start: str) -> str:
        start = self.out.find(title_start)
        assert start >= 0, f"{title_start!r} not in the output:\n{self.out}"
        end = self.out.find("\nTASK [", start + 1)
        end_play = self.out.find("\nPLAY ", start + 1)
        ends = [e for e in (end, end_play) if e >= 0]
        return self.out[start : min(ends)] if ends else self.out[start:]


def _write_inventory(root: Path, case: Case) -> Path:
    data = (
        copy.deepcopy(case.data)
        if case.data is not None
        else {
            "procslice_slices": copy.deepcopy(SLICES),
            "procslice_services": copy.deepcopy(SERVICES),
        }
    )
    if case.mutate is not None:
        case.mutate(data)
    inventory = {
        "procslice": {
            "hosts": {
                HOSTS[0]: {"ansible_host": "127.0.0.1", "ansible_port": 1},
                HOSTS[1]: {"ansible_host": "127.0.0.1", "ansible_port": 9},
            },
            "vars": {"ansible_user": "nobody", "ansible_connection": "ssh"},
        }
    }
    (root / "group_vars").mkdir(parents=True)
    (root / "host_vars").mkdir()
    (root / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (root / "group_vars" / "procslice.yml").write_text(yaml.safe_dump(data))
    for host, host_data in case.host_vars.items():
        (root / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(host_data))
    return root


def run_playbook(root: Path, playbook: str, inventory: Path, args: list[str]) -> Run:
    """ansible-playbook against unreachable test hosts: short SSH timeouts, no fact
    cache, retry file or temp file written outside ``root``."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_FORKS="2",
        ANSIBLE_SSH_ARGS="-o ConnectTimeout=2 -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o BatchMode=yes",
        ANSIBLE_CACHE_PLUGIN="memory",  # no fact cache written into the repo
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCAL_TEMP=str(root / "tmp"),
    )
    proc = subprocess.run(
        [_ansible_playbook(), playbook, "-i", str(inventory), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(proc.returncode, proc.stdout)


def _run(root: Path, case: Case) -> Run:
    return run_playbook(root, "deploy.yml", _write_inventory(root / "inventory", case), case.args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    cases = {**BAD, **GOOD}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            name: pool.submit(_run, tmp_path_factory.mktemp(name), case)
            for name, case in cases.items()
        }
        return {name: future.result() for name, future in futures.items()}


# ---- the tests ----------------------------------------------------------------------


def test_there_are_enough_bad_cases() -> None:
    assert len(BAD) >= 12


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_data_stops_in_preflight_naming_the_variable(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.rc != 0, run.out
    for text in BAD[name].expect:
        assert text in run.out, f"{text!r} not in the output:\n{run.out}"
    # no host was contacted, and nothing after the preflight play ran
    assert "UNREACHABLE" not in run.out, run.out
    assert len(run.plays) == 1, run.plays
    for host in HOSTS:
        recap = run.recap(host)
        assert recap["unreachable"] == 0 and recap["changed"] == 0, recap
    assert "fatal: [" in run.out and "FAILED!" in run.out


def test_bad_data_message_lists_every_problem_one_per_line(runs: dict[str, Run]) -> None:
    section = runs["size_2_gigs"].task_section(PREFLIGHT_CHECK)
    assert "procslice preflight found 1 problem(s)" in section
    assert '- \'procslice_services[api].limits.memory_max: "2 gigs" is not a size;' in section


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_data_passes_preflight_and_fails_only_on_unreachable_hosts(
    runs: dict[str, Run], name: str
) -> None:
    run = runs[name]
    # one check for every host (run_once), the spec included, naming each host it passed
    section = run.task_section(PREFLIGHT_CHECK)
    assert f"ok: [{HOSTS[0]}]" in section, section
    passed = [line for line in section.splitlines() if "service(s) passed on" in line]
    for host in HOSTS:
        assert any(host in line for line in passed), section
    recaps = {host: run.recap(host) for host in HOSTS}
    assert all(recap["failed"] == 0 for recap in recaps.values()), (recaps, run.out)
    assert len(run.plays) > 1, run.plays
    if "--tags" in GOOD[name].args:
        # preflight alone needs no connection: the run passes without contacting a host
        assert run.rc == 0, run.out
        assert "UNREACHABLE!" not in run.out, run.out
        return
    # the run failed, and only because the hosts cannot be reached: the plan phase
    # asks every host (all at once) what it runs
    assert run.rc != 0, run.out
    assert "UNREACHABLE!" in run.out, run.out
    assert all(recap["unreachable"] == 1 for recap in recaps.values()), (recaps, run.out)


def test_services_from_every_layer_are_merged_by_name(runs: dict[str, Run]) -> None:
    section = runs["good_data_in_layers"].task_section(PREFLIGHT_CHECK)
    # api from group_vars (its env extended by host_vars on one host) and legacy from
    # another layer: two services on each host, not three. The hosts' data differ, so
    # each is checked on its own.
    passed = [line for line in section.splitlines() if "service(s) passed on" in line]
    assert len(passed) == len(HOSTS), section
    for host in HOSTS:
        assert any(f"2 service(s) passed on {host}" in line for line in passed), section


# ---- the documentation matches the filter ---------------------------------------------

ROLE = REPO / "roles" / "procslice_preflight"


def _spec() -> dict[str, Any]:
    specs: dict[str, Any] = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]  # type: ignore[no-any-return]


def _filter_module() -> Any:
    from filter_plugin import ps

    return ps


def test_argument_spec_documents_exactly_the_keys_the_filter_knows() -> None:
    ps = _filter_module()
    data = _spec()["preflight"]["options"]
    slices = data["procslice_slices"]["options"]
    services = data["procslice_services"]["options"]
    assert set(slices) == set(ps.SLICE_KEYS)
    assert set(services) == set(ps.SERVICE_KEYS)
    assert set(services["limits"]["options"]) == set(ps.SERVICE_LIMITS_KEYS)
    assert set(services["health"]["options"]) == set(ps.HEALTH_KEYS)
    assert set(services["package"]["options"]) == set(ps.PACKAGE_KINDS)
    assert services["model"]["choices"] == list(ps.MODELS)
    assert services["interface"]["choices"] == list(ps.INTERFACES)
    assert services["worker_class"]["choices"] == list(ps.WORKER_CLASSES)
    assert services["state"]["choices"] == slices["state"]["choices"] == list(ps.STATES)


def test_readme_names_every_documented_variable_and_key() -> None:
    readme = (ROLE / "README.md").read_text()
    spec = _spec()
    names = set(spec["main"]["options"])
    data = spec["preflight"]["options"]
    names |= set(data["procslice_slices"]["options"])
    names |= set(data["procslice_services"]["options"])
    names |= set(data["procslice_services"]["options"]["limits"]["options"])
    # The generated tables name a key by its path: `procslice_services.limits.cpu_quota`.
    missing = sorted(
        name for name in names if f"`{name}`" not in readme and f".{name}`" not in readme
    )
    assert missing == [], f"README.md does not mention: {missing}"
