"""Generation in three layers: generate_step (ids) -> stream_generate (text) -> generate (str).

Prefill runs the prompt through the model in chunks, filling a fixed-size KV cache; each decode
step then feeds one token. No I/O happens here: the CLI and the server print what they get.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from opengemma.errors import InvalidRequestError
from opengemma.model import GemmaModel
from opengemma.sampling import Sampler

PREFILL_CHUNK = 256  # tokens per prefill forward: bounds activation memory on long prompts


class GenerationChunk(str):
    """The text one generated token made final (possibly empty: an incomplete UTF-8 character
    or a held-back partial stop string). A str, so `print(chunk, end="")` just works; `.token`
    is the token id and `.finish_reason` is set on the last chunk: "stop" or "length"."""

    token: int
    finish_reason: str | None

    def __new__(cls, text: str, token: int, finish_reason: str | None = None):
        self = super().__new__(cls, text)
        self.token = token
        self.finish_reason = finish_reason
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the tokens asked for) does not fit the model's context."""

    code = "context_length_exceeded"


def fit_lengths(context: int, prompt_len: int, max_tokens: int | None, strict: bool = False,
                param: str = "max_tokens") -> int:  # fmt: skip
    """The one prompt-length check: tokens that may follow a prompt of `prompt_len` in a
    context of `context`. `max_tokens` None means as many as fit; `strict` refuses a
    `max_tokens` that does not fit instead of lowering it."""
    if prompt_len == 0:
        raise InvalidRequestError("the prompt is empty; give at least one token of text")
    if prompt_len >= context:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens but the model's context is {context}; "
            "shorten the prompt"
        )
    if max_tokens is None:
        return context - prompt_len
    if max_tokens < 1:
        raise InvalidRequestError(f"{param} must be at least 1, got {max_tokens}")
    if strict and prompt_len + max_tokens > context:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens and {param} is {max_tokens}: "
            f"{prompt_len + max_tokens} > the model's context of {context}; lower {param} or "
            "shorten the prompt"
        )
    return min(max_tokens, context - prompt_len)


def check_lengths(model: GemmaModel, prompt_len: int, max_tokens: int) -> int:
    """Validate a request against the model's context; returns the tokens that may follow."""
    return fit_lengths(model.config.max_position_embeddings, prompt_len, max_tokens)


@torch.inference_mode()
def prefill(
    model: GemmaModel, ids: Sequence[int], cache, chunk: int = PREFILL_CHUNK
) -> torch.Tensor:
    """Run `ids` into `cache`; returns float32 logits (vocab,) for the last position."""
    device = model.device
    ids_t = torch.tensor([list(ids)], dtype=torch.long, device=device)
    logits = None
    for start in range(0, ids_t.shape[1], chunk):
        logits = model(ids_t[:, start : start + chunk], cache, last_only=True)
    return logits[0, -1]


@torch.inference_mode()
def generate_step(
    model: GemmaModel, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int
) -> Iterator[int]:
    """Yield up to `max_tokens` sampled token ids (the caller decides when to stop early)."""
    max_tokens = check_lengths(model, len(prompt_ids), max_tokens)
    cache = model.new_cache(len(prompt_ids) + max_tokens)
    device = model.device
    tokens = torch.empty(len(prompt_ids) + max_tokens, dtype=torch.long)
    tokens[: len(prompt_ids)] = torch.tensor(list(prompt_ids), dtype=torch.long)
    n = len(prompt_ids)
    logits = prefill(model, prompt_ids, cache)
    for i in range(max_tokens):
        token = sampler(tokens[:n], logits)
        tokens[n] = token
        n += 1
        yield token
        if i + 1 < max_tokens:
            step = torch.tensor([[token]], dtype=torch.long, device=device)
            logits = model(step, cache, last_only=True)[0, -1]


def held_back(text: str, stops: Iterable[str]) -> int:
    """Length of the longest tail of `text` that could begin one of `stops`."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class TextRelease:
    """Token ids in, final text out: never splits a UTF-8 character, never shows any part of
    a stop string. Stop tokens and stop strings are not part of the text. The one rule set of
    `stream_generate` and the serving engine."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), stop_ids: Iterable[int] = (),
                 skip_special: bool = True):  # fmt: skip
        self.stops = [s for s in stop if s]
        self.stop_ids = set(stop_ids)
        self.decoder = tokenizer.incremental_decoder(skip_special)
        self.pending = ""  # decoded text not yet released (might start a stop string)

    def add(self, token: int, last: bool = False) -> tuple[str, str | None]:
        """The text `token` makes final, and why generation ends here (None: it goes on;
        `last`: the budget ends with this token)."""
        if token in self.stop_ids:
            return self.pending + self.decoder.flush(), "stop"
        self.pending += self.decoder.add(token)
        if last:
            self.pending += self.decoder.flush()
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            return self.pending[: min(hits)[0]], "stop"
        if last:
            return self.pending, "length"
        keep = held_back(self.pending, self.stops)
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out, None


def stream_generate(
    model: GemmaModel,
    tokenizer,
    prompt_ids: Sequence[int],
    sampler: Sampler,
    max_tokens: int,
    stop: Sequence[str] = (),
    stop_ids: Iterable[int] = (),
    steps=generate_step,
) -> Iterator[GenerationChunk]:
    """One GenerationChunk per generated token; text never splits a UTF-8 character and never
    shows any part of a stop string. Stop tokens and stop strings are not part of the text.
    `steps`: the token source, generate_step or one with its signature (e.g. speculative)."""
    release = TextRelease(tokenizer, stop, stop_ids)
    budget = check_lengths(model, len(prompt_ids), max_tokens)
    for i, token in enumerate(steps(model, prompt_ids, sampler, budget)):
        text, reason = release.add(token, last=i + 1 == budget)
        yield GenerationChunk(text, token, reason)
        if reason is not None:
            return


def generate(*args, **kwargs) -> str:
    """The whole continuation as one string (same arguments as stream_generate)."""
    return "".join(chunk.text for chunk in stream_generate(*args, **kwargs))
