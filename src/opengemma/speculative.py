"""Speculative decoding without a draft model: prompt lookup (n-gram) drafts, verified exactly.

When the text being generated repeats the context (copying a passage, rewriting or editing code,
quoting the prompt), the tokens after the latest earlier occurrence of the last few tokens are a
good guess of what comes next. `NgramDrafter` proposes up to `max_draft` such tokens; one native
call then runs the last token and the draft together (`NativeDecoder.step_chunk`: the weights are
read once for all of them), and the sampler picks each next token from those logits in turn,
exactly as plain decoding would, as long as its choice equals the draft. The first token that
differs is the sampler's own choice; the drafted tokens after it are dropped from the cache.

Exactness: each row of a chunk holds the same bits as the corresponding single decode step (see
kernels/decode.c), the sampler sees the same history and logits and draws the same random numbers
in the same order, so the output equals plain decoding token for token, greedy or sampled. Ring
(sliding-window) caches hold `max_draft` slots beyond their window, so that a chunk never evicts
a key that an earlier row of it, or a later token after a rollback, still attends to; a rollback
marks the dropped positions' slots empty.

This needs the native decode step (int8 block weights on the CPU): elsewhere a multi-token
forward does not reproduce single steps bit for bit, so generation runs plainly
(`SpeculationStats.reason` says why).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from opengemma.errors import InvalidRequestError
from opengemma.generate import check_lengths, generate_step, prefill
from opengemma.kv_cache import KVCache, SlidingLayerCache
from opengemma.sampling import Sampler

METHODS = ("ngram",)


@dataclass
class SpeculationStats:
    """What speculation did in one generation."""

    method: str = "ngram"
    steps: int = 0  # model calls after the prefill
    drafted: int = 0  # tokens proposed
    accepted: int = 0  # proposed tokens the sampler chose too
    generated: int = 0
    reason: str | None = None  # set when generation ran without speculation

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.generated / self.steps if self.steps else 0.0


class NgramDrafter:
    """Prompt lookup: the continuation of the latest earlier occurrence of the longest suffix
    (from `max_ngram` down to `min_ngram` tokens) of the history."""

    def __init__(self, history: Sequence[int], max_ngram: int = 4, min_ngram: int = 3):
        self.history: list[int] = []
        self.sizes = range(max_ngram, min_ngram - 1, -1)
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest follower
        for token in history:
            self.append(token)

    def append(self, token: int) -> None:
        h = self.history
        for n in self.sizes:  # the n-grams ending just before the new token now have a follower
            if len(h) >= n:
                self.index[tuple(h[len(h) - n :])] = len(h)
        h.append(token)

    def draft(self, limit: int) -> list[int]:
        h = self.history
        for n in self.sizes:
            if len(h) >= n:
                start = self.index.get(tuple(h[len(h) - n :]))
                if start is not None:
                    return h[start : start + limit]
        return []


class DraftPolicy:
    """When to draft and how much, for one sequence: drafts halve after a miss and grow back
    after full acceptance; after drafts the model wholly rejects, drafting pauses 1, 2, 4 ... 16
    steps (on free text a wrong draft costs most of a step)."""

    def __init__(self, history: Sequence[int], max_draft: int = 8, min_ngram: int = 3):
        self.drafter = NgramDrafter(history, min_ngram=min_ngram)
        self.max_draft = self.limit = max_draft
        self.pause = self.wait = 0

    def append(self, token: int) -> None:
        self.drafter.append(token)

    def settle(self, drafted: int, accepted: int) -> None:
        """After a verify step: `accepted` of the `drafted` tokens were the sampler's choice."""
        if drafted:
            full = accepted == drafted
            self.limit = min(self.max_draft, 2 * self.limit) if full else max(1, accepted + 1)
            self.pause = min(16, max(1, 2 * self.pause)) if accepted == 0 else 0
            self.wait = self.pause

    def draft(self, room: int) -> list[int]:
        """The tokens to verify with the next step (at most `room`; none while paused)."""
        if self.wait:
            self.wait -= 1
            return []
        return self.drafter.draft(min(self.limit, room))


