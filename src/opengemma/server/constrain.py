"""JSON output enforced by constrained decoding (llguidance, a token-level grammar matcher).

`response_format` json_object / json_schema becomes a grammar; at every step the matcher says
which tokens keep the output a valid prefix of a document the schema accepts, and the engine
masks the rest to -inf before sampling. The output therefore parses and validates whatever the
model prefers (up to max_tokens, which can still cut it: finish_reason "length").

The vocabulary is handed to llguidance as bytes per token: `▁` is a space, `<0xNN>` is the byte
NN, control tokens are marked with a leading 0xFF so no grammar can emit them.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import numpy as np
import torch

from opengemma.server.errors import bad_request

_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SPACE = "\u2581"
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
COMPILE = {"whitespace_flexible": False}  # compact JSON: no runs of whitespace to wander into


def _token_bytes(tokenizer) -> tuple[list[bytes], list[int]]:
    """Bytes of every token id, and the ids of control tokens."""
    out: list[bytes] = []
    special: list[int] = []
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.id_to_piece(i)
        if tokenizer.is_special(i):
            out.append(b"\xff" + piece.encode())
            special.append(i)
        elif m := _BYTE.fullmatch(piece):
            out.append(bytes((int(m.group(1), 16),)))
        else:
            out.append(piece.replace(_SPACE, " ").encode())
    return out, special


class _Vocab:
    """What llguidance's TokenizerWrapper reads: tokens as bytes, ids, and an encoder."""

    def __init__(self, tokenizer, stop_ids: list[int]):
        self.tokens, self.special_token_ids = _token_bytes(tokenizer)
        self.eos_token_id = stop_ids[0]
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode_plain(text)


class JsonGrammar:
    """Builds matchers for one tokenizer. The vocabulary conversion (~2 s for 262k tokens) is
    done once, on first use."""

    def __init__(self, tokenizer, stop_ids: list[int]):
        self._tokenizer, self._stop_ids = tokenizer, stop_ids
        self._lltok = None
        self._lock = threading.Lock()

    def _ll_tokenizer(self):
        import llguidance

        with self._lock:
            if self._lltok is None:
                wrapper = llguidance.TokenizerWrapper(_Vocab(self._tokenizer, self._stop_ids))
                self._lltok = llguidance.LLTokenizer(wrapper, eos_token=self._stop_ids)
            return self._lltok

    def warm(self) -> None:
        """Convert the vocabulary now (call from a background thread at startup)."""
        self._ll_tokenizer()

    def constraint(self, schema: dict[str, Any] | None, param: str) -> JsonConstraint:
        """A fresh constraint for one choice; `schema` None means any JSON object."""
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(schema if schema is not None else JSON_OBJECT_SCHEMA), overrides=COMPILE
            )
        except Exception as exc:  # llguidance reports bad schemas as ValueError (and others)
            raise bad_request(f"{param} is not a usable JSON schema: {exc}", param) from None
        return self._constraint(grammar, param)

    def lark_constraint(self, lark: str, param: str) -> JsonConstraint:
        """A fresh constraint for a Lark grammar (llguidance's dialect, `%json {...}` inside)."""
        import llguidance

        try:
            grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        except Exception as exc:
            raise bad_request(f"{param} cannot be turned into a grammar: {exc}", param) from None
        return self._constraint(grammar, param)

    def _constraint(self, grammar, param: str) -> JsonConstraint:
        import llguidance

        lltok = self._ll_tokenizer()
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
        if is_error:
            raise bad_request(f"{param} is not a supported JSON schema: {messages[0]}", param)
        matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if matcher.is_error():
            raise bad_request(
                f"{param} is not a supported JSON schema: {matcher.get_error()}", param
            )
        return JsonConstraint(matcher, self._tokenizer.vocab_size)


class JsonConstraint:
    """One generation's grammar state: `allowed()` before each token, `advance(t)` after."""

    def __init__(self, matcher, vocab_size: int):
        self._matcher = matcher
        self._vocab = vocab_size
        self._bits = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)

    def allowed(self) -> torch.Tensor:
        """Boolean (vocab,) mask of the tokens the grammar accepts next."""
        from llguidance.torch import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, self._bits)
        unpacked = np.unpackbits(self._bits[0].numpy().view(np.uint8), bitorder="little")
        mask = torch.from_numpy(unpacked[: self._vocab].astype(bool))
        if not bool(mask.any()):
            raise RuntimeError(f"the JSON grammar allows no token: {self._matcher.get_error()}")
        return mask

    def advance(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise RuntimeError(
                f"the JSON grammar rejected token {token}: {self._matcher.get_error()}"
            )
