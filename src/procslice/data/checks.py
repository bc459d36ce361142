"""The checks of single values, shared by the controller and the runtime.

Each check takes a value as YAML or TOML gives it and returns it typed (what the
runtime uses), or raises ``ValueError`` whose text is the problem and its fix, phrased
to follow the value: ``"lots" is not valid; write an integer, 0 or more``. The
controller's filter prefixes the variable path
(``procslice_services[api].max_request: ...``), the runtime the file or option and the
key (``procslice.toml: max_request: ...``); both show the value with :func:`show`.

Sizes have one grammar, here (:func:`parse_size`): the filter's limits, the runtime's
memory_limit and rlimit_as, and ``procslice limits`` all read them with it.

Standard library only: the runtime package and the controller's plugins import it.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from collections.abc import Callable
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "SIZE_HINT",
    "allowed_cpus",
    "cpu_quota",
    "cpu_weight",
    "cpus",
    "limit_nofile",
    "reserved_cpus",
    "size_or_infinity",
    "tasks_max",
    "Check",
    "boolean",
    "choice",
    "cpu_affinity",
    "dogstatsd_tags",
    "forwarded_allow_ips",
    "memory_limit",
    "metrics_listen",
    "non_negative_int",
    "parse_app",
    "parse_listen",
    "parse_size",
    "positive_int",
    "positive_seconds",
    "seconds",
    "show",
    "statsd",
    "statsd_prefix",
    "workers",
]

#: A check: the value as written -> the value typed; ValueError(problem) when refused.
Check = Callable[[Any], Any]


def show(value: Any) -> str:
    """Render a value the way the operator wrote it, strings quoted."""
    if isinstance(value, str):
        return json.dumps(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------------ sizes

_SIZE_RE = re.compile(
    r"^(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?:(?P<unit>[kmgtpe])(?:ib?|b)?|b)?$", re.IGNORECASE
)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
SIZE_HINT = "write bytes or a number with K, M, G, T, P or E (e.g. 2G)"


def parse_size(value: Any) -> int:
    """A size in bytes: a whole number of bytes, or a number with K, M, G, T, P or E
    (powers of 1024, case-insensitive, an optional i and B: "512M", "1.5g", "64MiB",
    "512Mi", "100kb"). A fraction with a unit is rounded down to whole bytes; a
    fraction of a byte ("1.5"), a negative size and anything else are refused."""
    if _is_int(value):
        if value < 0:
            raise ValueError(f"is not a size: it is negative; {SIZE_HINT}")
        return int(value)
    if isinstance(value, float) and not isinstance(value, bool):
        if value >= 0 and value.is_integer():
            return int(value)
        raise ValueError(f"is not a whole, positive number of bytes; {SIZE_HINT}")
    if not isinstance(value, str):
        raise ValueError(f"is not a size; {SIZE_HINT}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"is not a size: it is negative; {SIZE_HINT}")
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"is not a size; {SIZE_HINT}")
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers in
        raise ValueError(f"is not a size; {SIZE_HINT}") from None
    unit = match.group("unit")
    if unit is None and number != number.to_integral_value():
        raise ValueError(f"is not a whole number of bytes; {SIZE_HINT}")
    factor = 1024 ** _SIZE_POWERS[unit.lower()] if unit else 1
    return int((number * factor).to_integral_value(rounding=ROUND_FLOOR))


def memory_limit(value: Any) -> int | None:
    """swoole's memory_limit: "auto" -> None, else a size (0: off)."""
    if value == "auto":
        return None
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(
            "is not a memory limit; write auto (a share of the memory budget), a size "
            "such as 200M, or 0 to turn recycling on memory off"
        ) from None


# ---------------------------------------------------------------------- numbers, words


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("is not true or false")


