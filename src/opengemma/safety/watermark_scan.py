"""Find a watermarked segment inside a longer text: a sliding-window score with a p-value
corrected for the number of windows looked at.

Without the watermark, each scored n-gram's weighted g-sum `s_i = sum_d w_d g_{i,d}` is an
independent draw with mean `q * sum(w)` and variance `q (1 - q) sum(w^2)` (q = the table's
share of ones; weights as `watermark.layer_weights`). For windows of 32, 64, 128, ... n-grams
(and the whole text), each slid by a quarter of its width, the window's z-score is its centred
sum over the square root of its variance. The scan reports the window with the largest z, its
raw one-sided p-value, and that p-value multiplied by the number of windows tested
(Bonferroni): under the null, P(corrected p < alpha) <= alpha however the windows overlap, so
the corrected p-value is a calibrated (conservative) test of "some segment is watermarked".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from opengemma.safety.watermark import (
    DEFAULT_ALPHA,
    WatermarkConfig,
    WatermarkError,
    g_values,
    layer_weights,
    sampling_table,
    score_mask,
)

MIN_WINDOW = 32  # n-grams in the narrowest window
MIN_SCORED = 16  # a window with fewer scored n-grams is not tested


@dataclass(frozen=True)
class Segment:
    """The most watermark-like window of a text (token offsets into the scanned ids)."""

    start: int  # first token of the window
    end: int  # one past its last token
    z: float  # the window's z-score
    p_value: float  # raw one-sided p-value of that window
    p_corrected: float  # min(1, p_value * windows): the scan's calibrated p-value
    windows: int  # windows tested
    num_scored: int  # scored n-grams in the window
    alpha: float
    watermarked: bool  # p_corrected < alpha
    char_start: int | None = None  # character offsets when scanned from text
    char_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_sizes(count: int, min_window: int = MIN_WINDOW) -> list[int]:
    """32, 64, 128, ... up to `count` n-grams, and `count` itself."""
    sizes, w = [], min_window
    while w < count:
        sizes.append(w)
        w *= 2
    return sizes + [count] if count > 0 else []


def scan_ids(
    ids: Sequence[int] | torch.Tensor,
    cfg: WatermarkConfig,
    eos_id: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    min_window: int = MIN_WINDOW,
) -> Segment:
    """The best window of `ids` and its corrected p-value (see the module docstring)."""
    if not 0 < alpha < 1:
        raise WatermarkError("alpha (the p-value threshold) must be in (0, 1)")
    if min_window < 1:
        raise WatermarkError("min_window must be at least 1 n-gram")
    g = g_values(ids, cfg).double()  # (T, depth)
    mask = score_mask(ids, cfg, eos_id).double()  # (T,)
    count = int(mask.numel())
    q = float(sampling_table(cfg.sampling_table_seed, cfg.sampling_table_size).double().mean())
    w = layer_weights(cfg.depth)
    var1 = q * (1 - q) * float((w * w).sum())  # variance of one scored n-gram's weighted sum
    centred = ((g @ w) - q * float(w.sum())) * mask  # (T,)
    zero = torch.zeros(1, dtype=torch.float64)
    csum = torch.cat([zero, centred.cumsum(0)])
    ccount = torch.cat([zero, mask.cumsum(0)])
    best = (-math.inf, 0, 0, 0)  # z, start, width, scored
    windows = 0
    for width in window_sizes(count, min_window):
        starts = list(range(0, count - width + 1, max(1, width // 4)))
        if starts[-1] != count - width:
            starts.append(count - width)
        st = torch.tensor(starts)
        sums, scored = csum[st + width] - csum[st], ccount[st + width] - ccount[st]
        ok = scored >= min(MIN_SCORED, count)
        windows += int(ok.sum())
        if not bool(ok.any()) or var1 <= 0:
            continue
        z = torch.where(ok, sums / torch.sqrt(scored.clamp(min=1) * var1), -math.inf)
        i = int(z.argmax())
        if float(z[i]) > best[0]:
            best = (float(z[i]), starts[i], width, int(scored[i]))
    z, start, width, scored = best
    if windows == 0:
        return Segment(0, 0, math.nan, 1.0, 1.0, 0, 0, alpha, False)
    p = 0.5 * math.erfc(z / math.sqrt(2))
    p_corr = min(1.0, p * windows)
    end = start + width + cfg.ngram_len - 1  # the window's last n-gram ends here
    return Segment(start, end, z, p, p_corr, windows, scored, alpha, p_corr < alpha)


def scan(text: str, cfg: WatermarkConfig, tokenizer, alpha: float = DEFAULT_ALPHA) -> Segment:
    """`scan_ids` on `text` tokenized as plain text; character offsets of the segment are those
    of the decoded token prefixes."""
    ids = tokenizer.encode_plain(text)
    seg = scan_ids(ids, cfg, alpha=alpha)
    if seg.windows == 0:
        return seg
    char_start = len(tokenizer.decode(ids[: seg.start]))
    char_end = len(tokenizer.decode(ids[: seg.end]))
    return Segment(**{**seg.to_dict(), "char_start": char_start, "char_end": char_end})
