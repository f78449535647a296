"""Tool (function) calling: the prompt format and the output parser of each model family.

- Gemma 3 has no tool tokens (Google's "Function calling with Gemma" guide): the function
  schemas go in the prompt as JSON after an instruction, the model answers with a Python-style
  list `[name(arg=value, ...), ...]`, and tool results come back in a user turn as
  ```` ```tool_output ```` blocks.
- FunctionGemma has control tokens: declarations
  `<start_function_declaration>declaration:NAME{...}<end_function_declaration>` in a developer
  turn, calls `<start_function_call>call:NAME{key:<escape>value<escape>}<end_function_call>`,
  results `<start_function_response>response:NAME{...}<end_function_response>` in the model's
  turn (which `<start_function_response>` also ends, as a stop token). Every string value is
  wrapped in `<escape>`.

`tool_format(tokenizer)` picks the format from the vocabulary; `prompt_ids` renders an
OpenAI-style conversation (assistant `tool_calls`, `tool` messages) and `parse` reads calls back
(None when the output is not a well-formed call of a known function: it is then plain text).
`call_grammar` is a Lark grammar (llguidance dialect) that only admits valid calls.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opengemma.chat import _content_text, chat_prompt_ids
from opengemma.errors import InvalidRequestError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
GEMMA3_INSTRUCTION = (
    "You have access to functions. If you decide to invoke any of the function(s), you MUST "
    "put it in the format of\n"
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "\n"
    "You SHOULD NOT include any other text in the response if you call a function\n"
)
FG_INSTRUCTION = "You are a model that can do function calling with the following functions"


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


def _calls_of(message: Mapping[str, Any]) -> list[ToolCall]:
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


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return "" if content is None else _content_text(content)


def _tool_names(messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """tool_call_id -> function name, from the assistant messages."""
    return {c.id: c.name for m in messages for c in _calls_of(m) if c.id}


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


# ---- Gemma 3: Python-style calls ----------------------------------------------------------------


def _py_literal(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_py_literal(k)}: {_py_literal(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_py_literal(v) for v in value) + "]"
    return repr(value)


def _py_call(call: ToolCall) -> str:
    return f"{call.name}({', '.join(f'{k}={_py_literal(v)}' for k, v in call.arguments.items())})"


def _literal(node: ast.AST) -> Any:
    """A Python literal, accepting JSON's true/false/null too."""
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[node.id]
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("** in a dict")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


class PythonicFormat(ToolFormat):
    name = "gemma3"
    opener = "["

    def prompt_ids(self, tokenizer, messages, tools):
        return chat_prompt_ids(tokenizer, self.plain_messages(messages, tools))

    def plain_messages(self, messages, tools) -> list[dict[str, str]]:
        """The conversation as plain system/user/assistant messages (for chat.py's template)."""
        out: list[dict[str, str]] = []

        def put(role: str, text: str) -> None:
            if out and out[-1]["role"] == role and role != "system":
                out[-1]["content"] += "\n\n" + text
            else:
                out.append({"role": role, "content": text})

        system = [_text(m) for m in messages if m.get("role") in ("system", "developer")]
        if tools:
            schemas = json.dumps([t.schema() for t in tools], indent=2, ensure_ascii=False)
            system.append(GEMMA3_INSTRUCTION + schemas)
        if system:
            out.append({"role": "system", "content": "\n\n".join(system)})
        for m in messages:
            role = m.get("role")
            if role in ("system", "developer"):
                continue
            if role == "tool":
                put("user", f"```tool_output\n{_text(m).strip()}\n```")
            elif role == "assistant" and m.get("tool_calls"):
                calls = ", ".join(_py_call(c) for c in _calls_of(m))
                put(
                    "assistant",
                    (_text(m).strip() + "\n" if _text(m).strip() else "") + f"[{calls}]",
                )
            else:
                put(str(role), _text(m))
        return out

    def parse(self, text, tools):
        """The calls of an output that begins with a call list (what the model writes after
        the closing `]`, such as an imagined tool output, is dropped); None if it does not."""
        body = text.strip()
        fence = re.match(r"```(?:tool_code|python)?\s*", body)
        if fence:
            body = body[fence.end() :]
        if not body.startswith("["):
            return None
        for end in (i + 1 for i, ch in enumerate(body) if ch == "]"):
            try:
                tree = ast.parse(body[:end], mode="eval").body
            except SyntaxError:
                continue
            return self._calls(tree, tools)
        return None

    @staticmethod
    def _calls(tree: ast.AST, tools) -> list[ToolCall] | None:
        if not isinstance(tree, ast.List) or not tree.elts:
            return None
        known = {t.name: t for t in tools}
        calls = []
        for node in tree.elts:
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
                return None
            try:
                args = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
            except (ValueError, TypeError, SyntaxError):
                return None
            if len(args) != len(node.keywords) or not _fits(known.get(node.func.id), args):
                return None
            calls.append(ToolCall(node.func.id, args))
        return calls

    def call_grammar(self, tokenizer, tools, parallel):
        rules = _call_rules(
            tools,
            lambda schema: f"%json {json.dumps(schema)}",
            "{}=",
            ", ",
            lambda name, args: f'"{name}(" {args} ")"',
        )
        more = ' (", " call)*' if parallel else ""
        return "\n".join([f'start: "[" call{more} "]"', *rules])


def _call_rules(tools, value_rule, arg: str, sep: str, call) -> list[str]:
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


def _fits(tool: Tool | None, args: Mapping[str, Any]) -> bool:
    """A call of a known function with its required arguments and no unknown ones."""
    if tool is None:
        return False
    props = tool.parameters.get("properties") or {}
    if any(r not in args for r in tool.parameters.get("required") or ()):
        return False
    return not props or tool.parameters.get("additionalProperties", True) or set(args) <= set(props)


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
        names = _tool_names(messages)
        open_model = False  # a model turn left open for the model to go on after results

        def turn(role: str) -> None:
            nonlocal open_model
            if open_model:
                ids.extend([end, *newline])
            ids.extend([start, *tokenizer.encode_plain(f"{role}\n")])
            open_model = role == "model"

        system = [_text(m).strip() for m in messages if m.get("role") in ("system", "developer")]
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
                ids.extend(tokenizer.encode_plain(_text(m).strip()))
                ids.extend([end, *newline])
                open_model = False
            elif role == "assistant":
                if not open_model:
                    turn("model")
                ids.extend(tokenizer.encode_plain(_text(m).strip()))
                for c in _calls_of(m):
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
                    result = json.loads(_text(m))
                except ValueError:
                    result = _text(m)
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
            if not isinstance(args, dict) or not _fits(known.get(m.group(1)), args):
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
        rules = _call_rules(
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


FORMATS: dict[str, ToolFormat] = {f.name: f for f in (PythonicFormat(), FunctionGemmaFormat())}


def tool_format(tokenizer) -> ToolFormat:
    """The tool format of a checkpoint, from its vocabulary: FunctionGemma's control tokens, or
    Gemma 3's prompted Python-style calls."""
    fg = tokenizer.piece_to_id("<start_function_call>")
    if fg is not None and tokenizer.is_special(fg) and tokenizer.piece_to_id(ESC) is not None:
        return FORMATS["functiongemma"]
    return FORMATS["gemma3"]


def stop_ids(tokenizer, fmt: ToolFormat) -> set[int]:
    """Ids of the format's extra stop tokens present in this vocabulary."""
    ids = (tokenizer.piece_to_id(p) for p in fmt.stop_pieces)
    return {i for i in ids if i is not None}
