"""Tool formats: prompts rendered and calls parsed per family, grammars accepted by llguidance."""

from __future__ import annotations

import json

import pytest

from opengemma.tokenizer import CONTROL, Tokenizer
from opengemma.tools import (
    FunctionGemmaFormat,
    PythonicFormat,
    Tool,
    fg_value,
    parse_tools,
    tool_format,
)

WEATHER = Tool(
    "get_weather",
    "Weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
)
FG_PIECES = ["<start_function_declaration>", "<end_function_declaration>", "<start_function_call>",
             "<end_function_call>", "<start_function_response>", "<end_function_response>",
             "<escape>"]  # fmt: skip


@pytest.fixture(scope="module")
def fg_tokenizer(lm):
    """The embedded Gemma 3 vocabulary plus FunctionGemma's control tokens."""
    proto = lm.tokenizer.model_proto
    for piece in FG_PIECES:
        proto.pieces.add(piece=piece, score=0.0, type=CONTROL)
    return Tokenizer(proto)


def test_pythonic_parse():
    fmt = PythonicFormat()
    calls = fmt.parse("[get_weather(city='Paris', unit=\"celsius\")]", [WEATHER])
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"})
    ]
    fenced = fmt.parse("```tool_code\n[get_weather(city='Oslo'), get_weather(city='Rome')]\n```",
                       [WEATHER])  # fmt: skip
    assert [c.arguments["city"] for c in fenced] == ["Oslo", "Rome"]
    trailing = fmt.parse("[get_weather(city='Oslo')] ```tool_output\n{}", [WEATHER])
    assert [c.arguments for c in trailing] == [{"city": "Oslo"}]
    bad_calls = ["[get_weather(city='Paris'", "[unknown(city='x')]", "[get_weather(unit='c')]",
                 "Sure! [get_weather(city='x')]", "[get_weather('x')]", "[]", "[1] [x()]",
                 "[__import__('os')]"]  # fmt: skip
    for bad in bad_calls:
        assert fmt.parse(bad, [WEATHER]) is None, bad


def test_pythonic_prompt_renders_calls_and_results(lm):
    fmt = PythonicFormat()
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "sunny"}'},
    ]  # fmt: skip
    plain = fmt.plain_messages(messages, [WEATHER])
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user"]
    assert plain[0]["content"].startswith("You have access to functions.")
    assert '"name": "get_weather"' in plain[0]["content"]
    assert plain[2]["content"] == "[get_weather(city='Paris')]"
    assert plain[3]["content"] == '```tool_output\n{"sky": "sunny"}\n```'
    text = lm.tokenizer.decode(fmt.prompt_ids(lm.tokenizer, messages, [WEATHER]), False)
    assert text.endswith("```<end_of_turn>\n<start_of_turn>model\n")


def test_grammars_compile(lm, fg_tokenizer):
    import llguidance

    from opengemma.server.constrain import JsonGrammar

    for tok, fmt in [(lm.tokenizer, PythonicFormat()), (fg_tokenizer, FunctionGemmaFormat())]:
        lark = fmt.call_grammar(tok, [WEATHER], parallel=True)
        grammar = JsonGrammar(tok, sorted(lm.stop_ids))
        lltok = grammar._ll_tokenizer()
        compiled = llguidance.LLMatcher.grammar_from_lark(lark)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(compiled, lltok)
        assert not is_error, messages
        constraint = grammar.lark_constraint(lark, "tools")
        assert constraint.allowed().sum() >= 1


def test_functiongemma_format(fg_tokenizer):
    assert isinstance(tool_format(fg_tokenizer), FunctionGemmaFormat)
    fmt = FunctionGemmaFormat()
    decl = fg_value({"description": "d", "parameters": WEATHER.parameters}, upper_types=True)
    assert decl == (
        "{description:<escape>d<escape>,parameters:{properties:{city:{type:<escape>STRING<escape>},"
        "unit:{enum:[<escape>celsius<escape>,<escape>fahrenheit<escape>]}},"
        "required:[<escape>city<escape>],type:<escape>OBJECT<escape>}}"
    )
    out = ("<start_function_call>call:get_weather{city:<escape>Tokyo, Japan<escape>,"
           "unit:<escape>celsius<escape>}<end_function_call>")  # fmt: skip
    calls = fmt.parse(out, [WEATHER])
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Tokyo, Japan", "unit": "celsius"})
    ]
    assert fmt.parse(out[:-5], [WEATHER]) is None
    messages = [
        {"role": "user", "content": "Weather in Tokyo?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Tokyo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 15}'},
    ]  # fmt: skip
    ids = fmt.prompt_ids(fg_tokenizer, messages, [WEATHER])
    text = fg_tokenizer.decode(ids, skip_special=False)
    assert text.startswith("<bos><start_of_turn>developer\nYou are a model that can do function "
                           "calling with the following functions<start_function_declaration>"
                           "declaration:get_weather{description:")  # fmt: skip
    assert text.endswith(
        "<start_of_turn>model\n<start_function_call>call:get_weather{city:<escape>Tokyo<escape>}"
        "<end_function_call><start_function_response>response:get_weather{temperature:15}"
        "<end_function_response>"
    )
    ctrl = fg_tokenizer.piece_to_id("<start_function_call>")
    assert ctrl in ids  # markup as control ids, not spelled out


def test_parse_tools_errors():
    with pytest.raises(ValueError, match="name"):
        parse_tools([{"type": "function", "function": {"description": "x"}}])
    with pytest.raises(ValueError, match="same name"):
        parse_tools([{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="letters"):
        parse_tools([{"name": "bad-name"}])


def _primed() -> list[dict]:
    history = []
    for city in ["Paris", "Rome", "Oslo"]:
        fn = {"name": "get_weather", "arguments": json.dumps({"city": city})}
        call = {"id": f"c_{city}", "type": "function", "function": fn}
        history += [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c_{city}", "content": '{"sky": "sunny"}'},
            {"role": "assistant", "content": f"It is sunny in {city}."},
        ]
    return [*history, {"role": "user", "content": "Weather in London?"}]


SPECS = [{"type": "function", "function": {"name": WEATHER.name, "description": WEATHER.description,
                                           "parameters": WEATHER.parameters}}]  # fmt: skip


def test_lm_chat_with_tools(lm):
    reply = lm.chat(_primed(), max_tokens=24, tools=SPECS, temperature=0)
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("get_weather", {"city": "London"})
    ]
    message = reply.message()
    assert message["content"] is None and message["tool_calls"][0]["type"] == "function"
    plain = lm.chat([{"role": "user", "content": "Say hi."}], max_tokens=6, temperature=0)
    assert not hasattr(plain, "tool_calls")


def test_cli_chat_tools_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "tools.json"
    bad.write_text('{"not": "a list"}')
    cmd = [sys.executable, "-m", "opengemma.cli", "chat", "-q", "--tools", str(bad)]
    proc = subprocess.run(cmd, input="hi\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"opengemma: error: --tools {bad}: the file must hold a JSON list of functions"
    ]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SPECS))
    cmd = [sys.executable, "-m", "opengemma.cli", "chat", "-q", "--temperature", "0",
           "--max-tokens", "8", "--tools", str(good)]  # fmt: skip
    proc = subprocess.run(cmd, input="Hello!\n/exit\n", capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