def cpu_affinity(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(
        "is not true or false; true pins worker i to the i-th CPU the service may use (its "
        "slice's or its own allowed_cpus); choose the CPUs with allowed_cpus"
    )


def non_negative_int(value: Any) -> int:
    if _is_int(value) and value >= 0:
        return int(value)
    raise ValueError("is not valid; write an integer, 0 or more")


def positive_int(value: Any) -> int:
    if _is_int(value) and value > 0:
        return int(value)
    raise ValueError("is not valid; write a positive integer")


def workers(value: Any) -> int | None:
    """ "auto" -> None (sized from the budget), else a positive count."""
    if value == "auto":
        return None
    if _is_int(value) and value > 0:
        return int(value)
    raise ValueError("is not a worker count; write auto or a positive integer")


def seconds(value: Any) -> float:
    if _is_number(value) and 0 <= value < float("inf"):
        return float(value)
    raise ValueError("is not a number of seconds; write a number, 0 or more (e.g. 10)")


def positive_seconds(value: Any) -> float:
    if _is_number(value) and 0 < value < float("inf"):
        return float(value)
    raise ValueError("is not a number of seconds above 0; write e.g. 5 (uvicorn's default) or 75")


def choice(what: str, *choices: str) -> Check:
    """One of ``choices``; the message calls the value ``what`` ("a log level")."""

    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(f"is not {what}; use one of: {', '.join(choices)}")

    return check


# ----------------------------------------------------------------- apps and addresses


def parse_app(ref: str) -> tuple[str, str, tuple[Any, ...] | None, dict[str, Any]]:
    """``"module:attr.sub"`` or ``"module:factory(args)"`` -> (module, attribute path,
    the factory's positional arguments or None when it is not called, its keywords).

    A factory is called once per worker with literal arguments only (numbers, strings,
    lists, dicts...), the syntax gunicorn accepts: ``"api.main:create_app()"``,
    ``"api.main:create_app('prod', debug=False)"``. Raises ValueError naming the
    problem."""
    module, sep, expr = ref.partition(":")
    if not sep or not module or not expr.strip():
        raise ValueError("no colon between the module and the attribute")
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
                "a factory's arguments must be literals (numbers, strings, lists, dicts)"
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


def app(value: Any) -> str:
    """An app reference that :func:`parse_app` accepts."""
    hint = 'write e.g. "api.main:app", or "api.main:create_app()" for an app factory'
    if not isinstance(value, str):
        raise ValueError(f"is not module:attribute or module:factory(...) (not a string); {hint}")
    try:
        parse_app(value)
    except ValueError as exc:
        raise ValueError(
            f"is not module:attribute or module:factory(...) ({exc}); {hint}"
        ) from None
    return value


def parse_listen(value: Any) -> tuple[str, int]:
    """ "0.0.0.0:8000" / "[::1]:8000" -> (host, port); ValueError with the fix."""
    hint = 'write an IP address and a port (e.g. "0.0.0.0:8000" or "[::]:8000")'
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{show(value)} is not host:port; {hint}")
    host, _, port_text = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{show(value)}: {host} is not an IPv6 address; {hint}") from None
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{show(value)}: {show(host)} is not an IPv4 address (socket activation binds "
                f"addresses, not names; IPv6 goes in brackets); {hint}"
            ) from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{show(value)}: the port must be 1 to 65535; {hint}")
    return host, int(port_text)


def metrics_listen(value: Any) -> str:
    """ "host:port" of a metrics endpoint, or "" (off)."""
    if value == "":
        return ""
    try:
        parse_listen(value)
    except ValueError as exc:
        raise ValueError(
            f'is not an address ({exc}); or write "" for no metrics endpoint'
        ) from None
    return str(value)


def statsd(value: Any) -> str:
    """ "IP:port" of a StatsD server, or "" (none)."""
    if value == "":
        return ""
    fix = (
        "write the IP address and UDP port of the StatsD server (or the Datadog agent), "
        'e.g. statsd: "127.0.0.1:8125", or "" for none'
    )
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"is not IP:port; {fix}")
    host, _, port = value.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"is not IP:port: {show(host)} is not an IP address (the runtimes look no name "
            f"up; IPv6 goes in brackets); {fix}"
        ) from None
    if address.version == 6 and not bracketed:
        raise ValueError(
            f"is not IP:port: write an IPv6 address in brackets ([{host}]:PORT); {fix}"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"is not IP:port: the port must be 1 to 65535; {fix}")
    return value


_STATSD_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_DOGSTATSD_TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*(:[A-Za-z0-9_./-]+)?$")


def statsd_prefix(value: Any) -> str | None:
    """What every StatsD name starts with; "" none, None (data only): the default."""
    if value is None or (isinstance(value, str) and (value == "" or _STATSD_NAME.match(value))):
        return value
    raise ValueError(
        'is not a StatsD prefix; write dot-separated parts of letters, digits, "_" and "-" '
        '(e.g. "api" or "prod.api"), or "" for none'
    )


def dogstatsd_tags(value: Any) -> str:
    """ "name:value,..." DogStatsD tags, or "" (none)."""
    if value == "":
        return ""
    if isinstance(value, str) and all(_DOGSTATSD_TAG.match(tag) for tag in value.split(",")):
        return value
    raise ValueError(
        "is not a list of DogStatsD tags; write comma-separated name:value tags (e.g. "
        '"service:api"), or "" for none'
    )


def forwarded_allow_ips(value: Any) -> tuple[str, ...]:
    """The proxies trusted for X-Forwarded-*: IP addresses, networks, or "*"."""
    fix = (
        'write a list of the proxies\' IP addresses or networks (e.g. ["10.0.0.5"]), '
        '["*"] to trust any peer, or [] to ignore X-Forwarded-* headers'
    )
    if not isinstance(value, list | tuple):
        raise ValueError(f"is not a list; {fix}")
    checked: list[str] = []
    for item in value:
        if item != "*":
            try:
                ipaddress.ip_network(item if isinstance(item, str) else "", strict=False)
            except ValueError:
                raise ValueError(
                    f"has {show(item)}, which is not an IP address or network; {fix}"
                ) from None
        checked.append(str(item).strip())
    return tuple(checked)


