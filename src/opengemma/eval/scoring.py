"""Log-probabilities of target tokens under a model, for many sequences at once.

The one primitive that perplexity and the lm-eval backend share: given rows of token ids and,
per row, the index of its first target token, return log p(ids[t] | ids[:t]) for every target.
Rows are right-padded into one batch (padding after a row's end cannot change its positions:
attention is causal), the context common to all rows is run into a KV cache without computing
logits, and logits are materialised only for the positions that predict targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from opengemma.eval import EvalError
from opengemma.model import GemmaModel

# positions x rows whose logits exist at once: 1024 x 262144 vocab x 4 bytes = 1 GiB
LOGIT_POSITIONS = 1024


@dataclass(frozen=True)
class RowScore:
    """Per-target results of one row: `logprobs` (n_targets,) float64 natural-log
    probabilities, `greedy` True when every target was the model's argmax."""

    logprobs: torch.Tensor
    greedy: bool

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())


def _check_rows(rows: Sequence[Sequence[int]], starts: Sequence[int], context: int) -> None:
    if len(rows) != len(starts) or not rows:
        raise EvalError("need one start per row and at least one row")
    for ids, start in zip(rows, starts, strict=True):
        if not 1 <= start < len(ids):
            raise EvalError(f"target start {start} outside 1..{len(ids) - 1}")
        if len(ids) - 1 > context:
            raise EvalError(f"a row of {len(ids)} tokens exceeds the context of {context}")


@torch.inference_mode()
def score_rows(
    model: GemmaModel, rows: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int = 0
) -> list[RowScore]:
    """Score rows[i][starts[i]:] given everything before it, all rows in one batch.

    rows: token ids, each starting with the tokens the model conditions on (BOS included when
    wanted); starts[i] >= 1 is the index of row i's first target. Only positions from
    min(starts)-1 on produce logits, in chunks of about LOGIT_POSITIONS / B positions.
    """
    _check_rows(rows, starts, model.config.max_position_embeddings)
    device = model.device
    width = max(len(r) for r in rows) - 1  # inputs: every token but the last of the longest row
    ids = torch.full((len(rows), width + 1), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    ids = ids.to(device)
    shared = min(starts) - 1  # positions no row needs logits for
    cache = model.new_cache(width, batch=len(rows))
    if shared > 0:
        model(ids[:, :shared], cache, last_only=True)
    picked: list[list[torch.Tensor]] = [[] for _ in rows]
    greedy = [True] * len(rows)
    step = max(16, LOGIT_POSITIONS // len(rows))
    for a in range(shared, width, step):  # input positions [a, b) in one forward
        b = min(a + step, width)
        logits = model(ids[:, a:b], cache)  # (B, b - a, V) float32
        for i, (r, start) in enumerate(zip(rows, starts, strict=True)):
            lo, hi = max(a, start - 1), min(b, len(r) - 1)  # positions predicting targets
            if lo >= hi:
                continue
            row_logits = logits[i, lo - a : hi - a]
            targets = ids[i, lo + 1 : hi + 1]
            logp = torch.log_softmax(row_logits, dim=-1)
            picked[i].append(logp.gather(1, targets[:, None])[:, 0].double().cpu())
            greedy[i] = greedy[i] and bool((row_logits.argmax(-1) == targets).all())
    return [RowScore(torch.cat(p), g) for p, g in zip(picked, greedy, strict=True)]
