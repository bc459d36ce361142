"""procslice_preflight: check every host's procslice data on the controller, in one task.

The checks of roles/procslice_preflight (see tasks/preflight.yml), for every host of
the play at once (run it with run_once): each host's procslice_slices and
procslice_services (after the inventory layers were merged), then, for the data that
passed, the documented argument spec (meta/argument_specs.yml, entry points main and
preflight, and the main entry point of each role named in ``roles``). Hosts with the
same data are checked once: in a fleet whose data sits in group_vars that is one check
for the whole fleet, where a task per host made each host's worker process parse the
argument specs and run the checks again.

Nothing is contacted and nothing changes. The result says which hosts each check
covered; a failure lists every problem, one per line, and the hosts that have it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

_FILTERS = Path(__file__).resolve().parent.parent / "filter" / "procslice.py"
_spec = importlib.util.spec_from_file_location("procslice_filters_for_preflight", _FILTERS)
assert _spec and _spec.loader
_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data)

# The data the checks read from each host, and what the argument spec does not cover.
_DATA = ("procslice_slices", "procslice_services")
_HEADER = (
    "procslice preflight found {count} problem(s) in the inventory data{where}; "
    "no host was changed. Fix each one (docs/data-model.md):"
)


def _plain(value: Any) -> Any:
    """Rendered, plain data (the hosts' variables come as lazy containers)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _hosts_phrase(hosts: list[str], every: int, shown: int = 10) -> str:
    names = ", ".join(hosts[:shown])
    if len(hosts) > shown:
        names += f" and {len(hosts) - shown} more"
    return f"every host ({len(hosts)}: {names})" if len(hosts) == every > 1 else names


def role_options(role_path: Path, roles: list[str]) -> dict[str, Any]:
    """The options the spec check validates: this role's main and preflight entry points,
    then the main entry point of every role in ``roles`` (sibling directories)."""
    specs = yaml.safe_load((role_path / "meta" / "argument_specs.yml").read_text())
    options: dict[str, Any] = {}
    options.update(specs["argument_specs"]["main"].get("options") or {})
    options.update(specs["argument_specs"]["preflight"].get("options") or {})
    for role in roles:
        path = role_path.parent / role / "meta" / "argument_specs.yml"
        if not path.is_file():
            raise AnsibleActionFail(
                f"procslice_preflight_roles names {role}, which has no {path}: "
                "name roles of this repository that have an argument spec"
            )
        other = yaml.safe_load(path.read_text())
        options.update(other["argument_specs"]["main"].get("options") or {})
    return options


def data_errors(host: Mapping[str, Any], base_dir: str | None) -> list[str]:
    """The filter's problems with one host's data, layer origins added, userns checked."""
    errors = list(host.get("procslice_preflight_layer_errors") or [])
    userns = str(host.get("procslice_podman_userns") or "")
    if userns and not _userns_ok(userns):
        errors.append(
            f"procslice_podman_userns={userns} is not START:COUNT: write the host uid of "
            "container uid 0 and how many uids the containers get (e.g. "
            '"2147483647:65536"), or "" for the host\'s user namespace.'
        )
    parallel = host.get("procslice_activate_parallel", 4)
    if not _positive(parallel):
        errors.append(
            f"procslice_activate_parallel={parallel!r} is not a number of services to "
            "activate at a time on a host: write 1 or more (default 4; 1 activates a "
            "host's services one after the other)."
        )
    found = _data.procslice_errors(
        host.get("procslice_slices") or [], host.get("procslice_services") or [], base_dir
    )
    origins = host.get("procslice_preflight_layer_origins") or {}
    for kind in _DATA:
        found = _data.procslice_errors_with_layers(found, origins.get(kind) or {}, kind)
    return errors + found


def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return re.fullmatch(r"0*[1-9][0-9]*", value.strip()) is not None
    return isinstance(value, int) and value >= 1


def _userns_ok(value: str) -> bool:
    return re.fullmatch(r"[0-9]+:[1-9][0-9]*", value) is not None


def spec_errors(options: dict[str, Any], provided: dict[str, Any]) -> list[str]:
    """The argument spec's problems with the values given (ansible's own validator)."""
    result = ArgumentSpecValidator(options).validate(provided)
    return list(result.error_messages)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        hosts = list(args.get("hosts") or [])
        base_dir = args.get("base_dir")
        role = self._task._role
        if role is None:
            raise AnsibleActionFail("procslice_preflight runs in the procslice_preflight role")
        options = role_options(Path(role._role_path), list(args.get("roles") or []))
        hostvars = task_vars.get("hostvars") or {}
        # each host's inputs, grouped: hosts with equal data are checked once
        groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for name in hosts:
            mine = hostvars[name]
            host = {
                key: _plain(mine[key])
                for key in (
                    *_DATA,
                    "procslice_podman_userns",
                    "procslice_activate_parallel",
                    "procslice_preflight_layer_errors",
                    "procslice_preflight_layer_origins",
                )
                if key in mine
            }
            # the spec's other options: the host's value, else this task's (role defaults)
            extra = {
                key: _plain(mine[key] if key in mine else task_vars[key])
                for key in options
                if key not in _DATA and (key in mine or key in task_vars)
            }
            key = json.dumps([host, extra], sort_keys=True, default=repr)
            groups.setdefault(key, ({"data": host, "extra": extra}, []))[1].append(name)

        problems: list[str] = []
        passed: list[str] = []
        for inputs, names in groups.values():
            host, extra = inputs["data"], inputs["extra"]
            where = "" if len(groups) == 1 else f" of {_hosts_phrase(names, len(hosts))}"
            errors = data_errors(host, base_dir)
            if errors:
                problems += [_HEADER.format(count=len(errors), where=where), *errors]
                continue
            provided = {key: host.get(key) or [] for key in _DATA} | extra
            wrong = spec_errors(options, provided)
            if wrong:
                problems += [
                    "procslice preflight: the data passed the checks but not its documented "
                    f"argument spec (roles/procslice_preflight/meta/argument_specs.yml){where}:",
                    *wrong,
                ]
                continue
            slices = len(host.get("procslice_slices") or [])
            services = len(host.get("procslice_services") or [])
            passed.append(
                f"{slices} slice(s) and {services} service(s) passed on "
                f"{_hosts_phrase(names, len(hosts))}"
            )
        # shown without -v, as assert shows its message
        result.update(changed=False, checked=len(groups), _ansible_verbose_always=True)
        if problems:
            result.update(failed=True, msg=problems)
        else:
            result["msg"] = passed
        return result
