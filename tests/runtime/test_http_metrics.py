"""Per-request metrics (procslice_http_*) of real aio and swoole masters on loopback."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from conftest import StartSupervisor, Supervisor, wait_until

# Written into the supervisor's working directory (on its sys.path with ``-m``).
METRICS_APP = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/fail":
        raise RuntimeError("fails on purpose")
    if path == "/slow":
        await asyncio.sleep(0.3)
    status, answer = {
        "/missing": (404, b"no such page"),
        "/moved": (301, b""),
        "/echo": (200, body),
    }.get(path, (200, b"hello"))
    headers = [(b"content-length", str(len(answer)).encode())]
    if status == 301:
        headers.append((b"location", b"/"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
"""


@pytest.fixture
def metrics_app(tmp_path: Path) -> str:
    (tmp_path / "metricsapp.py").write_text(METRICS_APP)
    return "metricsapp:app"


def request(sup: Supervisor, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", sup.port, timeout=10)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def samples(sup: Supervisor) -> dict[str, float]:
    """The procslice_http_* and procslice_requests_total samples: line name -> value."""
    found = {}
    for line in sup.metrics().splitlines():
        if line.startswith(("procslice_http_", "procslice_requests_total")):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def wait_for_count(sup: Supervisor, expected: int) -> dict[str, float]:
    """The samples once the duration histogram counts ``expected`` requests."""
    seen: dict[str, float] = {}

    def counted() -> bool:
        seen.clear()
        seen.update(samples(sup))
        return seen.get("procslice_http_request_duration_seconds_count") == expected

    try:
        wait_until(counted, 10, f"{expected} requests in the histogram")
    except AssertionError:
        raise AssertionError(f"metrics never counted {expected} requests: {seen}") from None
    return seen


@pytest.mark.parametrize("model", ["aio", "swoole"])
def test_http_metrics_count_status_classes_methods_durations_and_bytes(
    start_supervisor: StartSupervisor, metrics_app: str, model: str
) -> None:
    """Every answered request lands once in its code/method series, bucket and bytes."""
    sup = start_supervisor(model, "--workers", "2", app=metrics_app, metrics=True)
    post_body = b"x" * 1000
    answers = [
        *(request(sup, "GET", "/") for _ in range(5)),  # wait_serving made one more
        *(request(sup, "GET", "/missing") for _ in range(3)),
        request(sup, "GET", "/moved"),
        *(request(sup, "GET", "/fail") for _ in range(2)),
        request(sup, "POST", "/echo", post_body),
        request(sup, "PUT", "/echo", b"abc"),
        request(sup, "PROPFIND", "/"),  # not in the method list: "other"
        *(request(sup, "GET", "/slow") for _ in range(2)),
    ]
    assert [status for status, _ in answers] == [200] * 5 + [404] * 3 + [301] + [500] * 2 + [
        200
    ] * 5
    assert answers[11] == (200, post_body)
    total = 1 + len(answers)
    seen = wait_for_count(sup, total)

    assert {k: v for k, v in seen.items() if k.startswith("procslice_http_requests_total")} == {
        'procslice_http_requests_total{code="2xx",method="GET"}': 1 + 5 + 2,
        'procslice_http_requests_total{code="3xx",method="GET"}': 1,
        'procslice_http_requests_total{code="4xx",method="GET"}': 3,
        'procslice_http_requests_total{code="5xx",method="GET"}': 2,
        'procslice_http_requests_total{code="2xx",method="POST"}': 1,
        'procslice_http_requests_total{code="2xx",method="PUT"}': 1,
        'procslice_http_requests_total{code="2xx",method="other"}': 1,
    }
    assert seen["procslice_requests_total"] == total
    assert seen["procslice_http_request_bytes_total"] == 1000 + 3
    # "hello" x 7 (with wait_serving's), "no such page" x 3, uvicorn's 500 body x 2,
    # the two echoes, "hello" after each slow sleep
    sent = 5 * 7 + 12 * 3 + len("Internal Server Error") * 2 + 1000 + 3 + 5 * 2
    assert seen["procslice_http_response_bytes_total"] == sent
    bucket = "procslice_http_request_duration_seconds_bucket"
    assert seen[f'{bucket}{{le="0.25"}}'] == total - 2  # all but the two slow ones
    assert seen[f'{bucket}{{le="0.5"}}'] == total
    assert seen[f'{bucket}{{le="+Inf"}}'] == total
    assert 0.6 <= seen["procslice_http_request_duration_seconds_sum"] < 0.6 + 0.25 * total


def test_http_metrics_survive_workers_replaced_after_max_request(
    start_supervisor: StartSupervisor, metrics_app: str
) -> None:
    """Counters keep what retired workers counted: they never go backwards."""
    sup = start_supervisor(
        "swoole", "--workers", "1", "--max-request", "10", app=metrics_app, metrics=True
    )
    sent = 1  # wait_serving's GET /
    last = 0.0
    for _ in range(4):
        for _ in range(10):
            assert request(sup, "GET", "/missing")[0] == 404
            sent += 1
        seen = wait_for_count(sup, sent)
        current = seen['procslice_http_requests_total{code="4xx",method="GET"}']
        assert current >= last
        last = current
    wait_until(
        lambda: (sup.metric('procslice_worker_restarts_total{reason="max_request"}') or 0) >= 2,
        15,
        "two max_request replacements",
    )
    seen = wait_for_count(sup, sent)
    assert seen['procslice_http_requests_total{code="4xx",method="GET"}'] == sent - 1
    assert seen['procslice_http_requests_total{code="2xx",method="GET"}'] == 1
    assert seen["procslice_http_response_bytes_total"] == 5 + 12 * (sent - 1)
    assert seen['procslice_http_request_duration_seconds_bucket{le="+Inf"}'] == sent
    assert seen["procslice_requests_total"] == sent


def test_request_metrics_false_counts_no_http_series(
    start_supervisor: StartSupervisor, metrics_app: str
) -> None:
    """request_metrics = false: requests are still answered and counted, not per request."""
    sup = start_supervisor(
        "aio", "--workers", "1", "--request-metrics", "false", app=metrics_app, metrics=True
    )
    assert request(sup, "GET", "/missing")[0] == 404
    wait_until(lambda: sup.metric("procslice_requests_total") == 2, 10, "requests_total 2")
    seen = samples(sup)
    assert not [k for k in seen if k.startswith("procslice_http_requests_total")]
    assert seen["procslice_http_request_duration_seconds_count"] == 0
    assert seen["procslice_http_response_bytes_total"] == 0
