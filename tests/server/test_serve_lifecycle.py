"""Load shedding, disconnects, deadlines and SIGTERM draining, on a one-row server."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.slow
TIMEOUT = 20  # the server's per-request deadline, seconds (long enough for a loaded machine)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    srv = ServerProcess(
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--request-timeout",
        str(TIMEOUT),
        "--drain-timeout",
        "60",
        log=tmp_path_factory.mktemp("serve") / "small.log",
    )
    yield srv
    srv.stop()


def _completion(url: str, max_tokens: int, stream: bool = False, **extra) -> dict:
    return {
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _first_data(lines) -> dict:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            return json.loads(line[6:])
    raise AssertionError("stream ended without data")


def test_full_queue_is_503_and_a_disconnect_frees_the_slot(small):
    url = f"{small.url}/v1/completions"
    tokens_before = small.metric("opengemma:generation_tokens_total")
    result = {}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", url, json=_completion(url, 2000, stream=True)) as long_run:
            lines = long_run.iter_lines()
            _first_data(lines)  # the long request holds the only row

            def queued() -> None:
                result["r"] = httpx.post(url, json=_completion(url, 3), timeout=60)

            waiter = threading.Thread(target=queued)
            waiter.start()
            _wait_for(lambda: small.metric("opengemma:num_requests_waiting") == 1, "queueing")
            full = http.post(url, json=_completion(url, 3))
            assert full.status_code == 503 and full.headers["Retry-After"].isdigit()
            assert full.json()["error"]["code"] == "queue_full"
        # the client hung up on the long request: its row goes to the waiting one
        waiter.join(60)
    assert result["r"].status_code == 200, result["r"].text
    assert result["r"].json()["choices"][0]["finish_reason"] == "length"
    assert small.metric("opengemma:num_requests_aborted_total", reason="abort") == 1
    generated = small.metric("opengemma:generation_tokens_total") - tokens_before
    assert generated < 2000  # the long request stopped when its client left
    assert small.metric("opengemma:num_requests_running") == 0


def test_deadline_gives_504(small):
    r = httpx.post(f"{small.url}/v1/completions", json=_completion("", 5000), timeout=120)
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert small.metric("opengemma:num_requests_aborted_total", reason="timeout") == 1


def test_sigterm_drains_in_flight_requests_and_exits_0(small):
    url = f"{small.url}/v1/completions"
    with httpx.stream("POST", url, json=_completion(url, 10, stream=True), timeout=60) as r:
        lines = r.iter_lines()
        first = _first_data(lines)
        small.proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: httpx.get(f"{small.url}/ready").status_code == 503, "not ready")
        refused = httpx.post(url, json=_completion(url, 2))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        rest = list(lines)  # the in-flight stream, read to its end while the server drains
    chunks = [first] + [json.loads(x[6:]) for x in rest if x.startswith("data: {")]
    data = [x for x in rest if x.startswith("data:")]
    assert data and data[-1] == "data: [DONE]"  # closed properly, not cut off by the shutdown
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # all 10 tokens were generated
    assert 1 <= len([c for c in chunks if c["choices"][0]["text"]]) <= 10
    assert small.proc.wait(60) == 0
