"""Two models (or two settings of one) answer the same prompts; each prompt gets a score.

Scores come from a judge model's preference when a judge is given, else from a reference-based
metric (token F1 against the prompt's `reference`). A judge is asked, in the Gemma turn
template, which of two responses is better; its preference is P("A") / (P("A") + P("B")) at
the first answer token, averaged over both orders of the two responses (position bias cancels).
Win rates come with 95% bootstrap confidence intervals over prompts.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opengemma.eval import EvalError
from opengemma.eval.generation import Job, generate_many

TIE_MARGIN = 0.05  # |score_a - score_b| within this (on a 0..1 scale) counts as a tie
JUDGE_TEMPLATE = (
    "You compare two responses to the same request. Request:\n{prompt}\n\n"
    "Response A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Which response is more helpful, correct and clear? Answer with the single letter A or B."
)


@dataclass(frozen=True)
class PromptItem:
    """One prompt; `reference` is an expected answer (optional)."""

    prompt: str
    reference: str | None = None


@dataclass
class Comparison:
    """Everything the report shows. Scores are in [0, 1]; winner is "a", "b" or "tie"."""

    name_a: str
    name_b: str
    method: str  # "judge: NAME" or "reference F1"
    items: list[PromptItem]
    answers_a: list[str]
    answers_b: list[str]
    scores_a: list[float]
    scores_b: list[float]
    winners: list[str] = field(default_factory=list)

    def win_rates(
        self, resamples: int = 2000, seed: int = 0
    ) -> dict[str, tuple[float, float, float]]:
        """{"a"|"b"|"tie": (rate, low, high)}: shares of prompts with 95% bootstrap intervals."""
        n = len(self.winners)
        rng = random.Random(seed)
        draws = {k: [] for k in ("a", "b", "tie")}
        for _ in range(resamples):
            counts = Counter(self.winners[rng.randrange(n)] for _ in range(n))
            for k in draws:
                draws[k].append(counts[k] / n)
        out = {}
        for k, values in draws.items():
            values.sort()
            low, high = values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]
            out[k] = (self.winners.count(k) / n, low, high)
        return out


def read_prompts(path: str | Path) -> list[PromptItem]:
    """JSONL ({"prompt": ..., "reference": ...} per line) or plain text (one prompt a line)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path} is not a file; give a .jsonl or .txt file of prompts")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    items = []
    for no, line in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{path}:{no}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise EvalError(f'{path}:{no}: each line needs a "prompt" string')
            ref = rec.get("reference")
            items.append(PromptItem(rec["prompt"], None if ref is None else str(ref)))
        else:
            items.append(PromptItem(line))
    if not items:
        raise EvalError(f"{path} holds no prompts")
    return items


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style F1 of lower-cased word tokens, in [0, 1]."""
    a, r = _words(answer), _words(reference)
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _letter_ids(tokenizer) -> tuple[int, int]:
    ids = [tokenizer.encode_plain(letter) for letter in ("A", "B")]
    if any(len(i) != 1 for i in ids):
        raise EvalError("the judge's tokenizer has no single tokens for 'A' and 'B'")
    return ids[0][0], ids[1][0]


@torch.inference_mode()
def judge_preference(judge, prompt: str, a: str, b: str) -> float:
    """P(the judge prefers `a`), in [0, 1], averaged over both presentation orders."""
    from opengemma.chat import chat_prompt_ids

    id_a, id_b = _letter_ids(judge.tokenizer)
    prefs = []
    for first, second, a_is_first in ((a, b, True), (b, a, False)):
        text = JUDGE_TEMPLATE.format(prompt=prompt, a=first, b=second)
        ids = chat_prompt_ids(judge.tokenizer, [{"role": "user", "content": text}])
        logits = judge.logits(ids)[-1]
        p_first = torch.softmax(logits[[id_a, id_b]].double(), dim=0)[0].item()
        prefs.append(p_first if a_is_first else 1.0 - p_first)
    return sum(prefs) / 2


def answer_all(
    lm,
    items: Sequence[PromptItem],
    max_tokens: int,
    chat: bool,
    on_done: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers of `lm` to every prompt (chat template when `chat`)."""
    from opengemma.chat import chat_prompt_ids

    def ids(item: PromptItem) -> list[int]:
        if chat:
            return chat_prompt_ids(lm.tokenizer, [{"role": "user", "content": item.prompt}])
        return lm.tokenizer.encode(item.prompt)

    jobs = [Job(ids(it), max_tokens) for it in items]
    return [t.strip() for t in generate_many(lm, jobs, on_done=on_done)]


def score(comparison: Comparison, judge=None, judge_name: str = "judge") -> Comparison:
    """Fill scores and winners: judge preference if `judge`, else reference F1."""
    c = comparison
    if judge is not None:
        c.method = f"judge: {judge_name}"
        prefs = [
            judge_preference(judge, it.prompt, a, b)
            for it, a, b in zip(c.items, c.answers_a, c.answers_b, strict=True)
        ]
        c.scores_a, c.scores_b = prefs, [1.0 - p for p in prefs]
    else:
        if any(it.reference is None for it in c.items):
            raise EvalError(
                "no judge and not every prompt has a reference: pass --judge MODEL, or give "
                'each JSONL line a "reference" answer'
            )
        c.method = "reference F1"
        refs = [it.reference or "" for it in c.items]
        c.scores_a = [token_f1(a, r) for a, r in zip(c.answers_a, refs, strict=True)]
        c.scores_b = [token_f1(b, r) for b, r in zip(c.answers_b, refs, strict=True)]
    c.winners = [
        "tie" if abs(sa - sb) <= TIE_MARGIN else ("a" if sa > sb else "b")
        for sa, sb in zip(c.scores_a, c.scores_b, strict=True)
    ]
    return c
