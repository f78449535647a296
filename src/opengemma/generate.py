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


def check_lengths(model: GemmaModel, prompt_len: int, max_tokens: int) -> int:
    """Validate a request against the context; returns the number of tokens that may follow."""
    context = model.config.max_position_embeddings
    if prompt_len == 0:
        raise InvalidRequestError("the prompt is empty; give at least one token of text")
    if prompt_len >= context:
        raise InvalidRequestError(
            f"the prompt has {prompt_len} tokens but the model's context is {context}; "
            "shorten the prompt"
        )
    if max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {max_tokens}")
    return min(max_tokens, context - prompt_len)


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


def _held_back(text: str, stops: Iterable[str]) -> int:
    """Length of the longest tail of `text` that could begin one of `stops`."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


def stream_generate(
    model: GemmaModel,
    tokenizer,
    prompt_ids: Sequence[int],
    sampler: Sampler,
    max_tokens: int,
    stop: Sequence[str] = (),
    stop_ids: Iterable[int] = (),
) -> Iterator[GenerationChunk]:
    """One GenerationChunk per generated token; text never splits a UTF-8 character and never
    shows any part of a stop string. Stop tokens and stop strings are not part of the text."""
    stops = [s for s in stop if s]
    stop_ids = set(stop_ids)
    decoder = tokenizer.incremental_decoder()
    pending = ""  # decoded text not yet released (might start a stop string)
    budget = check_lengths(model, len(prompt_ids), max_tokens)
    for i, token in enumerate(generate_step(model, prompt_ids, sampler, budget)):
        if token in stop_ids:
            yield GenerationChunk(pending + decoder.flush(), token, "stop")
            return
        pending += decoder.add(token)
        last = i + 1 == budget
        if last:
            pending += decoder.flush()
        hits = [(pending.find(s), s) for s in stops if s in pending]
        if hits:
            yield GenerationChunk(pending[: min(hits)[0]], token, "stop")
            return
        if last:
            yield GenerationChunk(pending, token, "length")
            return
        keep = _held_back(pending, stops)
        out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
        yield GenerationChunk(out, token)


def generate(*args, **kwargs) -> str:
    """The whole continuation as one string (same arguments as stream_generate)."""
    return "".join(chunk.text for chunk in stream_generate(*args, **kwargs))
