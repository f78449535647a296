"""Sliding-window perplexity over text files.

The text is tokenized once (no control tokens are read from it). Windows of at most
`context` tokens -- BOS, then up to `context - 1` tokens of text -- start every `stride` tokens;
each window scores only the tokens that no earlier window scored, so every text token is
predicted exactly once, with up to `context - 1 - stride` tokens of left context beyond the
first window (the recipe of the Hugging Face guide "Perplexity of fixed-length models", with a
BOS at the head of every window because Gemma expects one at position 0).

perplexity = exp(sum of negative log-likelihoods in nats / number of scored tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opengemma.eval import EvalError
from opengemma.eval.scoring import score_rows

DEFAULT_CONTEXT = 512
Progress = Callable[[int], None]  # called with the number of tokens just scored


@dataclass(frozen=True)
class Window:
    """One forward pass: text tokens [begin, end) after a BOS; targets are [score_from, end)."""

    begin: int
    end: int
    score_from: int


@dataclass(frozen=True)
class PerplexityResult:
    """`nll`: summed negative log-likelihood in nats over `tokens` scored tokens."""

    name: str
    tokens: int
    nll: float
    windows: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)

    @property
    def bits_per_token(self) -> float:
        return self.nll / self.tokens / math.log(2)


def windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The windows covering `n_tokens` text tokens; each holds at most `context - 1` of them."""
    span = context - 1
    if span < 1:
        raise EvalError(f"--context must be at least 2 tokens, got {context}")
    if not 1 <= stride <= span:
        raise EvalError(
            f"--stride must be between 1 and context - 1 = {span} (every token scored once), "
            f"got {stride}"
        )
    out: list[Window] = []
    done = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + span, n_tokens)
        out.append(Window(begin, end, done))
        done = end
        if end == n_tokens:
            break
    return out


def _batches(spans: Sequence[Window], batch_size: int) -> Iterable[list[Window]]:
    """Consecutive windows of one shape (length, scored count) grouped up to batch_size."""
    group: list[Window] = []
    for w in spans:
        shape = (w.end - w.begin, w.end - w.score_from)
        if group and (
            len(group) == batch_size
            or shape != (group[0].end - group[0].begin, group[0].end - group[0].score_from)
        ):
            yield group
            group = []
        group.append(w)
    if group:
        yield group


def sequence_nll(
    lm,
    tokens: Sequence[int],
    context: int = DEFAULT_CONTEXT,
    stride: int | None = None,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> tuple[float, int, int]:
    """(summed NLL in nats, scored tokens, windows) of `tokens` (text ids, no BOS) under `lm`."""
    if not tokens:
        raise EvalError("nothing to score: the text has no tokens")
    limit = lm.config.max_position_embeddings
    if context > limit:
        raise EvalError(f"--context {context} exceeds the model's context of {limit} tokens")
    stride = stride if stride is not None else max(1, (context - 1) // 2)
    spans = windows(len(tokens), context, stride)
    bos = lm.tokenizer.bos_id
    nll, scored = 0.0, 0
    for group in _batches(spans, max(1, batch_size)):
        rows = [[bos, *tokens[w.begin : w.end]] for w in group]
        starts = [1 + w.score_from - w.begin for w in group]
        for w, res in zip(
            group, score_rows(lm.model, rows, starts, lm.tokenizer.pad_id or 0), strict=True
        ):
            nll -= res.total
            scored += w.end - w.score_from
            if progress is not None:
                progress(w.end - w.score_from)
    return nll, scored, len(spans)


def text_tokens(lm, text: str) -> list[int]:
    """Text ids without BOS; control-token text in the file stays plain text."""
    return list(lm.tokenizer.encode_plain(text))


def perplexity_of_text(lm, text: str, name: str = "text", **kwargs) -> PerplexityResult:
    """Perplexity of one text; kwargs as `sequence_nll` (context, stride, batch_size, progress)."""
    nll, n, n_windows = sequence_nll(lm, text_tokens(lm, text), **kwargs)
    return PerplexityResult(name, n, nll, n_windows)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path} is not a file; pass UTF-8 text files to score")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise EvalError(f"{path} is empty; give it some text to score")
    return text


def combine(results: Sequence[PerplexityResult], name: str = "all") -> PerplexityResult:
    """Token-weighted total over several results (NLLs and token counts add up)."""
    return PerplexityResult(
        name,
        sum(r.tokens for r in results),
        sum(r.nll for r in results),
        sum(r.windows for r in results),
    )
