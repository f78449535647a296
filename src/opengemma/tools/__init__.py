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

from typing import Any

from opengemma.tools.core import Tool, ToolCall, ToolFormat, parse_tools
from opengemma.tools.functiongemma import ESC, FunctionGemmaFormat, fg_value
from opengemma.tools.pythonic import PythonicFormat

__all__ = ["ChatReply", "FunctionGemmaFormat", "PythonicFormat", "Tool", "ToolCall",
           "ToolFormat", "fg_value", "parse_tools", "stop_ids", "tool_chat",
           "tool_format"]  # fmt: skip

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


class ChatReply(str):
    """A chat answer: the text (a str), and `tool_calls` (empty when the model answered in
    text). With calls, the text is the raw call markup the model wrote."""

    tool_calls: list[ToolCall]

    def __new__(cls, text: str, tool_calls: list[ToolCall] | None = None):
        self = super().__new__(cls, text)
        self.tool_calls = tool_calls or []
        return self

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (OpenAI shape)."""
        if not self.tool_calls:
            return {"role": "assistant", "content": str(self)}
        return {"role": "assistant", "content": None,
                "tool_calls": [c.openai() for c in self.tool_calls]}  # fmt: skip


def tool_chat(lm, messages, tools, max_tokens: int = 256, **kwargs: Any) -> ChatReply:
    """`lm.chat(..., tools=...)`: the format's prompt, then the answer read back as calls when
    it is a well-formed call of one of `tools` (else text). Calls are not constrained here
    (the server's tool_choice="required" is)."""
    parsed = parse_tools(tools)
    fmt = tool_format(lm.tokenizer)
    ids = fmt.prompt_ids(lm.tokenizer, messages, parsed)
    tokens = [chunk.token for chunk in lm.stream_ids(ids, max_tokens, **kwargs)]
    raw = lm.tokenizer.decode([t for t in tokens if t not in lm.stop_ids], skip_special=False)
    for piece in fmt.stop_pieces:  # FunctionGemma: the model would go on with a made-up result
        raw = raw.split(piece)[0]
    calls = fmt.parse(raw, parsed) if parsed else None
    text = raw if fmt.special_text else lm.tokenizer.decode(tokens, skip_special=True)
    return ChatReply(raw if calls else text, calls)
