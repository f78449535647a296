"""Tool calling through the official `openai` client against the real server (default int8
path, Gemma 3's Python-style call format)."""

from __future__ import annotations

import json

import jsonschema
import pytest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city"],
}
TIME = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}},
    "required": ["city"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast "
     "for a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
     "parameters": TIME}},
]  # fmt: skip
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION = [{"role": "user", "content": "What is the weather and the local time in Paris?"}]


@pytest.fixture(scope="module")
def oai(int8_server):
    from openai import OpenAI

    return OpenAI(base_url=f"{int8_server.url}/v1", api_key="none", max_retries=0, timeout=300)


def _check_calls(calls) -> list[tuple[str, dict]]:
    out = []
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


def test_required_calls_are_schema_valid_and_round_trip(oai):
    seen = []
    for seed in range(0, 20, 4):  # 20 seeded samples: 5 requests x n=4 (seeds seed..seed+3)
        r = oai.chat.completions.create(
            model="gemma-3-270m", messages=QUESTION, tools=TOOLS, tool_choice="required",
            temperature=1.0, seed=seed, n=4, max_tokens=80,
        )  # fmt: skip
        for choice in r.choices:
            assert choice.finish_reason == "tool_calls"
            assert choice.message.content is None
            seen.append(_check_calls(choice.message.tool_calls))
    assert len(seen) == 20
    # the round trip: the calls, their results, and the model's answer in text
    r = oai.chat.completions.create(
        model="gemma-3-270m", messages=QUESTION, tools=TOOLS, tool_choice="required",
        temperature=0, max_tokens=80,
    )  # fmt: skip
    message = r.choices[0].message
    calls = _check_calls(message.tool_calls)
    results = {"get_weather": '{"sky": "sunny", "celsius": 21}', "get_time": '{"time": "14:05"}'}
    history = [*QUESTION, message.model_dump(exclude_none=True)]
    history += [
        {"role": "tool", "tool_call_id": c.id, "content": results[c.function.name]}
        for c in message.tool_calls
    ]
    answer = oai.chat.completions.create(
        model="gemma-3-270m", messages=history, tools=TOOLS, tool_choice="none",
        temperature=0, max_tokens=24,
    )  # fmt: skip
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content.strip()
    assert calls


def test_named_choice_calls_that_function(oai):
    r = oai.chat.completions.create(
        model="gemma-3-270m", messages=QUESTION, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0.8, seed=5, max_tokens=60,
    )  # fmt: skip
    calls = _check_calls(r.choices[0].message.tool_calls)
    assert [name for name, _ in calls] == ["get_time"]


def test_streamed_deltas_reassemble_to_the_same_calls(oai):
    args = dict(model="gemma-3-270m", messages=QUESTION, tools=TOOLS, tool_choice="required",
                temperature=1.0, seed=11, max_tokens=80)  # fmt: skip
    whole = oai.chat.completions.create(**args)
    parts: dict[int, dict] = {}
    finish = None
    for chunk in oai.chat.completions.create(**args, stream=True):
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        assert not choice.delta.content
        for d in choice.delta.tool_calls or ():
            entry = parts.setdefault(d.index, {"name": "", "arguments": ""})
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    streamed = [(p["name"], json.loads(p["arguments"])) for _, p in sorted(parts.items())]
    assert streamed == _check_calls(whole.choices[0].message.tool_calls)


def _primed_history() -> list[dict]:
    """Earlier turns that called get_weather, so the model starts the next answer with a call."""
    history = []
    for city in ["Paris", "Rome", "Oslo"]:
        args = json.dumps({"city": city})
        call = {"id": f"call_{city}", "type": "function",
                "function": {"name": "get_weather", "arguments": args}}  # fmt: skip
        history += [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{city}", "content": '{"sky": "sunny"}'},
            {"role": "assistant", "content": f"It is sunny in {city}."},
        ]
    return [*history, {"role": "user", "content": "Weather in London?"}]


def test_malformed_call_under_auto_is_text(oai):
    r = oai.chat.completions.create(
        model="gemma-3-270m", messages=_primed_history(), tools=TOOLS, tool_choice="auto",
        temperature=0, max_tokens=5,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.message.tool_calls is None
    assert choice.message.content.startswith("[get_weather(")  # cut short: not a valid call
    assert choice.finish_reason == "length"
    streamed = oai.chat.completions.create(
        model="gemma-3-270m", messages=_primed_history(), tools=TOOLS, tool_choice="auto",
        temperature=0, max_tokens=5, stream=True,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == choice.message.content


def test_tool_errors_are_400(oai):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="not in tools"):
        oai.chat.completions.create(
            model="gemma-3-270m", messages=QUESTION, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )  # fmt: skip
    with pytest.raises(BadRequestError, match="tool_choice needs tools"):
        oai.chat.completions.create(model="gemma-3-270m", messages=QUESTION, tool_choice="required")
