"""Tool calling, the shared part: functions, calls, the format interface, grammar pieces."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opengemma.chat import _content_text
from opengemma.errors import InvalidRequestError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass
class Tool:
    """One callable function: its name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass
class ToolCall:
    """A call the model asked for; `arguments` is the decoded JSON object."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def openai(self) -> dict[str, Any]:
        """The OpenAI `tool_calls` item."""
        args = json.dumps(self.arguments, ensure_ascii=False)
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": args},
        }


def parse_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[Tool]:
    """OpenAI `tools` (`{"type": "function", "function": {...}}`, or the bare function) -> Tools."""
    out: list[Tool] = []
    for i, item in enumerate(tools or ()):
        fn = item.get("function", item) if isinstance(item, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"tools[{i}] needs a function with a name")
        if item.get("type", "function") != "function":
            raise InvalidRequestError(f"tools[{i}].type must be 'function'")
        name = fn["name"]
        if not NAME.fullmatch(name):
            raise InvalidRequestError(
                f"tools[{i}].function.name {name!r} must be letters, digits and _ (at most 64), "
                "not starting with a digit"
            )
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, Mapping) or params.get("type", "object") != "object":
            raise InvalidRequestError(f"tools[{i}].function.parameters must be an object schema")
        out.append(Tool(name, str(fn.get("description") or ""), dict(params)))
    if len({t.name for t in out}) != len(out):
        raise InvalidRequestError("tools has two functions with the same name")
    return out


def calls_of(message: Mapping[str, Any]) -> list[ToolCall]:
    """An assistant message's `tool_calls` as ToolCalls (arguments given as a JSON string)."""
    calls = []
    for item in message.get("tool_calls") or ():
        fn = item.get("function", {})
        args = fn.get("arguments") or "{}"
        try:
            parsed = json.loads(args) if isinstance(args, str) else dict(args)
        except (ValueError, TypeError):
            raise InvalidRequestError(
                f"the arguments of tool call {item.get('id')!r} are not a JSON object"
            ) from None
        calls.append(ToolCall(str(fn.get("name", "")), parsed, str(item.get("id", ""))))
    return calls


def message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return "" if content is None else _content_text(content)


def tool_names(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """tool_call_id -> function name, from the assistant messages."""
    return {c.id: c.name for m in messages for c in calls_of(m) if c.id}


class ToolFormat:
    """How one model family is told about tools, and how its calls look."""

    name = "base"
    opener = ""  # an output that begins with this (after whitespace) is read as calls
    stop_pieces: tuple[str, ...] = ()  # extra control tokens that end a tool-call turn
    special_text = False  # control tokens must appear in the text for `parse`

    def prompt_ids(self, tokenizer, messages, tools: Sequence[Tool]) -> list[int]:
        raise NotImplementedError

    def parse(self, text: str, tools: Sequence[Tool]) -> list[ToolCall] | None:
        raise NotImplementedError

    def call_grammar(self, tokenizer, tools: Sequence[Tool], parallel: bool) -> str:
        raise NotImplementedError


def call_rules(tools, value_rule, arg: str, sep: str, call) -> list[str]:
    """Lark rules `call: f0 | f1 ...`, one per tool, its arguments in schema order (the
    required ones always), each value by `value_rule(schema)`; `arg` formats the name."""
    rules, alts = [], []
    for ti, tool in enumerate(tools):
        props = list((tool.parameters.get("properties") or {}).items())
        required = set(tool.parameters.get("required") or ())
        parts = []
        for pi, (pname, pschema) in enumerate(props):
            rules.append(f"v{ti}_{pi}: {value_rule(pschema or {})}")
            parts.append((f"{json.dumps(arg.format(pname))} v{ti}_{pi}", pname in required))
        rules.append(f"f{ti}: {call(tool.name, _sequence(parts, sep))}")
        alts.append(f"f{ti}")
    return ["call: " + " | ".join(alts), *rules]


def _sequence(parts: list[tuple[str, bool]], sep: str) -> str:
    """Lark for `parts` in order joined by `sep`; optional ones (False) may be left out."""

    def more(i: int) -> str:
        if i == len(parts):
            return ""
        item, needed = parts[i]
        return (f'"{sep}" {item} ' if needed else f'("{sep}" {item})? ') + more(i + 1)

    def first(i: int) -> str:
        if i == len(parts):
            return ""
        item, needed = parts[i]
        if needed:
            return f"{item} {more(i + 1)}"
        rest = first(i + 1)
        return f"({item} {more(i + 1)}| {rest})" if rest else f"({item})?"

    return first(0)


def fits(tool: Tool | None, args: Mapping[str, Any]) -> bool:
    """A call of a known function with its required arguments and no unknown ones."""
    if tool is None:
        return False
    props = tool.parameters.get("properties") or {}
    if any(r not in args for r in tool.parameters.get("required") or ()):
        return False
    return not props or tool.parameters.get("additionalProperties", True) or set(args) <= set(props)
