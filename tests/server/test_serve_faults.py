"""An engine that keeps going: an injected failure in one request's step fails that request
only; a dead engine makes /ready 503 and the process exit non-zero. Default (int8) path."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.server.conftest import FAULT_MARKER, ServerProcess

MARKER = FAULT_MARKER


@pytest.fixture(scope="module")
def faulty(int8_server):
    return int8_server


def _complete(url: str, prompt: str, **extra) -> httpx.Response:
    body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=120)


PROMPTS = ["The capital of France is", "One, two, three,", "Water boils at"]


def test_failed_step_fails_only_its_request(faulty):
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_complete, faulty.url, p) for p in PROMPTS]
        bad = pool.submit(_complete, faulty.url, f"{MARKER} says hello")
        results = [f.result() for f in futures]
        bad = bad.result()
    assert bad.status_code == 500
    err = bad.json()["error"]
    assert err["code"] == "engine_error" and "injected fault" in err["message"]
    assert err["type"] == "server_error"
    assert [r.status_code for r in results] == [200, 200, 200]
    together = [r.json()["choices"][0]["text"] for r in results]
    # the same prompts alone, after the failure: served, and the same greedy text
    alone = [_complete(faulty.url, p).json()["choices"][0]["text"] for p in PROMPTS]
    assert together == alone
    assert all(text for text in alone)
    assert httpx.get(f"{faulty.url}/ready").status_code == 200


def test_failed_stream_ends_with_an_error_event(faulty):
    body = {"prompt": f"{MARKER} streams", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{faulty.url}/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "engine_error"
    assert _complete(faulty.url, "Still serving?").status_code == 200


def test_dead_engine_fails_ready_and_exits_nonzero(tmp_path):
    srv = ServerProcess(
        env={"OPENGEMMA_TEST_FAULT": f"fatal:{MARKER}"}, log=tmp_path / "server.log", dtype=None
    )
    try:
        r = _complete(srv.url, f"{MARKER} ends it")
        assert r.status_code == 500
        seen = []
        end = time.monotonic() + 60
        while srv.proc.poll() is None and time.monotonic() < end:
            try:
                seen.append(httpx.get(f"{srv.url}/ready", timeout=2).status_code)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert 503 in seen and 200 not in seen
        assert srv.proc.wait(30) == 1
        assert "engine stopped" in srv.log_path.read_text()
    finally:
        srv.stop()
