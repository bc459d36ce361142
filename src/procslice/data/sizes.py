"""Sizes, quotas and the other scalar parsers (each raises ProcsliceDataError)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from procslice.data.checks import parse_size
from procslice.data.errors import ProcsliceDataError, _Errors, _is_int, _is_number, _show
from procslice.data.vocabulary import CPUSET_RE, PERCENT_RE


def procslice_size(value: Any) -> int:
    """A size in bytes, in the one grammar of sizes (checks.parse_size): a whole number of
    bytes, or a number with K, M, G, T, P or E (powers of 1024, an optional i and B:
    "512M", "1.5G", "64MiB", "512Mi"); fractions with a unit are rounded down."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ProcsliceDataError(f"{_show(value)} {exc}") from None


def _size_or_infinity(value: Any) -> tuple[str, int | None]:
    """-> (directive value, bytes or None for infinity)."""
    if isinstance(value, str) and str(value).strip().lower() == "infinity":
        return "infinity", None
    size = procslice_size(value)
    return str(size), size


def _cpu_quota(value: Any) -> Decimal:
    """cpu_quota: "150%" -> Decimal(150)."""
    if isinstance(value, str):
        match = PERCENT_RE.match(str(value).strip())
        if match:
            percent = Decimal(match.group(1))
            if percent > 0:
                return percent
            raise ProcsliceDataError(f"{_show(value)} is not a CPU quota: it must be above 0%")
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        number = Decimal(str(value).strip())
        if number >= 10:  # "150" meant 150% far more often than 150 CPUs
            raise ProcsliceDataError(
                f'{_show(value)} is not a CPU quota; write "{value}%" ({value}% of one CPU), '
                f"or give a number of CPUs under cpus (cpus: {value} is {value} CPUs)"
            )
        raise ProcsliceDataError(
            f"{_show(value)} is not a CPU quota; write a percentage of one CPU "
            f'(e.g. "150%") or give a number of CPUs under cpus (e.g. cpus: {value})'
        )
    raise ProcsliceDataError(
        f'{_show(value)} is not a CPU quota; write a percentage of one CPU (e.g. "150%")'
    )


def _looks_numeric(text: str) -> bool:
    try:
        Decimal(str(text).strip())
    except InvalidOperation:
        return False
    return True


def _cpus(value: Any) -> Decimal:
    """compose cpus: 1.5 (or "1.5") -> Decimal(150) percent."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        cpus = Decimal(str(value).strip())
        if cpus > 0:
            return cpus * 100
    raise ProcsliceDataError(
        f"{_show(value)} is not a number of CPUs; write a number above 0 (e.g. 1.5)"
    )


def _cpu_weight(value: Any) -> int:
    if _is_int(value) or (isinstance(value, str) and str(value).strip().isdigit()):
        weight = int(value)
        if 1 <= weight <= 10000:
            return weight
    raise ProcsliceDataError(
        f"{_show(value)} is not a CPU weight; write an integer from 1 to 10000 (default 100)"
    )


def _reserved_cpus_weight(value: Any) -> int:
    """compose reservations.cpus: 0.5 -> CPUWeight 50 (x100, clamped to 1..10000)."""
    if _is_number(value) or (isinstance(value, str) and _looks_numeric(value)):
        cpus = Decimal(str(value).strip())
        if cpus > 0:
            weight = int((cpus * 100).to_integral_value(rounding=ROUND_HALF_UP))
            return max(1, min(10000, weight))
    raise ProcsliceDataError(
        f"{_show(value)} is not a number of CPUs; write a number above 0 (e.g. 0.5)"
    )


def _tasks_max(value: Any) -> tuple[str, int | None]:
    if isinstance(value, str) and str(value).strip().lower() == "infinity":
        return "infinity", None
    if _is_int(value) or (isinstance(value, str) and str(value).strip().isdigit()):
        tasks = int(value)
        if tasks >= 1:
            return str(tasks), tasks
    raise ProcsliceDataError(
        f"{_show(value)} is not a task limit; write a positive integer (e.g. 512) or infinity"
    )


def _limit_nofile(value: Any) -> tuple[str, int | None]:
    """LimitNOFILE: 65536, "1024:65536" (soft:hard) or infinity -> (directive, hard)."""
    text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
    if isinstance(value, bool):
        text = ""
    if text == "infinity":
        return "infinity", None
    parts = text.split(":")
    if text and len(parts) <= 2 and all(part.isdigit() and int(part) > 0 for part in parts):
        soft, hard = int(parts[0]), int(parts[-1])
        if soft <= hard:
            return text, hard
    raise ProcsliceDataError(
        f"{_show(value)} is not a file limit; write a positive integer (e.g. 65536), "
        "soft:hard (e.g. 1024:65536) or infinity"
    )


def _allowed_cpus(value: Any) -> str:
    text = str(value).strip() if _is_int(value) or isinstance(value, str) else ""
    if text and CPUSET_RE.match(text):
        ranges = [part for part in re.split(r"[ ,]", text) if part]
        if all(int(r.split("-")[0]) <= int(r.split("-")[-1]) for r in ranges):
            return text
    raise ProcsliceDataError(
        f'{_show(value)} is not a CPU list; write CPU numbers and ranges (e.g. "0-1" or "0,2-3")'
    )


def _bandwidth(value: Any, path: str, errors: _Errors) -> list[str]:
    """{dev: rate} or compose's [{path: dev, rate: rate}] -> ["<dev> <bytes>", ...]."""
    pairs: list[tuple[str, str, Any]] = []  # (path of the rate, device, rate)
    if isinstance(value, Mapping):
        pairs = [(f"{path}[{dev}]", dev, rate) for dev, rate in value.items()]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"path", "rate"}:
                errors.add(
                    f"{path}[{index}]",
                    f"{_show(item)} is not a device limit; write {{path: /dev/vda, rate: 50M}} "
                    '(or use the mapping form {"/dev/vda": 50M})',
                )
                continue
            pairs.append((f"{path}[{index}].rate", item["path"], item["rate"]))
    else:
        errors.add(
            path,
            f'{_show(value)} is not a device bandwidth map; write {{"/dev/vda": 50M}}',
        )
        return []
    lines: list[str] = []
    for rate_path, device, rate in pairs:
        if not isinstance(device, str) or not str(device).startswith("/"):
            errors.add(
                rate_path,
                f"{_show(device)} is not a device; write the absolute path of a block device "
                "or of a file on it (e.g. /dev/vda)",
            )
            continue
        try:
            text, size = _size_or_infinity(rate)
        except ProcsliceDataError as exc:
            errors.add(rate_path, str(exc))
            continue
        if size == 0:
            errors.add(
                rate_path, "0 would stop all IO; write a rate above 0 (e.g. 50M) or infinity"
            )
            continue
        lines.append(f"{device} {text}")
    return lines
