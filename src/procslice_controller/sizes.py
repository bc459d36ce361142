"""Sizes: procslice_size (the filter) and the IO bandwidths, a rate per device.

The grammar of sizes and the checks of the other limits are procslice.data.checks,
named by the table of keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procslice.data.checks import parse_size, size_or_infinity
from procslice_controller.errors import ProcsliceDataError, _Errors, _show


def procslice_size(value: Any) -> int:
    """A size in bytes, in the one grammar of sizes (checks.parse_size): a whole number of
    bytes, or a number with K, M, G, T, P or E (powers of 1024, an optional i and B:
    "512M", "1.5G", "64MiB", "512Mi"); fractions with a unit are rounded down."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ProcsliceDataError(f"{_show(value)} {exc}") from None


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
            text, size = size_or_infinity(rate)
        except ValueError as exc:
            errors.add(rate_path, f"{_show(rate)} {exc}")
            continue
        if size == 0:
            errors.add(
                rate_path, "0 would stop all IO; write a rate above 0 (e.g. 50M) or infinity"
            )
            continue
        lines.append(f"{device} {text}")
    return lines
