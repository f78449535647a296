"""The Ollama API through the official `ollama` Python client against the real server
(default int8 path)."""

from __future__ import annotations

import json

import httpx
import pytest

try:
    import ollama
except ImportError:  # pragma: no cover - a clear failure, not a skip
    raise ImportError("the ollama client is a dev dependency: pip install -e '.[dev]'") from None

MODEL = "gemma-3-270m"


@pytest.fixture(scope="module")
def client(int8_server):
    return ollama.Client(host=int8_server.url, timeout=300)


def _greedy(**extra):
    return {"temperature": 0, "num_predict": 12, **extra}


def test_generate_matches_openai_completion(client, int8_server):
    r = client.generate(model=MODEL, prompt="Name three colors.", stream=False, options=_greedy())
    assert r.done and r.done_reason in ("stop", "length")
    assert r.response.strip()
    assert 0 < r.eval_count <= 12 and r.prompt_eval_count > 5
    assert r.total_duration >= r.eval_duration > 0 and r.prompt_eval_duration > 0
    # the same request on the OpenAI route: the same greedy text
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colors."}],
            "temperature": 0, "max_tokens": 12}  # fmt: skip
    oai = httpx.post(f"{int8_server.url}/v1/chat/completions", json=body, timeout=300).json()
    assert oai["choices"][0]["message"]["content"] == r.response
    parts = list(client.generate(model=MODEL, prompt="Name three colors.", options=_greedy(),
                               stream=True))  # fmt: skip
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.response for p in parts) == r.response
    assert parts[-1].eval_count == r.eval_count


def test_chat_streaming_and_not(client):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
    whole = client.chat(model=MODEL, messages=messages, options=_greedy(), stream=False)
    assert whole.message.role == "assistant" and whole.message.content.strip()
    assert whole.done_reason in ("stop", "length")
    parts = list(client.chat(model=MODEL, messages=messages, options=_greedy(), stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count
    # options: num_predict caps, stop cuts, seed repeats
    short = client.chat(model=MODEL, messages=messages, options={"num_predict": 3})
    assert short.eval_count == 3 and short.done_reason == "length"
    seeded = [
        client.chat(model=MODEL, messages=messages,
                    options={"seed": 7, "temperature": 1.0, "num_predict": 8}).message.content
        for _ in range(2)
    ]  # fmt: skip
    assert seeded[0] == seeded[1]


def test_chat_with_tools_and_format(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather "
              "in a city", "parameters": {"type": "object", "properties": {"city": {
                  "type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    history = []
    for city in ["Paris", "Rome", "Oslo"]:
        history += [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": city}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": '{"sky": "sunny"}'},
            {"role": "assistant", "content": f"It is sunny in {city}."},
        ]  # fmt: skip
    history.append({"role": "user", "content": "Weather in London?"})
    r = client.chat(model=MODEL, messages=history, tools=tools, options=_greedy(num_predict=20))
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "London"}
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
              "required": ["name"], "additionalProperties": False}  # fmt: skip
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Name a fruit as JSON."}],
                    format=schema, options={"num_predict": 40, "seed": 1})  # fmt: skip
    assert set(json.loads(r.message.content)) == {"name"}


def test_tags_show_ps_version(client, int8_server):
    models = client.list().models
    assert [m.model for m in models] == [MODEL]
    details = models[0].details
    assert details.family == "gemma3" and details.format == "gguf"
    assert details.quantization_level == "Q4_K_M" and details.parameter_size.endswith("M")
    assert models[0].size > 100_000_000 and len(models[0].digest) == 64
    shown = client.show(MODEL)
    assert "tools" in shown.capabilities and shown.modelinfo["gemma3.context_length"] == 32768
    running = client.ps().models
    assert [m.model for m in running] == [MODEL] and running[0].context_length == 32768
    assert httpx.get(f"{int8_server.url}/api/version").json()["version"]


def test_errors_in_ollama_shape(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and "not found" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="hi", options={"top_p": 5})
    assert err.value.status_code == 400 and "top_p" in err.value.error
