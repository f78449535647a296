"""Chat messages -> prompt ids with the Gemma turn template.

`<bos>` then, per turn, `<start_of_turn>{role}\\n{content}<end_of_turn>\\n`; the generation
prompt is `<start_of_turn>model\\n`. Control tokens are inserted as ids; user content is
tokenized as plain text, so a user who types `<start_of_turn>` cannot forge a turn. Gemma 1-3
have no system role: system text is prepended to the first user turn (as Gemma 3's template
does). Gemma 4 writes the same structure with `<|turn>`/`<turn|>` and a `system` turn of its own;
the tokenizer's vocabulary (`Tokenizer.chat_style`) says which template a checkpoint speaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opengemma.errors import InvalidRequestError

ROLES = {"user": "user", "assistant": "model", "model": "model"}


def _content_text(content: Any) -> str:
    """Plain string content, or the text parts of an OpenAI-style content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidRequestError(
                    "only text content parts are supported by Gemma text models"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise InvalidRequestError("message content must be a string or a list of text parts")


def normalize(
    messages: Sequence[Mapping[str, Any]], system_role: bool = False
) -> list[tuple[str, str]]:
    """Validate and fold messages into alternating (role, text) turns starting with user; system
    text becomes a leading ("system", text) turn with `system_role`, else joins the first turn."""
    if not messages:
        raise InvalidRequestError("messages is empty; send at least one user message")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise InvalidRequestError(f"message {i} needs a 'role' and a 'content'")
        role, text = msg["role"], _content_text(msg.get("content", ""))
        if role in ("system", "developer"):
            if turns:
                raise InvalidRequestError("a system message must come before the conversation")
            system.append(text)
            continue
        if role not in ROLES:
            raise InvalidRequestError(
                f"message {i} has role {role!r}; use 'system', 'user' or 'assistant'"
            )
        expected = "user" if len(turns) % 2 == 0 else "model"
        if ROLES[role] != expected:
            raise InvalidRequestError(
                f"message {i} is from {role!r} but Gemma turns alternate user/assistant, "
                "starting with user"
            )
        turns.append((ROLES[role], text.strip()))  # the published templates trim content
    if not turns:
        raise InvalidRequestError("messages hold no user turn")
    if system and system_role:
        turns.insert(0, ("system", "\n\n".join(s.strip() for s in system)))
    elif system:
        turns[0] = ("user", "\n\n".join(system) + "\n\n" + turns[0][1])
    return turns


def chat_prompt_ids(
    tokenizer, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of the conversation, ready for the model to write the next model turn."""
    start, end = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
    if start is None or end is None:
        raise InvalidRequestError("this tokenizer has no <start_of_turn>/<end_of_turn> tokens")
    newline = tokenizer.encode_plain("\n")
    ids = [tokenizer.bos_id]
    system_role = getattr(tokenizer, "chat_style", "gemma") == "gemma4"
    for role, text in normalize(messages, system_role):
        ids += [start, *tokenizer.encode_plain(f"{role}\n{text}"), end, *newline]
    if add_generation_prompt:
        ids += [start, *tokenizer.encode_plain("model\n")]
    return ids


def chat_prompt_text(
    messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
    style: str = "gemma",
) -> str:  # fmt: skip
    """The same prompt as text (for display and for comparison with other tools)."""
    start, end = ("<|turn>", "<turn|>") if style == "gemma4" else TURN_MARKS
    out = ["<bos>"]
    for role, text in normalize(messages, style == "gemma4"):
        out.append(f"{start}{role}\n{text}{end}\n")
    if add_generation_prompt:
        out.append(f"{start}model\n")
    return "".join(out)


TURN_MARKS = ("<start_of_turn>", "<end_of_turn>")
