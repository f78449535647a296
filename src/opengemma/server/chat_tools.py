"""Tool calling on the chat routes: what a request's `tools` / `tool_choice` change in the
prompt and the generation, and how the output is read back as calls (OpenAI and Ollama shapes).

`auto`: the model may answer with calls or text; an output that is not a well-formed call of a
known function is returned as text. `required` / a named function: the output is constrained by
a grammar that only admits calls (of that function), each argument valid for its JSON schema.
`none`: the tools are described but the output is text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opengemma.chat import chat_prompt_ids
from opengemma.errors import InvalidRequestError
from opengemma.server.errors import bad_request
from opengemma.server.state import ServerState
from opengemma.tools import Tool, ToolCall, ToolFormat, parse_tools, stop_ids, tool_format


@dataclass
class ToolPlan:
    """The tool side of one chat request."""

    fmt: ToolFormat
    tools: list[Tool]
    choice: str  # "auto" | "required" | "none" | "function" (named: tools holds just that one)
    parallel: bool

    @property
    def parses(self) -> bool:
        return self.choice != "none" and bool(self.tools)

    def split(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a finished output: calls when it parses, else the text."""
        calls = self.fmt.parse(text, self.tools) if self.parses else None
        if not calls:
            return text, []
        return None, calls if self.parallel else calls[:1]


def tool_plan(
    state: ServerState,
    tools: Sequence[Mapping[str, Any]] | None,
    choice: Any,
    parallel: bool,
    messages: Sequence[Mapping[str, Any]],
) -> ToolPlan | None:
    """None when the request neither offers tools nor carries tool turns in its history."""
    history = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
    if not tools and not history:
        if choice not in (None, "none", "auto"):
            raise bad_request("tool_choice needs tools; send the functions in tools", "tool_choice")
        return None
    try:
        parsed = parse_tools(tools)
    except InvalidRequestError as exc:
        raise bad_request(str(exc), "tools") from None
    kind = choice if isinstance(choice, str) else "auto" if choice is None else "function"
    if kind == "function":
        name = choice["function"]["name"] if isinstance(choice, Mapping) else choice.function.name
        chosen = [t for t in parsed if t.name == name]
        if not chosen:
            raise bad_request(
                f"tool_choice names {name!r}, which is not in tools", "tool_choice.function.name"
            )
        parsed = chosen
    if kind == "required" and not parsed:
        raise bad_request("tool_choice 'required' needs at least one tool", "tool_choice")
    return ToolPlan(tool_format(state.lm.tokenizer), parsed, kind, parallel and kind != "function")


def plain_prompt(state: ServerState, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The prompt of a conversation without tools (chat.py's Gemma template), 400 if invalid."""
    try:
        return chat_prompt_ids(state.lm.tokenizer, messages)
    except InvalidRequestError as exc:
        raise bad_request(str(exc), "messages") from None


def prompt_ids(state: ServerState, plan: ToolPlan, messages: Sequence[Mapping[str, Any]]):
    try:
        return plan.fmt.prompt_ids(state.lm.tokenizer, messages, plan.tools)
    except InvalidRequestError as exc:
        raise bad_request(str(exc), "messages") from None


def apply(state: ServerState, plan: ToolPlan, spec) -> None:
    """Set a generation Spec's grammar, stop tokens and text mode for the tools."""
    tok = state.lm.tokenizer
    if plan.parses:
        spec.special_text = plan.fmt.special_text
        extra = stop_ids(tok, plan.fmt)
        if extra:
            spec.stop_ids = frozenset(state.lm.stop_ids | extra)
    if plan.choice in ("required", "function"):
        if spec.grammar is not None:
            raise bad_request(
                "response_format cannot be combined with a required tool call", "response_format"
            )
        lark = plan.fmt.call_grammar(tok, plan.tools, plan.parallel)
        spec.grammar = lambda: state.json_grammar.lark_constraint(lark, "tools")
        spec.grammar()  # a schema llguidance refuses is a 400 now, not an error mid-stream


class ToolStream:
    """Streams one choice: text goes out as it comes unless it begins like a call, which is
    held to the end and parsed then (a call that does not parse goes out as text)."""

    def __init__(self, plan: ToolPlan):
        self.plan = plan
        self.held = ""
        self.passing = not plan.parses

    def feed(self, text: str) -> str:
        if self.passing:
            return text
        self.held += text
        head = self.held.lstrip()
        opener = self.plan.fmt.opener
        if not head or head.startswith(opener) or opener.startswith(head):
            return ""  # could still be a call: hold it
        self.passing = True
        out, self.held = self.held, ""
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(text still to send, calls) when the choice ends."""
        if self.passing:
            return "", []
        content, calls = self.plan.split(self.held)
        return content or "", calls


def openai_calls(calls: list[ToolCall], streamed: bool = False) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` (with `index` for stream deltas)."""
    out = [c.openai() for c in calls]
    if streamed:
        out = [{"index": i, **c} for i, c in enumerate(out)]
    return out
