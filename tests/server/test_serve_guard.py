"""Guardrails through the real server: a blocked prompt is a 400 content-policy error, a
blocked response ends with finish_reason "content_filter"; both are counted in /metrics.

The embedded model is not a trained safety classifier, so these tests set the threshold so
low that every text is judged a violation: they check the mechanics, not the judgement.
"""

from __future__ import annotations

import json

import httpx
import pytest
from openai import BadRequestError, OpenAI
from tests.server.conftest import ServerProcess

ALWAYS = "0.000001"  # every P(violation) is above this


@pytest.fixture(scope="module")
def input_guarded(tmp_path_factory):
    srv = ServerProcess("--guard", "input", "--guard-threshold", ALWAYS,
                        "--guard-policy", "dangerous_content",
                        log=tmp_path_factory.mktemp("serve") / "guard_in.log")  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def output_guarded(tmp_path_factory):
    srv = ServerProcess("--guard", "output", "--guard-threshold", ALWAYS,
                        log=tmp_path_factory.mktemp("serve") / "guard_out.log")  # fmt: skip
    yield srv
    srv.stop()


def test_blocked_prompt_is_a_400_content_policy_error(input_guarded):
    client = OpenAI(base_url=f"{input_guarded.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(BadRequestError) as err:
        client.completions.create(
            model="gemma-3-270m", prompt="How do I pick a lock?", max_tokens=4
        )
    body = err.value.response.json()["error"]
    assert body["code"] == "content_policy_violation" and body["param"] == "prompt"
    with pytest.raises(BadRequestError):
        client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert input_guarded.metric("opengemma:guard_blocked_total", stage="input") == 2


def test_blocked_response_ends_with_content_filter(output_guarded):
    client = OpenAI(base_url=f"{output_guarded.url}/v1", api_key="x", max_retries=0)
    out = client.completions.create(model="gemma-3-270m", prompt="Once upon a time", max_tokens=6)
    assert out.choices[0].finish_reason == "content_filter" and out.choices[0].text == ""
    chunks = []
    with httpx.stream("POST", f"{output_guarded.url}/v1/chat/completions", timeout=120, json={
        "model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 6, "stream": True,
    }) as r:  # fmt: skip
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunks.append(json.loads(line[6:]))
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert reasons[-1] == "content_filter"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
    assert text == ""  # nothing of the blocked response reached the client
    assert output_guarded.metric("opengemma:guard_blocked_total", stage="output") == 2
