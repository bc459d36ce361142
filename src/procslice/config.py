"""One service's supervisor settings: a TOML file plus command-line overrides, validated.

``procslice aio`` and ``procslice swoole`` share :class:`ServiceConfig`.  Values come
from, in order of precedence: command-line options, the TOML file given with
``--config``, then the defaults below.  Every value is checked at start; a bad one is
refused with a :class:`ConfigError` whose message names where it came from and the
key, e.g. ``procslice.toml: max_request: must be a non-negative integer, got 'lots'``,
and the command exits with code 2.

The TOML file holds top-level keys (no table)::

    app = "api.main:app"
    interface = "asgi"
    listen = ["127.0.0.1:8000"]
    workers = "auto"
    max_request = 10000
    max_request_grace = 1000
    memory_limit = "auto"        # or "512M", or 0 to disable
    forwarded_allow_ips = ["10.0.0.5"]  # the load balancer: trust its X-Forwarded-*
    metrics_listen = "127.0.0.1:9003"   # Prometheus metrics from the master
    statsd = "127.0.0.1:8125"           # the same figures to StatsD, once a second
    statsd_prefix = "api"
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from procslice.data import checks
from procslice.data.checks import parse_app
from procslice.data.keys import LOG_LEVELS, runtime_default, runtime_keys

__all__ = [
    "CONFIG_ERROR",
    "INTERFACES",
    "LOG_LEVELS",
    "SWOOLE_ONLY",
    "ConfigError",
    "ServiceConfig",
    "add_arguments",
    "parse_app",
    "from_args",
    "load",
]

#: Exit code for a refused configuration (argparse uses it too).
CONFIG_ERROR = 2

INTERFACES = ("asgi", "raw")
Model = Literal["aio", "swoole"]


class ConfigError(ValueError):
    """A refused setting; ``str()`` is the message for the operator."""


@dataclass(frozen=True)
class ServiceConfig:
    """Validated settings of one aio or swoole service: one field per procslice.toml
    key of the table (procslice.data.keys), its default the table's."""

    app: str = runtime_default("app")
    interface: str = runtime_default("interface")
    listen: tuple[str, ...] = runtime_default("listen")
    workers: int | None = runtime_default("workers")  # None: "auto", sized from the cgroup budget
    max_request: int = runtime_default("max_request")  # 0: never recycle on a request count
    max_request_grace: int = runtime_default("max_request_grace")
    memory_limit: int | None = runtime_default("memory_limit")  # None: "auto"; 0: off; else bytes
    cpu_affinity: bool = runtime_default("cpu_affinity")
    tcp_nodelay: bool = runtime_default("tcp_nodelay")
    task_worker_num: int = runtime_default("task_worker_num")
    task_max_request: int = runtime_default("task_max_request")
    max_wait_time: float = runtime_default("max_wait_time")
    keepalive_timeout: float = runtime_default("keepalive_timeout")
    server_header: bool = runtime_default("server_header")  # "server: uvicorn" sent
    max_concurrency: int = runtime_default("max_concurrency")  # 0: unbounded
    threads: int = runtime_default("threads")
    loop_lag_warn_ms: int = runtime_default("loop_lag_warn_ms")  # 0: no warning
    rlimit_as: int = runtime_default("rlimit_as")  # 0: leave unchanged
    rlimit_nofile: int = runtime_default("rlimit_nofile")
    metrics_listen: str = runtime_default("metrics_listen")  # "": no metrics endpoint
    request_metrics: bool = runtime_default(
        "request_metrics"
    )  # count procslice_http_* per request (interface asgi)
    statsd: str = runtime_default("statsd")  # "IP:port" of a StatsD server; "": none
    statsd_prefix: str = runtime_default("statsd_prefix")  # starts every StatsD name
    dogstatsd_tags: str = runtime_default(
        "dogstatsd_tags"
    )  # "service:api,...": DogStatsD, labels sent as tags
    forwarded_allow_ips: tuple[str, ...] = runtime_default(
        "forwarded_allow_ips"
    )  # (): X-Forwarded-* headers ignored
    log_level: str = runtime_default("log_level")
    source: str = field(default="", compare=False)  # the TOML path, for messages


# ----------------------------------------------------------------------------- checks
# Every key, its default, its check and its help come from the table of keys
# (procslice.data.keys, the ``toml`` keys); the checks take the values as TOML gives
# them. A command line gives strings: ``_from_command_line`` reads them by the key's
# type first. Two checks are the runtime's own: ``interface`` (the runtimes serve asgi
# and raw, not wsgi) and ``listen`` (started by hand, port 0 and names are fine).


_interface = checks.choice("an interface of procslice aio or swoole", *INTERFACES)


def _address(value: str) -> str:
    # Imported here: sockets imports nothing from config, but keep the dependency one-way.
    from procslice.sockets import parse_address

    parse_address(value)
    return value


