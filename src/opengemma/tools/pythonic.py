"""Gemma 3's tool format: schemas as JSON in the prompt, calls as a Python-style list."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from opengemma.chat import chat_prompt_ids
from opengemma.tools.core import (
    ToolCall,
    ToolFormat,
    call_rules,
    calls_of,
    fits,
    message_text,
)

GEMMA3_INSTRUCTION = (
    "You have access to functions. If you decide to invoke any of the function(s), you MUST "
    "put it in the format of\n"
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "\n"
    "You SHOULD NOT include any other text in the response if you call a function\n"
)


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

        system = [message_text(m) for m in messages if m.get("role") in ("system", "developer")]
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
                put("user", f"```tool_output\n{message_text(m).strip()}\n```")
            elif role == "assistant" and m.get("tool_calls"):
                calls = ", ".join(_py_call(c) for c in calls_of(m))
                put(
                    "assistant",
                    (message_text(m).strip() + "\n" if message_text(m).strip() else "")
                    + f"[{calls}]",
                )
            else:
                put(str(role), message_text(m))
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
            if len(args) != len(node.keywords) or not fits(known.get(node.func.id), args):
                return None
            calls.append(ToolCall(node.func.id, args))
        return calls

    def call_grammar(self, tokenizer, tools, parallel):
        rules = call_rules(
            tools,
            lambda schema: f"%json {json.dumps(schema)}",
            "{}=",
            ", ",
            lambda name, args: f'"{name}(" {args} ")"',
        )
        more = ' (", " call)*' if parallel else ""
        return "\n".join([f'start: "[" call{more} "]"', *rules])
