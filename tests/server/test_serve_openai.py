"""The OpenAI-compatible API, driven by the official `openai` client against a real server."""

from __future__ import annotations

import json
import threading

import httpx
import jsonschema
import openai
import pytest
from tests.server.conftest import API_KEY, HEALTH_ROUTE, PREDICT_ROUTE

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
    "1, 2, 3, 4,",
    "The best way to learn",
    "Water boils at",
    "My favourite colour is",
    "import numpy as np\n",
]


def test_models_lists_the_served_model(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["gemma-3-270m"]


@pytest.mark.slow
def test_greedy_completion_equals_the_library(client, lm):
    out = client.completions.create(
        model="gemma-3-270m", prompt=PROMPTS[0], max_tokens=12, temperature=0
    )
    choice = out.choices[0]
    assert choice.text == lm.generate(PROMPTS[0], 12)
    assert choice.finish_reason == "length"
    assert out.usage.prompt_tokens == len(lm.tokenizer.encode(PROMPTS[0]))
    assert out.usage.completion_tokens == 12


@pytest.mark.slow
def test_eight_concurrent_greedy_requests_equal_eight_sequential(client):
    def ask(prompt: str) -> str:
        out = client.completions.create(
            model="gemma-3-270m", prompt=prompt, max_tokens=8, temperature=0
        )
        return out.choices[0].text

    sequential = [ask(p) for p in PROMPTS]
    concurrent: list[str | None] = [None] * len(PROMPTS)

    def work(i: int) -> None:
        concurrent[i] = ask(PROMPTS[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert concurrent == sequential
    assert len(set(sequential)) == len(PROMPTS)  # the rows really are different requests


@pytest.mark.slow
def test_chat_stream_with_usage_matches_the_non_streamed_answer(client):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a primary colour."},
    ]
    full = client.chat.completions.create(
        model="gemma-3-270m", messages=messages, max_tokens=10, temperature=0
    )
    stream = client.chat.completions.create(
        model="gemma-3-270m",
        messages=messages,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content and text
    assert chunks[0].choices[0].delta.role == "assistant"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == full.choices[0].finish_reason and set(reasons[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens


SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "bright": {"type": "boolean"},
        "level": {"type": "integer", "minimum": 1, "maximum": 9},
    },
    "required": ["colour", "bright", "level"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_json_schema_output_parses_and_validates(client):
    messages = [{"role": "user", "content": "Say hello to me."}]
    free = client.chat.completions.create(
        model="gemma-3-270m", messages=messages, max_tokens=8, temperature=0
    )
    assert not free.choices[0].message.content.lstrip().startswith("{")  # not JSON by itself
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA, "strict": True}}
    for seed in (0, 1):
        out = client.chat.completions.create(
            model="gemma-3-270m",
            messages=messages,
            max_tokens=30,
            temperature=1.0,
            seed=seed,
            response_format=fmt,
        )
        assert out.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)


@pytest.mark.slow
def test_json_object_output_is_json(client):
    out = client.completions.create(
        model="gemma-3-270m",
        prompt="A list of fruits:",
        max_tokens=16,
        temperature=0,
        extra_body={"response_format": {"type": "json_object"}},
    )
    text = out.choices[0].text
    assert text.startswith("{")
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_logprobs_come_from_the_sampling_distribution(client):
    out = client.chat.completions.create(
        model="gemma-3-270m",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert item.logprob == pytest.approx(tops[0])  # greedy picks the most likely token
        assert item.token == item.top_logprobs[0].token and item.logprob <= 0
    comp = client.completions.create(
        model="gemma-3-270m", prompt="Hi", max_tokens=3, temperature=0, logprobs=2
    )
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 3
    assert all(len(t) == 2 for t in lp.top_logprobs)


def test_seeded_sampling_is_reproducible_and_n_choices_differ(client):
    kwargs = dict(
        model="gemma-3-270m",
        prompt="Once upon a time",
        max_tokens=6,
        temperature=1.0,
        seed=1234,
        n=2,
    )
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1]
    assert a.choices[0].text != a.choices[1].text


def test_stop_string_is_honoured(client):
    out = client.completions.create(
        model="gemma-3-270m", prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[" 7"]
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == " 5, 6,"


def _error(exc_info) -> dict:
    body = exc_info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_parameters_get_400_naming_the_field(client):
    msgs = [{"role": "user", "content": "Hi"}]
    cases = [
        (dict(temperature=3.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(n=0), "n"),
        (dict(top_logprobs=50, logprobs=True), "top_logprobs"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(presence_penalty=9), "presence_penalty"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="gemma-3-270m", messages=msgs, **kwargs)
        err = _error(exc)
        assert err["param"] == param and param in err["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "assistant", "content": "Hello"}]
        )
    assert _error(exc)["param"] == "messages"


def test_context_overflow_is_400_not_truncation(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="gemma-3-270m", prompt="Hi", max_tokens=40000)
    err = _error(exc)
    assert err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=2)
    assert _error(exc)["param"] == "model"


def test_malformed_json_oversized_body_and_missing_key(server):
    url = f"{server.url}/v1/chat/completions"
    headers = {**AUTH, "Content-Type": "application/json"}
    r = httpx.post(url, content=b'{"messages": [', headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}]})
    r = httpx.post(url, content=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(url, json={"messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(url, json={"messages": []}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_vertex_routes_from_environment(server):
    assert httpx.get(server.url + HEALTH_ROUTE).status_code == 200
    body = {
        "instances": [
            {"prompt": "The capital of France is", "raw_response": True},
            {"@requestFormat": "chatCompletions", "messages": [{"role": "user", "content": "Hi"}]},
        ],
        "parameters": {"max_tokens": 6, "temperature": 0},
    }
    r = httpx.post(server.url + PREDICT_ROUTE, json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    plain, chat = r.json()["predictions"]
    assert isinstance(plain, str) and plain and not plain.startswith("Prompt:")
    assert chat["object"] == "chat.completion" and chat["usage"]["completion_tokens"] <= 6
    r = httpx.post(server.url + PREDICT_ROUTE, json={"instances": [{"prompt": 3}]}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "instances[0].prompt"


def test_health_ready_and_metrics(server, client):
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ready").status_code == 200
    before = server.metric("opengemma:generation_tokens_total")
    client.completions.create(model="gemma-3-270m", prompt="Hi", max_tokens=3, temperature=0)
    assert server.metric("opengemma:generation_tokens_total") == before + 3
    for name in (
        "opengemma:num_requests_running",
        "opengemma:num_requests_waiting",
        "opengemma:time_to_first_token_seconds_count",
        "opengemma:e2e_request_latency_seconds_count",
    ):
        assert f"\n{name}" in httpx.get(server.url + "/metrics").text
    assert server.metric("opengemma:http_requests_total", route="/v1/completions") >= 1