# ------------------------------------------------------------------ resources (limits)
# A slice's and a service's limits: each check returns (the systemd directive's value,
# the limit as the cross-checks compare it). The compose spellings that read otherwise
# (cpus: a number of CPUs) have their own.

_PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)%$")
_CPUSET_RE = re.compile(r"^\d+(-\d+)?([ ,]\d+(-\d+)?)*$")


def _looks_numeric(text: str) -> bool:
    try:
        Decimal(str(text).strip())
    except InvalidOperation:
        return False
    return True


def _percent(percent: Decimal) -> tuple[str, float]:
    """A CPU percentage -> the CPUQuota= value (at most two decimals, "33.33%") and the
    percentage as a float."""
    quantized = percent.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return format(quantized.normalize(), "f") + "%", float(quantized)


def cpu_quota(value: Any) -> tuple[str, float]:
    """cpu_quota: "150%"."""
    if isinstance(value, str):
        match = _PERCENT_RE.match(value.strip())
        if match:
            percent = Decimal(match.group(1))
            if percent > 0:
                return _percent(percent)
            raise ValueError("is not a CPU quota: it must be above 0%")
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        number = Decimal(str(value).strip())
        if number >= 10:  # "150" meant 150% far more often than 150 CPUs
            raise ValueError(
                f'is not a CPU quota; write "{value}%" ({value}% of one CPU), '
                f"or give a number of CPUs under cpus (cpus: {value} is {value} CPUs)"
            )
        raise ValueError(
            "is not a CPU quota; write a percentage of one CPU "
            f'(e.g. "150%") or give a number of CPUs under cpus (e.g. cpus: {value})'
        )
    raise ValueError('is not a CPU quota; write a percentage of one CPU (e.g. "150%")')


def cpus(value: Any) -> tuple[str, float]:
    """compose's cpus: 1.5 (or "1.5") -> CPUQuota=150%."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        number = Decimal(str(value).strip())
        if number > 0:
            return _percent(number * 100)
    raise ValueError("is not a number of CPUs; write a number above 0 (e.g. 1.5)")


def cpu_weight(value: Any) -> tuple[str, int]:
    if _is_int(value) or (isinstance(value, str) and value.strip().isdigit()):
        weight = int(value)
        if 1 <= weight <= 10000:
            return str(weight), weight
    raise ValueError("is not a CPU weight; write an integer from 1 to 10000 (default 100)")


def reserved_cpus(value: Any) -> tuple[str, int]:
    """compose's reservations.cpus: 0.5 -> CPUWeight=50 (x100, clamped to 1..10000)."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        number = Decimal(str(value).strip())
        if number > 0:
            weight = int((number * 100).to_integral_value(rounding=ROUND_HALF_UP))
            weight = max(1, min(10000, weight))
            return str(weight), weight
    raise ValueError("is not a number of CPUs; write a number above 0 (e.g. 0.5)")


def size_or_infinity(value: Any) -> tuple[str, int | None]:
    """A size, or infinity (None)."""
    if isinstance(value, str) and value.strip().lower() == "infinity":
        return "infinity", None
    size = parse_size(value)
    return str(size), size


def tasks_max(value: Any) -> tuple[str, int | None]:
    if isinstance(value, str) and value.strip().lower() == "infinity":
        return "infinity", None
    if _is_int(value) or (isinstance(value, str) and value.strip().isdigit()):
        tasks = int(value)
        if tasks >= 1:
            return str(tasks), tasks
    raise ValueError("is not a task limit; write a positive integer (e.g. 512) or infinity")


def limit_nofile(value: Any) -> tuple[str, int | None]:
    """LimitNOFILE: 65536, "1024:65536" (soft:hard) or infinity -> (directive, hard)."""
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if isinstance(value, bool):
        text = ""
    if text == "infinity":
        return "infinity", None
    parts = text.split(":")
    if text and len(parts) <= 2 and all(part.isdigit() and int(part) > 0 for part in parts):
        soft, hard = int(parts[0]), int(parts[-1])
        if soft <= hard:
            return text, hard
    raise ValueError(
        "is not a file limit; write a positive integer (e.g. 65536), soft:hard (e.g. "
        "1024:65536) or infinity"
    )


def allowed_cpus(value: Any) -> tuple[str, str]:
    text = str(value).strip() if _is_int(value) or isinstance(value, str) else ""
    if text and _CPUSET_RE.match(text):
        ranges = [part for part in re.split(r"[ ,]", text) if part]
        if all(int(r.split("-")[0]) <= int(r.split("-")[-1]) for r in ranges):
            return text, text
    raise ValueError('is not a CPU list; write CPU numbers and ranges (e.g. "0-1" or "0,2-3")')
