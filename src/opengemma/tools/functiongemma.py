"""FunctionGemma's tool format: control tokens, `<escape>`-quoted strings."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from opengemma.errors import InvalidRequestError
from opengemma.tools.core import (
    ToolCall,
    ToolFormat,
    call_rules,
    calls_of,
    fits,
    message_text,
    tool_names,
)

FG_INSTRUCTION = "You are a model that can do function calling with the following functions"


# ---- FunctionGemma: control tokens, <escape>-quoted strings ------------------------------------

ESC = "<escape>"


def fg_value(value: Any, upper_types: bool = False) -> str:
    """A value in FunctionGemma's syntax: bare keys, `<escape>`-wrapped strings."""
    if isinstance(value, Mapping):
        items = sorted(value.items()) if upper_types else value.items()
        inner = []
        for k, v in items:
            if upper_types and k == "type" and isinstance(v, str):
                v = v.upper()
            inner.append(f"{k}:{fg_value(v, upper_types and k != 'enum')}")
        return "{" + ",".join(inner) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(fg_value(v, upper_types) for v in value) + "]"
    if isinstance(value, str):
        return f"{ESC}{value}{ESC}"
    return json.dumps(value)


class _FGReader:
    """Reads FunctionGemma values: {k:v,...}, [v,...], <escape>text<escape>, bare literals."""

    def __init__(self, text: str, pos: int = 0):
        self.text, self.pos = text, pos

    def value(self) -> Any:
        t = self.text
        if t.startswith(ESC, self.pos):
            end = t.find(ESC, self.pos + len(ESC))
            if end < 0:
                raise ValueError("unterminated string")
            out, self.pos = t[self.pos + len(ESC) : end], end + len(ESC)
            return out
        if t.startswith("{", self.pos):
            return self.items("}", keyed=True)
        if t.startswith("[", self.pos):
            return self.items("]", keyed=False)
        m = re.compile(r"[^,}\]]+").match(t, self.pos)
        if m is None:
            raise ValueError(f"no value at {self.pos}")
        self.pos = m.end()
        raw = m.group(0).strip()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def items(self, close: str, keyed: bool) -> Any:
        self.pos += 1
        out: Any = {} if keyed else []
        while not self.text.startswith(close, self.pos):
            if keyed:
                m = re.compile(r"([^:{}\[\],]+):").match(self.text, self.pos)
                if m is None:
                    raise ValueError(f"no key at {self.pos}")
                self.pos = m.end()
                out[m.group(1).strip()] = self.value()
            else:
                out.append(self.value())
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith(close, self.pos):
                raise ValueError(f"expected , or {close} at {self.pos}")
        self.pos += 1
        return out


class FunctionGemmaFormat(ToolFormat):
    name = "functiongemma"
    opener = "<start_function_call>"
    stop_pieces = ("<start_function_response>",)
    special_text = True

    def prompt_ids(self, tokenizer, messages, tools):
        start, end = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
        newline = tokenizer.encode_plain("\n")
        ids = [tokenizer.bos_id]
        names = tool_names(messages)
        open_model = False  # a model turn left open for the model to go on after results

        def turn(role: str) -> None:
            nonlocal open_model
            if open_model:
                ids.extend([end, *newline])
            ids.extend([start, *tokenizer.encode_plain(f"{role}\n")])
            open_model = role == "model"

        system = [
            message_text(m).strip() for m in messages if m.get("role") in ("system", "developer")
        ]
        if tools or system:
            turn("developer")
            ids.extend(tokenizer.encode_plain("\n\n".join(system) or FG_INSTRUCTION))
            for tool in tools:
                decl = {"description": tool.description, "parameters": tool.parameters}
                body = fg_value(decl, upper_types=True)
                ids.extend(tokenizer.encode(f"<start_function_declaration>declaration:"
                                            f"{tool.name}{body}<end_function_declaration>",
                                            add_bos=False))  # fmt: skip
            ids.extend([end, *newline])
            open_model = False
        for i, m in enumerate(messages):
            role = m.get("role")
            if role == "user":
                turn("user")
                ids.extend(tokenizer.encode_plain(message_text(m).strip()))
                ids.extend([end, *newline])
                open_model = False
            elif role == "assistant":
                if not open_model:
                    turn("model")
                ids.extend(tokenizer.encode_plain(message_text(m).strip()))
                for c in calls_of(m):
                    markup = f"<start_function_call>call:{c.name}{fg_value(c.arguments)}"
                    ids.extend(tokenizer.encode(markup + "<end_function_call>", add_bos=False))
                if not m.get("tool_calls"):
                    ids.extend([end, *newline])
                    open_model = False
            elif role == "tool":
                if not open_model:
                    turn("model")
                name = names.get(str(m.get("tool_call_id", "")), m.get("name") or "function")
                try:
                    result = json.loads(message_text(m))
                except ValueError:
                    result = message_text(m)
                if not isinstance(result, Mapping):
                    result = {"value": result}
                markup = f"<start_function_response>response:{name}{fg_value(result)}"
                ids.extend(tokenizer.encode(markup + "<end_function_response>", add_bos=False))
            elif role not in ("system", "developer"):
                raise InvalidRequestError(f"message {i} has role {role!r}; use system, user, "
                                          "assistant or tool")  # fmt: skip
        if not open_model:
            ids.extend([start, *tokenizer.encode_plain("model\n")])
        return ids

    def parse(self, text, tools):
        body = text.strip()
        if not body.startswith(self.opener):
            return None
        known = {t.name: t for t in tools}
        calls, pos = [], 0
        pattern = re.compile(r"\s*<start_function_call>call:([A-Za-z_][A-Za-z0-9_]*)(?=\{)")
        while pos < len(body):
            m = pattern.match(body, pos)
            if m is None:
                return None
            reader = _FGReader(body, m.end())
            try:
                args = reader.value()
            except ValueError:
                return None
            if not body.startswith("<end_function_call>", reader.pos):
                return None
            if not isinstance(args, dict) or not fits(known.get(m.group(1)), args):
                return None
            calls.append(ToolCall(m.group(1), args))
            pos = reader.pos + len("<end_function_call>")
            while pos < len(body) and body[pos].isspace():
                pos += 1
        return calls or None

    def call_grammar(self, tokenizer, tools, parallel):
        def tok(piece: str) -> str:
            return f"<[{tokenizer.piece_to_id(piece)}]>"

        start, end = tok("<start_function_call>"), tok("<end_function_call>")
        rules = call_rules(
            tools,
            lambda schema: _fg_value_rule(schema, tok),
            "{}:",
            ",",
            lambda name, args: f'{start} "call:{name}{{" {args} "}}" {end}',
        )
        more = " call*" if parallel else ""
        strings = [f"esc_str: {tok(ESC)} /[^<]*/ {tok(ESC)}", "num: /-?[0-9]+(\\.[0-9]+)?/"]
        return "\n".join([f"start: call{more}", *rules, *strings])


def _fg_value_rule(schema: Mapping[str, Any], tok) -> str:
    """Lark for one argument value in FunctionGemma syntax (flat types; others: any string)."""
    if "enum" in schema:
        opts = [f"{tok(ESC)} {json.dumps(str(v))} {tok(ESC)}" if isinstance(v, str) else
                json.dumps(json.dumps(v)) for v in schema["enum"]]  # fmt: skip
        return " | ".join(opts)
    kind = schema.get("type")
    if kind in ("number", "integer"):
        return "/-?[0-9]+/" if kind == "integer" else "num"
    if kind == "boolean":
        return '"true" | "false"'
    return "esc_str"
