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
import ast
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from procslice.limits import parse_size

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
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
Model = Literal["aio", "swoole"]

#: Keys only the swoole master acts on; ``procslice aio`` refuses them when set.
SWOOLE_ONLY = frozenset(
    {
        "max_request",
        "max_request_grace",
        "memory_limit",
        "cpu_affinity",
        "task_worker_num",
        "task_max_request",
    }
)


class ConfigError(ValueError):
    """A refused setting; ``str()`` is the message for the operator."""


@dataclass(frozen=True)
class ServiceConfig:
    """Validated settings of one aio or swoole service."""

    app: str = ""
    interface: str = "asgi"
    listen: tuple[str, ...] = ("127.0.0.1:8000",)
    workers: int | None = None  # None: "auto", sized from the cgroup budget
    max_request: int = 0  # 0: never recycle on a request count
    max_request_grace: int = 0
    memory_limit: int | None = None  # None: "auto"; 0: off; else bytes
    cpu_affinity: bool = False
    tcp_nodelay: bool = True
    task_worker_num: int = 0
    task_max_request: int = 0
    max_wait_time: float = 5.0
    keepalive_timeout: float = 5.0
    max_concurrency: int = 1024  # 0: unbounded
    threads: int = 8
    loop_lag_warn_ms: int = 100  # 0: no warning
    rlimit_as: int = 0  # 0: leave unchanged
    rlimit_nofile: int = 0
    metrics_listen: str = ""  # "": no metrics endpoint
    request_metrics: bool = True  # count procslice_http_* per request (interface asgi)
    statsd: str = ""  # "IP:port" of a StatsD server; "": none
    statsd_prefix: str = ""  # starts every StatsD name
    dogstatsd_tags: str = ""  # "service:api,...": DogStatsD, labels sent as tags
    forwarded_allow_ips: tuple[str, ...] = ()  # (): X-Forwarded-* headers ignored
    log_level: str = "info"
    source: str = field(default="", compare=False)  # the TOML path, for messages


# ----------------------------------------------------------------------------- checks
# Each check takes the raw value (a TOML value, or a string from the command line)
# and returns the typed value, or raises ValueError with the problem (no key, no value).


def _int_from(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        return int(value)
    raise ValueError


def _non_negative_int(value: object) -> int:
    try:
        number = _int_from(value)
    except ValueError:
        raise ValueError("must be a non-negative integer") from None
    if number < 0:
        raise ValueError("must be a non-negative integer")
    return number


def _positive_int(value: object) -> int:
    try:
        number = _int_from(value)
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if number < 1:
        raise ValueError("must be a positive integer")
    return number


def _workers(value: object) -> int | None:
    if value == "auto":
        return None
    try:
        return _positive_int(value)
    except ValueError:
        raise ValueError('must be "auto" or a positive integer') from None


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a non-negative number of seconds")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a non-negative number of seconds") from None
    else:
        raise ValueError("must be a non-negative number of seconds")
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a non-negative number of seconds")
    return number


def _positive_seconds(value: object) -> float:
    try:
        number = _seconds(value)
    except ValueError:
        raise ValueError("must be a positive number of seconds") from None
    if number == 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _size(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a size such as 512M, or 0")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a size such as 512M, or 0")
        return value
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError:
            raise ValueError("must be a size such as 512M, or 0") from None
    raise ValueError("must be a size such as 512M, or 0")


def _memory_limit(value: object) -> int | None:
    if value == "auto":
        return None
    try:
        return _size(value)
    except ValueError:
        raise ValueError('must be "auto", a size such as 512M, or 0 to disable') from None


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ValueError("must be true or false")


def parse_app(ref: str) -> tuple[str, str, tuple[Any, ...] | None, dict[str, Any]]:
    """``"module:attr.sub"`` or ``"module:factory(args)"`` -> (module, attribute path,
    the factory's positional arguments or None when it is not called, its keywords).

    A factory is called once per worker with literal arguments only (numbers, strings,
    lists, dicts...), the syntax gunicorn accepts: ``"api.main:create_app()"``,
    ``"api.main:create_app('prod', debug=False)"``. Raises ValueError."""
    module, sep, expr = ref.partition(":")
    if not sep or not module or not expr.strip():
        raise ValueError('must be "module:attribute" or "module:factory()"')
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"{module!r} is not a module path")
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"{expr!r} is not an attribute or a call of one") from None
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] = {}
    if isinstance(node, ast.Call):
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise ValueError("a factory takes literal arguments, not *args or **kwargs")
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise ValueError(
                f"{expr!r}: a factory's arguments must be literals (numbers, strings, lists, dicts)"
            ) from None
        node = node.func
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError(f"{expr!r} is not an attribute or a call of one")
    names.insert(0, node.id)
    return module, ".".join(names), args, kwargs


