"""SynthID Text watermarking: tournament sampling as a logits processor, and its detector.

Compatible with `transformers`' `SynthIDTextWatermarkLogitsProcessor` on CPU: the same
configuration gives the same g-values, so either side detects text the other watermarked.

How it works. Each candidate next token `x` after a context `c` (the previous `ngram_len - 1`
generated tokens) gets one pseudo-random bit per key, its g-values `g_d(c, x)`, d = 1..depth:
the context, the candidate and the key are hashed with an int64 linear congruential step
`h = (h + v) * 6364136223846793005 + 1` (wrapping), and the hash indexes a table of random
0/1 entries drawn on CPU from a torch generator seeded with `sampling_table_seed`. Sampling
reweights the next-token distribution once per key, `p <- p * (1 + g_d - sum(g_d * p))`, which
favours tokens with g = 1 without changing the expected distribution over random keys. A
context already used within the last `context_history_size` steps is left as it is.

Detection recomputes the g-values of a text's n-grams. Without the watermark they are fair-ish
coin flips with P(1) = the table's fraction of ones; with it they lean to 1. The mean and the
weighted mean (weights falling linearly from 10 to 1 over the layers) measure the lean; the
p-value says how unlikely that lean is without the watermark.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from opengemma.atomic import write_atomic
from opengemma.errors import OpenGemmaError

__all__ = [
    "WatermarkConfig",
    "WatermarkError",
    "WatermarkProcessor",
    "Detection",
    "DEFAULT_ALPHA",
    "keygen",
    "g_values",
    "score_mask",
    "detect",
    "detect_ids",
    "stream",
    "generate",
]

LCG_MULTIPLIER = 6364136223846793005  # newlib/musl LCG, as transformers' accumulate_hash
DEFAULT_ALPHA = 1e-3  # a text is called watermarked when its p-value is below this
DEFAULT_DEPTH = 30  # keys (tournament layers) made by keygen, as in the SynthID Text paper


class WatermarkError(OpenGemmaError, ValueError):
    """A watermark configuration or key file is invalid, or a processor was misused."""


@dataclass(frozen=True)
class WatermarkConfig:
    """The secret and the shape of a watermark; fields as transformers'
    `SynthIDTextWatermarkingConfig`. Keep the keys private: whoever has them can detect (and
    forge) the watermark."""

    keys: tuple[int, ...]  # one key per tournament layer; depth = len(keys)
    ngram_len: int = 5  # tokens per hashed n-gram: ngram_len - 1 of context + the candidate
    context_history_size: int = 1024  # remembered contexts (a repeated one is not watermarked)
    sampling_table_seed: int = 0  # seed of the CPU torch generator that draws the g-value table
    sampling_table_size: int = 2**16  # entries of the 0/1 table (at most 2**24)
    skip_first_ngram_calls: bool = False  # leave the first ngram_len - 1 tokens unwatermarked

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if not keys or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise WatermarkError("keys must be a non-empty list of integers (one per layer)")
        if any(not -(2**63) <= k < 2**63 for k in keys):
            raise WatermarkError("every key must fit in a signed 64-bit integer")
        checks = [
            (self.ngram_len >= 2, "ngram_len must be at least 2 (one token of context)"),
            (self.context_history_size >= 1, "context_history_size must be at least 1"),
            (1 <= self.sampling_table_size <= 2**24, "sampling_table_size must be in [1, 2**24]"),
        ]
        for ok, message in checks:
            if not ok:
                raise WatermarkError(message)
        size = self.sampling_table_size
        if size & (size - 1) == 0 and len({k % size for k in keys}) < len(keys):
            # with a power-of-two table, keys equal modulo its size index the same entries
            raise WatermarkError(
                f"two keys are equal modulo sampling_table_size ({size}), so their layers would "
                "carry the same bits; make new keys with `opengemma watermark keygen`"
            )

    @property
    def depth(self) -> int:
        return len(self.keys)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keys"] = list(self.keys)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> WatermarkConfig:
        if not isinstance(data, dict):
            raise WatermarkError("a watermark key file holds one JSON object with a 'keys' list")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"debug_mode"})
        if unknown:
            raise WatermarkError(
                f"unknown watermark fields {unknown}; expected some of {sorted(known)}"
            )
        if "keys" not in data:
            raise WatermarkError("the watermark configuration has no 'keys' list")
        fields = {k: v for k, v in data.items() if k in known}
        return cls(**fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WatermarkConfig:
        """Read a key file written by `save` (or any JSON object with transformers' fields)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise WatermarkError(f"cannot read the watermark key file {path}: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WatermarkError(f"{path} is not a JSON watermark key file: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the configuration as JSON (owner-readable only; temp file + rename)."""
        path = Path(path)
        return write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n", mode=0o600)


def keygen(depth: int = DEFAULT_DEPTH, **fields: Any) -> WatermarkConfig:
    """A configuration with `depth` fresh random keys (from the OS's secure generator)."""
    if not 1 <= depth <= 1024:
        raise WatermarkError("depth must be between 1 and 1024 keys")
    size = int(fields.get("sampling_table_size", 2**16))
    keys: list[int] = []
    residues: set[int] = set()
    while len(keys) < depth:
        k = secrets.randbelow(2**62)
        if k % size not in residues:
            keys.append(k)
            residues.add(k % size)
    return WatermarkConfig(keys=tuple(keys), **fields)


@lru_cache(maxsize=8)
def sampling_table(seed: int, size: int) -> torch.Tensor:
    """The 0/1 g-value table (size,) int64, drawn on CPU exactly as transformers draws it."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, 2, (size,), generator=generator, device="cpu")


def _lcg(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One wrapping int64 hash step: (h + v) * LCG_MULTIPLIER + 1."""
    return (h + v) * LCG_MULTIPLIER + 1


def _context_hash(context: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Hash of a context (ngram_len - 1 token ids) as a 0-d int64 tensor."""
    h = torch.ones((), dtype=torch.long)
    for v in torch.as_tensor(context, dtype=torch.long).reshape(-1):
        h = _lcg(h, v)
    return h


def _g_from_hash(h: torch.Tensor, candidates: torch.Tensor, cfg: WatermarkConfig) -> torch.Tensor:
    """g-values (..., n_candidates, depth) for context hashes `h` (...) and candidate ids
    `candidates` (..., n_candidates) (or (n_candidates,), broadcast)."""
    keys = torch.tensor(cfg.keys, dtype=torch.long)
    with_token = _lcg(h[..., None], candidates)  # (..., n)
    keyed = _lcg(with_token[..., None], keys)  # (..., n, depth)
    table = sampling_table(cfg.sampling_table_seed, cfg.sampling_table_size)
    return table[torch.remainder(keyed, cfg.sampling_table_size)]


class WatermarkProcessor:
    """Tournament reweighting for ONE sequence: `(tokens 1-D int64, logits 1-D) -> logits`.

    Use a new processor per generated sequence and put it last (after temperature and top-k),
    e.g. `Sampler(params, extra=[WatermarkProcessor(cfg)])`. The first call takes `tokens` as
    the prompt; each later call must see exactly one more token. As in transformers, the context
    of the first `ngram_len - 1` tokens is padded with id 0 (the prompt is not hashed)."""

    def __init__(self, cfg: WatermarkConfig):
        self.cfg = cfg
        self._prompt_len: int | None = None
        self._calls = 0
        self._history: deque[int] = deque([0] * cfg.context_history_size)  # newest first

    def _context(self, tokens: torch.Tensor) -> list[int]:
        if self._prompt_len is None:
            self._prompt_len = int(tokens.numel())
        elif tokens.numel() != self._prompt_len + self._calls:
            raise WatermarkError(
                "a WatermarkProcessor follows one sequence, one token per call; "
                "make a new processor for each sequence"
            )
        n = self.cfg.ngram_len - 1
        generated = tokens[self._prompt_len :][-n:].tolist()
        return [0] * (n - len(generated)) + generated

    def __call__(self, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        context = self._context(tokens)
        self._calls += 1
        if self.cfg.skip_first_ngram_calls and self._calls < self.cfg.ngram_len:
            return logits
        h = _context_hash(context)
        repeated = int(h) in self._history
        self._history.appendleft(int(h))
        self._history.pop()
        if repeated:
            return logits
        return self.reweight(h, logits)

    def reweight(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Tournament update of `logits` (V,) after a context with hash `h`; returns log-probs,
        with impossible tokens at the dtype's most negative finite value (as transformers)."""
        probs = torch.softmax(logits.float(), dim=-1)
        support = torch.nonzero(probs > 0).reshape(-1)  # only these tokens can change
        p = probs[support]
        g = _g_from_hash(h, support.cpu(), self.cfg).to(p.device, p.dtype)  # (n, depth)
        for d in range(self.cfg.depth):
            p = p * (1 + g[:, d] - (g[:, d] * p).sum())
        out = torch.full_like(probs, torch.finfo(probs.dtype).min)
        logp = torch.log(p)
        out[support] = torch.where(torch.isfinite(logp), logp, torch.finfo(probs.dtype).min)
        return out


# ---- detection ------------------------------------------------------------------------------


def g_values(ids: Sequence[int] | torch.Tensor, cfg: WatermarkConfig) -> torch.Tensor:
    """g-values of every n-gram of `ids`: int64 (len(ids) - ngram_len + 1, depth)."""
    ids_t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    n = cfg.ngram_len
    if ids_t.numel() < n:
        return torch.zeros((0, cfg.depth), dtype=torch.long)
    ngrams = ids_t.unfold(0, n, 1)  # (T - n + 1, n)
    h = torch.ones(ngrams.shape[0], dtype=torch.long)
    for i in range(n - 1):
        h = _lcg(h, ngrams[:, i])
    return _g_from_hash(h, ngrams[:, n - 1 :], cfg)[:, 0, :]


def score_mask(
    ids: Sequence[int] | torch.Tensor, cfg: WatermarkConfig, eos_id: int | None = None
) -> torch.Tensor:
    """Which n-grams count (bool, len(ids) - ngram_len + 1): not those whose context was seen
    within the last `context_history_size` n-grams, nor any from the first `eos_id` on."""
    ids_list = torch.as_tensor(ids, dtype=torch.long).reshape(-1).tolist()
    n = cfg.ngram_len
    count = max(0, len(ids_list) - n + 1)
    history: deque[int] = deque([0] * cfg.context_history_size)
    seen = {0: cfg.context_history_size}  # multiset of the hashes in `history`
    mask = torch.ones(count, dtype=torch.bool)
    for i, h in enumerate(_context_hashes(ids_list, n, count)):
        mask[i] = seen.get(h, 0) == 0
        history.appendleft(h)
        seen[h] = seen.get(h, 0) + 1
        seen[history.pop()] -= 1
    if eos_id is not None and eos_id in ids_list:
        first = ids_list.index(eos_id)
        mask[max(0, first - (n - 1)) :] = False
    return mask


def _context_hashes(ids: list[int], n: int, count: int) -> list[int]:
    if count == 0:
        return []
    t = torch.tensor(ids, dtype=torch.long)[: count + n - 2].unfold(0, n - 1, 1)
    h = torch.ones(count, dtype=torch.long)
    for i in range(n - 1):
        h = _lcg(h, t[:, i])
    return h.tolist()


@dataclass(frozen=True)
class Detection:
    """What the detector found in one text."""

    score: float  # the weighted mean of the g-values (0.5-ish without watermark); nan if none
    mean: float  # the plain mean of the g-values
    p_value: float  # P(a text without this watermark scores >= `score`)
    mean_p_value: float  # the same for `mean` (exact binomial tail)
    num_scored: int  # n-grams scored (after the repetition and EOS masks)
    alpha: float  # the threshold on p_value
    watermarked: bool = field(default=False)  # p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _binomial_sf(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q), summed in log space in float64."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    i = torch.arange(k, n + 1, dtype=torch.float64)
    terms = (math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
             + i * math.log(q) + (n - i) * math.log1p(-q))  # fmt: skip
    return min(1.0, float(torch.logsumexp(terms, dim=0).exp()))


def layer_weights(depth: int) -> torch.Tensor:
    """Weights of the weighted mean: linspace(10, 1, depth) scaled to sum to depth."""
    w = torch.linspace(10, 1, depth, dtype=torch.float64)
    return w * depth / w.sum()


def score_g_values(
    g: torch.Tensor, mask: torch.Tensor, cfg: WatermarkConfig, alpha: float = DEFAULT_ALPHA
) -> Detection:
    """Scores and calibrated p-values of g-values (T, depth) under `mask` (T,).

    Without the watermark each unmasked g-value is an independent draw of the table, so it is 1
    with probability q = the table's fraction of ones. The mean's p-value is the exact binomial
    tail; the weighted mean's uses the normal approximation (sum of independent weighted
    Bernoulli(q); error well below 1e-3 in p at 10 or more scored n-grams)."""
    depth = cfg.depth
    q = float(sampling_table(cfg.sampling_table_seed, cfg.sampling_table_size).double().mean())
    gm = g[mask].double()  # (N, depth)
    n = int(gm.shape[0])
    if n == 0:
        nan = float("nan")
        return Detection(nan, nan, 1.0, 1.0, 0, alpha, False)
    w = layer_weights(depth)
    ones = int(gm.sum())
    mean = ones / (n * depth)
    total = float((gm * w).sum())
    weighted = total / (n * depth)
    sd = math.sqrt(n * q * (1 - q) * float((w * w).sum()))
    z = (total - n * q * depth) / sd if sd > 0 else 0.0
    p = 0.5 * math.erfc(z / math.sqrt(2))
    p_mean = _binomial_sf(ones, n * depth, q) if 0 < q < 1 else 1.0
    return Detection(weighted, mean, p, p_mean, n, alpha, p < alpha)


def detect_ids(
    ids: Sequence[int] | torch.Tensor,
    cfg: WatermarkConfig,
    eos_id: int | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Detection:
    """Detect the watermark in token ids (the generated part; a prompt only dilutes it)."""
    if not 0 < alpha < 1:
        raise WatermarkError("alpha (the p-value threshold) must be in (0, 1)")
    return score_g_values(g_values(ids, cfg), score_mask(ids, cfg, eos_id), cfg, alpha)


def detect(text: str, cfg: WatermarkConfig, tokenizer, alpha: float = DEFAULT_ALPHA) -> Detection:
    """Detect the watermark in `text`, tokenized as plain text (no BOS, no control tokens).
    Use the tokenizer of the model that generated it."""
    return detect_ids(tokenizer.encode_plain(text), cfg, alpha=alpha)


# ---- generation -----------------------------------------------------------------------------


def stream(
    lm,
    prompt: str | Sequence[int],
    cfg: WatermarkConfig,
    max_tokens: int = 256,
    stop: Sequence[str] | str | None = None,
    **sampling: Any,
) -> Iterator:
    """`lm.stream(..., watermark=cfg)`: the watermark applied after every other logits
    processor. `sampling` are SamplingParams fields; watermarking needs sampling (temperature
    > 0)."""
    return lm.stream(prompt, max_tokens, stop=stop, watermark=cfg, **sampling)


def generate(lm, prompt: str | Sequence[int], cfg: WatermarkConfig, max_tokens: int = 256,
             **kwargs: Any) -> str:  # fmt: skip
    """The watermarked continuation as one string."""
    return "".join(stream(lm, prompt, cfg, max_tokens, **kwargs))
