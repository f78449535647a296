"""Logits processors and the sampler: plain functions, no model, no I/O.

A processor is `(tokens, logits) -> logits`: `tokens` is the 1-D int64 tensor of the sequence
so far (prompt + generated), `logits` a 1-D float32 tensor over the vocabulary. Masked-out
entries become -inf. The order follows llama.cpp and transformers: penalties, temperature,
top-k, top-p, min-p, then a draw (or argmax when the temperature is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from opengemma.errors import InvalidRequestError

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. Defaults give greedy decoding."""

    temperature: float = 0.0  # 0 = greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p
    min_p: float = 0.0  # drop tokens less likely than min_p * P(most likely token)
    repetition_penalty: float = 1.0  # CTRL-style: >1 discourages tokens already in the sequence
    presence_penalty: float = 0.0  # OpenAI-style: subtract once per token already generated
    frequency_penalty: float = 0.0  # OpenAI-style: subtract per occurrence in the generation
    seed: int | None = None  # makes sampling reproducible

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 disables it)"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequestError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def repetition_penalty(penalty: float) -> LogitsProcessor:
    """Divide positive logits (multiply negative ones) of every token seen so far by `penalty`."""

    def process(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = torch.unique(tokens)
        picked = logits[seen]
        logits = logits.clone()
        logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
        return logits

    return process


def presence_frequency_penalty(
    presence: float, frequency: float, prompt_len: int
) -> LogitsProcessor:
    """OpenAI semantics: penalise tokens by their count in the generated part only."""

    def process(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        generated = tokens[prompt_len:]
        if generated.numel() == 0:
            return logits
        counts = torch.bincount(generated, minlength=logits.numel())[: logits.numel()]
        return logits - frequency * counts.float() - presence * (counts > 0).float()

    return process


def temperature(t: float) -> LogitsProcessor:
    return lambda tokens, logits: logits / t


def top_k(k: int) -> LogitsProcessor:
    def process(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if k >= logits.numel():
            return logits
        kth = torch.topk(logits, k).values[-1]
        return logits.masked_fill(logits < kth, float("-inf"))

    return process


NUCLEUS_CANDIDATES = 1024  # top-p looks among this many most likely tokens first


def top_p(p: float) -> LogitsProcessor:
    def process(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        n = logits.numel()
        # the nucleus nearly always lies among the most likely thousand tokens: a partial
        # selection instead of sorting all 262k every step; the full sort when it does not
        top, order = torch.topk(probs, min(n, NUCLEUS_CANDIDATES))
        if top.numel() < n and float(top.sum()) < p:
            top, order = torch.sort(probs, descending=True)
        # keep a token while the tokens before it have not reached p (the top token always
        # stays, even for a p below float precision)
        keep = (top.cumsum(-1) - top) < p
        keep[0] = True
        kept = order[keep]
        out = torch.full_like(logits, float("-inf"))
        out[kept] = logits[kept]
        return out

    return process


def min_p(p: float) -> LogitsProcessor:
    def process(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        return logits.masked_fill(probs < p * probs.max(), float("-inf"))

    return process


def build_processors(params: SamplingParams, prompt_len: int = 0) -> list[LogitsProcessor]:
    """The processors `params` asks for, in application order."""
    procs: list[LogitsProcessor] = []
    if params.repetition_penalty != 1.0:
        procs.append(repetition_penalty(params.repetition_penalty))
    if params.presence_penalty or params.frequency_penalty:
        procs.append(
            presence_frequency_penalty(
                params.presence_penalty, params.frequency_penalty, prompt_len
            )
        )
    if params.greedy:
        return procs
    if params.temperature != 1.0:
        procs.append(temperature(params.temperature))
    if params.top_k:
        procs.append(top_k(params.top_k))
    if params.top_p < 1.0:
        procs.append(top_p(params.top_p))
    if params.min_p > 0.0:
        procs.append(min_p(params.min_p))
    return procs


class Sampler:
    """Chooses the next token from processed logits; owns the seeded random generator."""

    def __init__(
        self, params: SamplingParams, extra: Sequence[LogitsProcessor] = (), prompt_len: int = 0
    ):
        self.params = params
        # extra processors (e.g. a watermark) see the logits after penalties and truncation
        self.processors = build_processors(params, prompt_len) + list(extra)
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def process(self, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        for proc in self.processors:
            logits = proc(tokens, logits)
        return logits

    def __call__(self, tokens: torch.Tensor, logits: torch.Tensor) -> int:
        return self.choose(self.process(tokens, logits.float()))

    def choose(self, logits: torch.Tensor) -> int:
        """The token for processed logits: the argmax when greedy, else a draw from their
        softmax by inverse transform (one uniform number against the cumulative distribution:
        a fraction of a millisecond, where torch.multinomial takes ~5 ms over 262k tokens)."""
        if self.params.greedy:
            return int(torch.argmax(logits))
        cdf = torch.softmax(logits, dim=-1).double().cumsum(-1)
        u = torch.rand((), dtype=torch.float64, generator=self.generator) * cdf[-1]
        # the first token whose cumulative probability exceeds u: never a zero-probability one
        return min(int(torch.searchsorted(cdf, u, right=True)), logits.numel() - 1)