def widen_rings(cache: KVCache, extra: int) -> None:
    """Give every ring layer `extra` slots beyond its window, keeping the keys it holds (each
    at its position's slot in the wider ring). Prefill runs in an ordinary cache first, so that
    it computes exactly what plain decoding's prefill does."""
    for i, lc in enumerate(cache.layers):
        if not isinstance(lc, SlidingLayerCache):
            continue
        B, n_kv, window, head_dim = lc.k.shape
        wide = SlidingLayerCache(B, n_kv, window + extra, head_dim, lc.k.dtype, lc.k.device)
        held = (lc.pos >= 0).nonzero().flatten()
        slots = lc.pos[held] % (window + extra)
        wide.k[:, :, slots] = lc.k[:, :, held]
        wide.v[:, :, slots] = lc.v[:, :, held]
        wide.pos[slots] = lc.pos[held]
        cache.layers[i] = wide
    cache._native_rows = None  # the native decoder's view of the old layers (rebuilt on use)


def rewind(cache: KVCache, n: int) -> None:
    """Drop the last `n` positions: ring slots that hold them are marked empty (full caches
    need nothing: a position past the length is never attended to, and is overwritten)."""
    if n == 0:
        return
    cache.length -= n
    for lc in cache.layers:
        if isinstance(lc, SlidingLayerCache):
            lc.pos[lc.pos >= cache.length] = -1


def unsupported(model) -> str | None:
    """Why `model` cannot speculate exactly (None: it can)."""
    if model.native_decoder is None:
        return ("speculative decoding needs the native int8 decode step (a quantized model on "
                "the CPU with the native kernels); generation ran without it")  # fmt: skip
    return None


@torch.inference_mode()
def ngram_generate_step(
    model, prompt_ids: Sequence[int], sampler: Sampler, max_tokens: int,
    stats: SpeculationStats | None = None, max_draft: int = 8, min_ngram: int = 3,
) -> Iterator[int]:  # fmt: skip
    """`generate.generate_step` with prompt-lookup speculation: the same tokens, fewer calls."""
    stats = stats if stats is not None else SpeculationStats()
    stats.reason = unsupported(model)
    if stats.reason is not None:
        for token in generate_step(model, prompt_ids, sampler, max_tokens):
            stats.generated += 1
            stats.steps += 1
            yield token
        return
    max_tokens = check_lengths(model, len(prompt_ids), max_tokens)
    P = len(prompt_ids)
    cache = model.new_cache(P + max_tokens)
    tokens = torch.empty(P + max_tokens, dtype=torch.long)
    tokens[:P] = torch.tensor(list(prompt_ids), dtype=torch.long)
    policy = DraftPolicy(prompt_ids, max_draft, min_ngram)
    decoder = model.native_decoder
    rows = prefill(model, prompt_ids, cache)[None]
    widen_rings(cache, max_draft)
    n, draft = P, []
    while True:
        for i, logits in enumerate(rows):
            token = sampler(tokens[:n], logits)
            tokens[n] = token
            n += 1
            stats.generated += 1
            policy.append(token)
            yield token
            if n == P + max_tokens:
                return
            if i == len(draft) or token != draft[i]:
                break
            stats.accepted += 1
        rewind(cache, len(draft) - i)  # the drafted tokens after the sampler's own choice
        policy.settle(len(draft), i)
        draft = policy.draft(P + max_tokens - n - 1)
        stats.drafted += len(draft)
        stats.steps += 1
        chunk = torch.tensor([token, *draft], dtype=torch.long)
        rows = decoder.step_chunk(chunk, cache)
        if rows is None:  # the decoder no longer matches the model (weights changed)
            raise RuntimeError("the native decoder declined a speculative step")


def speculative_steps(method: str, **options):
    """(a generate_step-compatible token source, the SpeculationStats it fills) for `method`."""
    if method not in METHODS:
        raise InvalidRequestError(
            f"unknown speculative method {method!r}; use one of {', '.join(METHODS)}"
        )
    stats = SpeculationStats(method=method)

    def steps(model, prompt_ids, sampler, max_tokens):
        return ngram_generate_step(model, prompt_ids, sampler, max_tokens, stats, **options)

    return steps, stats
