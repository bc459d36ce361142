"""The table of ``procslice status`` (and of playbooks/status.yml for the fleet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_SIZE_UNITS = ("K", "M", "G", "T", "P")


COLUMNS: tuple[str, ...] = (
    "HOST",
    "SERVICE",
    "MODEL",
    "RELEASE",
    "STATE",
    "WORKERS",
    "CPU/QUOTA",
    "MEM/MAX",
    "HIGH",
    "TASKS/MAX",
    "REQUESTS",
    "RESTARTS",
    "HEALTH",
)


INHERITED_MARK = "^"


def format_size(value: int | float | None) -> str:
    """Bytes as a short size: 512B, 1.5K, 41M, 256M, 2G; ``-`` for ``None``."""
    if value is None:
        return "-"
    number = float(value)
    if number < 1024:
        return f"{number:.0f}B"
    index = 0
    number /= 1024
    while number >= 1024 and index < len(_SIZE_UNITS) - 1:
        number /= 1024
        index += 1
    unit = _SIZE_UNITS[index]
    text = f"{number:.1f}" if number < 10 else f"{number:.0f}"
    return text.removesuffix(".0") + unit


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def _own(service: Mapping[str, Any], source: Any) -> bool:
    return source is None or source == service.get("unit")


def _limit(text: str, service: Mapping[str, Any], source: Any) -> str:
    return text if _own(service, source) or text == "-" else text + INHERITED_MARK


def _restarts_cell(service: Mapping[str, Any]) -> str:
    restarts = service.get("restarts") or {}
    reasons: list[str] = []
    result = restarts.get("result")
    if result and result != "success":
        reasons.append(str(result))
    if restarts.get("last_exit"):
        reasons.append(str(restarts["last_exit"]))
    if restarts.get("oom_kills"):
        reasons.append(f"oom_kill={restarts['oom_kills']}")
    if restarts.get("last_recycle"):
        reasons.append(f"recycled: {restarts['last_recycle']}")
    count = str(restarts.get("count", 0))
    return f"{count} ({'; '.join(reasons)})" if reasons else count


def _health_cell(service: Mapping[str, Any]) -> str:
    health = service.get("health") or {}
    state = str(health.get("state") or "none")
    return f"{state}: {health['detail']}" if state == "failing" and health.get("detail") else state


def _row(host: str, service: Mapping[str, Any]) -> list[str]:
    cpu = service.get("cpu") or {}
    memory = service.get("memory") or {}
    tasks = service.get("tasks") or {}
    state = str(service.get("state") or "?")
    if state != "active" and service.get("sub_state"):
        state += f"/{service['sub_state']}"
    cpu_cell = (
        _percent(cpu.get("percent"))
        + "/"
        + _limit(_percent(cpu.get("quota_percent")), service, cpu.get("quota_from"))
    )
    if cpu.get("throttled_in_sample"):
        cpu_cell += " throttled"
    memory_cell = (
        format_size(memory.get("bytes"))
        + "/"
        + _limit(format_size(memory.get("max_bytes")), service, memory.get("max_from"))
    )
    tasks_max = tasks.get("max")
    tasks_cell = f"{tasks.get('current') if tasks.get('current') is not None else '-'}/" + _limit(
        str(tasks_max) if tasks_max is not None else "-", service, tasks.get("max_from")
    )
    workers = service.get("workers")
    return [
        host,
        str(service.get("service", "?")),
        str(service.get("model", "?")),
        str(service.get("release") or "-"),
        state,
        str(workers) if workers is not None else "-",
        cpu_cell,
        memory_cell,
        _limit(format_size(memory.get("high_bytes")), service, memory.get("high_from")),
        tasks_cell,
        _requests_cell(service),
        _restarts_cell(service),
        _health_cell(service),
    ]


def _requests_cell(service: Mapping[str, Any]) -> str:
    """``120/s 0.5% p99 12ms``: requests per second, their 5xx share and p99 over the
    sample (gunicorn, aio and swoole with metrics_listen); ``-`` where nothing counts them."""
    requests = service.get("requests") or {}
    rate = requests.get("per_second")
    if rate is None:
        return "-"
    cell = f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s"
    ratio = requests.get("error_ratio")
    if ratio is not None:
        cell += f" {ratio * 100:.1f}%"
    p99 = requests.get("p99_seconds")
    if p99 is not None:
        cell += f" p99 {p99 * 1000:.0f}ms" if p99 < 10 else f" p99 {p99:.0f}s"
    return cell


def format_table(documents: Sequence[Mapping[str, Any]]) -> str:
    """One aligned table for host documents (``--json`` output, or an error document
    ``{"host": ..., "error": ...}``): a row per service, host column first."""
    rows: list[list[str]] = []
    for document in documents:
        host = str(document.get("host", "?"))
        if document.get("error"):
            rows.append([host, f"({document['error']})"])
            continue
        services = document.get("services") or []
        if not services:
            rows.append([host, "(no procslice services)"])
        rows.extend(_row(host, service) for service in services)
    widths = [len(name) for name in COLUMNS]
    widths[0] = max([widths[0]] + [len(row[0]) for row in rows])
    for row in rows:
        if len(row) == len(COLUMNS):
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [_join(COLUMNS, widths)]
    for row in rows:
        if len(row) == len(COLUMNS):
            lines.append(_join(row, widths))
        else:
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
    if any(INHERITED_MARK in cell for row in rows for cell in row[6:10]):
        lines.append(
            f"{INHERITED_MARK} the limit of its slice, shared with the slice's other services"
        )
    for document in documents:
        if document.get("drained"):
            lines.append(
                f"{document.get('host', '?')} has services out of the front's rotation: "
                f"{document['drained']}"
            )
    return "\n".join(lines)


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def documents_of(data: Any) -> list[dict[str, Any]]:
    """Host documents from a host document, a list of them, or ``{"hosts": [...]}``."""
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        data = data["hosts"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError("expected a host document, a list of them or {'hosts': [...]}")
    return list(data)