def _app(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError('must be "module:attribute" or "module:factory()"')
    parse_app(value)
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value

    return check


def _address(value: str) -> str:
    # Imported here: sockets imports nothing from config, but keep the dependency one-way.
    from procslice.sockets import parse_address

    parse_address(value)
    return value


def _listen(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError('must be a non-empty list of addresses ("host:port", "unix:/path")')
    checked = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError('must be a list of address strings ("host:port", "unix:/path")')
        try:
            checked.append(_address(item))
        except ValueError as exc:
            raise ValueError(f"has a bad address ({exc})") from None
    return tuple(checked)


def _metrics_listen(value: object) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or value.startswith("unix:"):
        raise ValueError('must be "host:port", or "" to disable')
    try:
        return _address(value)
    except ValueError as exc:
        raise ValueError(f'must be "host:port" ({exc})') from None


def _statsd(value: object) -> str:
    if value == "":
        return ""
    hint = 'must be "IP:port" of a StatsD server (e.g. "127.0.0.1:8125"), or "" for none'
    if not isinstance(value, str) or value.startswith("unix:"):
        raise ValueError(hint)
    try:
        _address(value)
    except ValueError as exc:
        raise ValueError(f"{hint} ({exc})") from None
    host = value.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{hint}: {host!r} is not an IP address") from None
    return value


_STATSD_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_DOGSTATSD_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*(:[A-Za-z0-9_./-]+)?$")


def _statsd_prefix(value: object) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not _STATSD_NAME.match(value):
        raise ValueError(
            'must be dot-separated parts of letters, digits, "_" and "-" (e.g. "api"), '
            'or "" for none'
        )
    return value


def _dogstatsd_tags(value: object) -> str:
    if value == "":
        return ""
    hint = 'must be comma-separated name:value tags (e.g. "service:api"), or "" for none'
    if not isinstance(value, str):
        raise ValueError(hint)
    if not all(_DOGSTATSD_TAG.match(tag) for tag in value.split(",")):
        raise ValueError(hint)
    return value


def _forwarded_allow_ips(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError('must be a list of proxy addresses or networks, or "*"')
    checked = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError('must be a list of proxy addresses or networks, or "*"')
        item = item.strip()
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"has {item!r}, which is not an IP address, a network such as "
                    '10.0.0.0/8, or "*"'
                ) from None
        checked.append(item)
    return tuple(checked)


_CHECKS: dict[str, Callable[[object], Any]] = {
    "app": _app,
    "interface": _choice(INTERFACES),
    "listen": _listen,
    "workers": _workers,
    "max_request": _non_negative_int,
    "max_request_grace": _non_negative_int,
    "memory_limit": _memory_limit,
    "cpu_affinity": _bool,
    "tcp_nodelay": _bool,
    "task_worker_num": _non_negative_int,
    "task_max_request": _non_negative_int,
    "max_wait_time": _seconds,
    "keepalive_timeout": _positive_seconds,
    "max_concurrency": _non_negative_int,
    "threads": _positive_int,
    "loop_lag_warn_ms": _non_negative_int,
    "rlimit_as": _size,
    "rlimit_nofile": _non_negative_int,
    "metrics_listen": _metrics_listen,
    "request_metrics": _bool,
    "statsd": _statsd,
    "statsd_prefix": _statsd_prefix,
    "dogstatsd_tags": _dogstatsd_tags,
    "forwarded_allow_ips": _forwarded_allow_ips,
    "log_level": _choice(LOG_LEVELS),
}

_HELP: dict[str, str] = {
    "app": 'the application, "module:attribute" (an ASGI app, or a protocol factory for raw), '
    'or "module:factory(...)" called once per worker to build it',
    "interface": "asgi (an ASGI 3 app served through uvicorn's protocol layer) or raw "
    "(a callable returning an asyncio.Protocol)",
    "listen": 'an address to bind when not socket-activated: "host:port", "[::1]:port" or '
    '"unix:/path" (repeat the option for several)',
    "workers": '"auto" (sized from the cgroup CPU budget) or a count',
    "max_request": "recycle a worker after this many requests (0: never)",
    "max_request_grace": "add random(0..N) to max_request per worker, so workers retire apart",
    "memory_limit": 'recycle a worker whose RSS crosses this: "auto" (the cgroup memory budget '
    "shared by the workers), a size such as 512M, or 0 (off)",
    "cpu_affinity": "pin worker i to one CPU of the allowed set",
    "tcp_nodelay": "set TCP_NODELAY on accepted connections",
    "task_worker_num": "task worker processes for procslice.swoole.task()",
    "task_max_request": "recycle a task worker after this many tasks (0: never)",
    "max_wait_time": "seconds a stopping or reloading worker may drain its connections",
    "keepalive_timeout": "seconds an idle keep-alive connection stays open between requests",
    "max_concurrency": "requests one worker process runs at once (0: unbounded)",
    "threads": "threads in each worker's default executor (asyncio.to_thread)",
    "loop_lag_warn_ms": "warn when a worker's event loop is blocked longer than this (0: off)",
    "rlimit_as": "RLIMIT_AS of each worker, a size (0: unchanged)",
    "rlimit_nofile": "RLIMIT_NOFILE of each worker (0: unchanged)",
    "metrics_listen": 'serve Prometheus metrics from the master on "host:port" ("" : off)',
    "request_metrics": "count the per-request metrics (procslice_http_*: status classes, "
    "methods, durations, body bytes) in the workers",
    "statsd": 'send the request and process figures to a StatsD server, "IP:port" (UDP), '
    'once a second ("": none)',
    "statsd_prefix": "a prefix for every StatsD name (a dot is added)",
    "dogstatsd_tags": 'DogStatsD tags for every figure, "name:value,..."; set, the labels '
    "(status class, method, worker, reason) are sent as tags instead of name parts",
    "forwarded_allow_ips": "proxies whose X-Forwarded-For/-Proto headers set the client "
    'address and scheme: IP addresses or networks, comma-separated, or "*" (none: the '
    "headers are ignored)",
    "log_level": "one of " + ", ".join(LOG_LEVELS),
}

assert set(_CHECKS) == {f.name for f in fields(ServiceConfig)} - {"source"}


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check(source: str, key: str, value: object) -> Any:
    try:
        return _CHECKS[key](value)
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}: {exc}, got {value!r}") from None


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
        values[key] = _check(_option(key), key, value)
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
