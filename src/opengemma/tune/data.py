"""Training examples: JSONL records -> token ids + loss mask, then padded or packed batches.

Three record kinds, one per line:

- `{"prompt": str, "completion": str}`: `<bos> prompt completion <eos>`; loss on the completion
  and the EOS (the prompt is tokenized on its own, as it will be at generation time).
- `{"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}`: the Gemma chat
  template (`opengemma.chat`); loss on the text of every model turn and its `<end_of_turn>`.
- `{"text": str}`: plain language modelling; loss on every token after `<bos>`.

`mask[i] == 1` means token `i` is a target, predicted from the tokens before it. Text is encoded
with `encode_plain`, so control-token text inside the data stays text.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opengemma.chat import normalize
from opengemma.errors import InvalidRequestError, OpenGemmaError


class TuneDataError(OpenGemmaError):
    """Training or evaluation data is missing, malformed, or yields nothing to train on."""


@dataclass(frozen=True)
class Example:
    """One training row: token ids and a same-length 0/1 loss mask over target tokens."""

    ids: list[int]
    mask: list[int]

    @property
    def n_targets(self) -> int:
        return sum(self.mask)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file; a malformed line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise TuneDataError(f"data file {path} not found; pass a JSONL file of training records")
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise TuneDataError(f"{path}:{lineno}: not a JSON line ({exc})") from None
            if not isinstance(value, dict):
                raise TuneDataError(f"{path}:{lineno}: a record must be a JSON object")
            records.append(value)
    if not records:
        raise TuneDataError(f"{path} holds no records")
    return records


def encode_record(tokenizer: Any, record: Mapping[str, Any]) -> Example:
    """One record (any of the three kinds) -> Example, untruncated."""
    if "messages" in record:
        return _encode_chat(tokenizer, record["messages"])
    if "prompt" in record or "completion" in record:
        prompt, completion = record.get("prompt"), record.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise InvalidRequestError(
                "a prompt/completion record needs two strings, completion non-empty"
            )
        p = [tokenizer.bos_id, *tokenizer.encode_plain(prompt)]
        c = [*tokenizer.encode_plain(completion), tokenizer.eos_id]
        return Example(p + c, [0] * len(p) + [1] * len(c))
    if isinstance(record.get("text"), str) and record["text"]:
        ids = [tokenizer.bos_id, *tokenizer.encode_plain(record["text"])]
        return Example(ids, [0] + [1] * (len(ids) - 1))
    raise InvalidRequestError(
        "a record needs 'messages', or 'prompt' and 'completion', or 'text'; "
        f"found keys {sorted(record)}"
    )


def _encode_chat(tokenizer: Any, messages: Any) -> Example:
    """The chat template of `opengemma.chat.chat_prompt_ids`, with a mask on model turns."""
    if not isinstance(messages, list):
        raise InvalidRequestError("'messages' must be a list of {role, content} objects")
    start, end = tokenizer.start_of_turn_id, tokenizer.end_of_turn_id
    if start is None or end is None:
        raise InvalidRequestError("this tokenizer has no <start_of_turn>/<end_of_turn> tokens")
    newline = tokenizer.encode_plain("\n")
    ids, mask = [tokenizer.bos_id], [0]
    for role, text in normalize(messages):
        if role == "model":  # "model\n" as the generation prompt encodes it, then the answer
            head, body = [start, *tokenizer.encode_plain("model\n")], tokenizer.encode_plain(text)
            ids += head + body + [end] + newline
            mask += [0] * len(head) + [1] * (len(body) + 1) + [0] * len(newline)
        else:
            turn = [start, *tokenizer.encode_plain(f"{role}\n{text}"), end, *newline]
            ids += turn
            mask += [0] * len(turn)
    if not any(mask):
        raise InvalidRequestError("the conversation has no assistant turn to learn from")
    return Example(ids, mask)


@dataclass
class DataStats:
    """What happened to the records on the way to examples."""

    records: int = 0
    examples: int = 0
    truncated: int = 0  # longer than max_len: cut at max_len tokens
    dropped_empty: int = 0  # no target token left after truncation
    target_tokens: int = 0


def build_examples(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], max_len: int, source: str = "data"
) -> tuple[list[Example], DataStats]:
    """Encode and truncate to `max_len` tokens; rows with no target left are dropped."""
    if max_len < 2:
        raise TuneDataError(f"--max-len must be at least 2 tokens, got {max_len}")
    stats = DataStats(records=len(records))
    out = []
    for i, rec in enumerate(records):
        try:
            ex = encode_record(tokenizer, rec)
        except InvalidRequestError as exc:
            raise TuneDataError(f"{source}, record {i + 1}: {exc}") from None
        if len(ex.ids) > max_len:
            stats.truncated += 1
            ex = Example(ex.ids[:max_len], ex.mask[:max_len])
        if ex.n_targets == 0:
            stats.dropped_empty += 1
            continue
        out.append(ex)
        stats.target_tokens += ex.n_targets
    stats.examples = len(out)
    if not out:
        raise TuneDataError(f"{source}: no example has a target token within --max-len {max_len}")
    return out, stats


def pack(examples: Sequence[Example], max_len: int) -> list[Example]:
    """Concatenate consecutive examples into rows of at most `max_len` tokens.

    Each example keeps its own `<bos>`; attention is not blocked between the examples of a row
    (fewer pad tokens, at the price of some cross-example context).
    """
    rows: list[Example] = []
    ids: list[int] = []
    mask: list[int] = []
    for ex in examples:
        if ids and len(ids) + len(ex.ids) > max_len:
            rows.append(Example(ids, mask))
            ids, mask = [], []
        ids, mask = ids + ex.ids, mask + ex.mask
    if ids:
        rows.append(Example(ids, mask))
    return rows


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row: ids (B, T) int64 and mask (B, T) float32.

    Right padding never changes the loss: a causal model's real tokens do not see later pads.
    """
    T = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.float32)
    for b, e in enumerate(examples):
        ids[b, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        mask[b, : len(e.mask)] = torch.tensor(e.mask, dtype=torch.float32)
    return ids, mask


def split_eval(
    records: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) with a seeded shuffle; at least one record on each side, or no eval."""
    if not 0.0 <= fraction < 1.0:
        raise TuneDataError(f"--eval-split must be in [0, 1), got {fraction}")
    if fraction <= 0 or len(records) < 2:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    k = min(len(records) - 1, max(1, round(fraction * len(records))))
    held = set(order[:k])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [records[i] for i in sorted(held)]


def scrub_records(
    records: list[dict[str, Any]], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Run the corpus scrubber (`opengemma.data`, every type, `replace`) over every string.

    Records with personal data come back with `<EMAIL>`-style placeholders; a record the
    scrubber drops or cannot handle is an error. Returns the records unchanged, with a log line,
    when the scrubber cannot be imported.
    """
    try:
        from opengemma.data import Scrubber, ScrubOptions
    except ImportError as exc:  # the scrub pipeline is optional here
        log(f"scrubber not available ({exc}); training data NOT scrubbed")
        return records
    scrubber = Scrubber(ScrubOptions())
    outcomes = scrubber.process(records)
    out, changed = [], 0
    for i, o in enumerate(outcomes):
        if o.value is None or o.dropped:
            raise TuneDataError(f"record {i + 1}: the scrubber rejected it ({o.error})")
        changed += o.changed
        out.append(o.value)
    counts: dict[str, int] = {}
    for o in outcomes:
        for _, f in o.findings:
            counts[f.type] = counts.get(f.type, 0) + 1
    found = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing"
    log(f"scrubbed training data: {changed} of {len(records)} records changed ({found})")
    return out