def _listen(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError('is not a list of addresses; write "host:port" or "unix:/path" items')
    checked = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError('is not a list of address strings ("host:port", "unix:/path")')
        try:
            checked.append(_address(item))
        except ValueError as exc:
            raise ValueError(f"has a bad address ({exc})") from None
    return tuple(checked)


_RUNTIME_CHECKS: dict[str, checks.Check] = {"interface": _interface, "listen": _listen}
_KEYS = {key.name: key for key in runtime_keys()}
_CHECKS: dict[str, checks.Check] = {
    name: check
    for name, key in _KEYS.items()
    if (check := _RUNTIME_CHECKS.get(name) or key.check) is not None
}
_HELP: dict[str, str] = {name: key.help for name, key in _KEYS.items()}
#: Keys only the swoole master acts on; ``procslice aio`` refuses them when set.
SWOOLE_ONLY = frozenset(name for name, key in _KEYS.items() if not key.applies_to("aio"))

assert set(_KEYS) == {f.name for f in fields(ServiceConfig)} - {"source"}, (
    "ServiceConfig's fields and the table's toml keys (procslice.data.keys) differ"
)
assert set(_CHECKS) == set(_KEYS), "a procslice.toml key without a check"

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _from_command_line(key: str, text: str) -> object:
    """A command-line string as the TOML value of ``key``'s type would be."""
    kind = _KEYS[key].type
    stripped = text.strip()
    if kind == "bool" and stripped.lower() in _TRUE | _FALSE:
        return stripped.lower() in _TRUE
    if kind in ("int", "raw") and stripped.lstrip("+").isdigit():
        return int(stripped)
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            return text
    if kind == "list" and key != "listen":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check(source: str, key: str, value: object, written: object = None) -> Any:
    """The checked value; a ConfigError shows the value as written (a command line's
    string, before it was read by the key's type)."""
    try:
        return _CHECKS[key](value)
    except ValueError as exc:
        shown = checks.show(value if written is None else written)
        raise ConfigError(f"{source}: {key}: {shown} {exc}") from None


def _refuse_swoole_only(
    values: Mapping[str, object], model: Model, where: Mapping[str, str]
) -> None:
    if model != "aio":
        return
    for key in sorted(SWOOLE_ONLY & set(values)):
        raise ConfigError(
            f"{where[key]}: {key}: is a procslice swoole setting; procslice aio does not "
            "recycle, pin or run task workers (remove it, or use model swoole)"
        )


def load(
    path: str | None = None,
    overrides: Mapping[str, object] | None = None,
    model: Model = "swoole",
) -> ServiceConfig:
    """Read ``path`` (TOML; may be None), apply ``overrides`` (key -> raw value), validate.

    Override values may be strings as typed on a command line.  Raises
    :class:`ConfigError` naming the file or option and the key.
    """
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    source = ""
    if path is not None:
        source = os.path.basename(path) or path
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in _CHECKS:
                known = ", ".join(sorted(_CHECKS))
                raise ConfigError(f"{source}: {key}: unknown key (known keys: {known})")
            values[key] = _check(source, key, value)
            where[key] = source
    for key, value in (overrides or {}).items():
        if key not in _CHECKS:
            raise ConfigError(f"{key}: unknown setting")
        typed = _from_command_line(key, value) if isinstance(value, str) else value
        values[key] = _check(_option(key), key, typed, value)
        where[key] = _option(key)
    _refuse_swoole_only(values, model, where)
    if not values.get("app"):
        raise ConfigError(f'{source or "configuration"}: app: is required ("module:attribute")')
    config = replace(ServiceConfig(), source=path or "", **values)
    if config.max_request_grace and not config.max_request:
        raise ConfigError(
            f"{where['max_request_grace']}: max_request_grace: needs max_request, got "
            f"{config.max_request_grace!r} with max_request 0"
        )
    return config


def add_arguments(parser: argparse.ArgumentParser, model: Model) -> None:
    """Add ``--config``, the positional app and one ``--<key>`` option per setting."""
    parser.add_argument("app_arg", nargs="?", metavar="APP", help=_HELP["app"])
    parser.add_argument("--config", "-c", metavar="TOML", help="the service's procslice.toml")
    for key in _CHECKS:
        if model == "aio" and key in SWOOLE_ONLY:
            continue
        if key == "listen":
            parser.add_argument(
                "--listen", "-b", action="append", dest="opt_listen", help=_HELP[key]
            )
        else:
            parser.add_argument(_option(key), dest="opt_" + key, metavar="VALUE", help=_HELP[key])


def from_args(args: argparse.Namespace, model: Model) -> ServiceConfig:
    """Build the config from parsed arguments (see :func:`add_arguments`)."""
    overrides: dict[str, object] = {}
    for key in _CHECKS:
        value = getattr(args, "opt_" + key, None)
        if value is not None:
            overrides[key] = value
    if args.app_arg is not None:
        overrides.setdefault("app", args.app_arg)
    return load(args.config, overrides, model)
