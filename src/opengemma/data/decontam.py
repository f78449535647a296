"""Decontamination: drop training records that share a word n-gram with an evaluation set.

The evaluation files (JSONL: every string field; anything else: every line) are reduced to a
set of hashed, lower-cased word n-grams (13 by default, as in the GPT-3 paper); an evaluation
text shorter than n words is kept whole. A record is contaminated when any of its n-grams (or
whole short evaluation texts) appears in that set.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from opengemma.data.formats import ScrubError
from opengemma.data.scrub import iter_strings

_WORD = re.compile(r"\w+", re.UNICODE)


def _key(words: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()


def _eval_texts(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise ScrubError(f"evaluation set not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    value = line
                yield from (t for _, t in iter_strings(value))
            else:
                yield line


class Decontaminator:
    """`contaminated(text)` is True when `text` overlaps an evaluation set."""

    def __init__(self, paths: Iterable[Path], n: int = 13, min_words: int = 8) -> None:
        self.n = n
        self.keys: set[bytes] = set()
        self.short_lengths: set[int] = set()  # lengths of evaluation texts shorter than n
        for path in paths:
            for text in _eval_texts(path):
                words = _WORD.findall(text.lower())
                if len(words) < min(min_words, n):
                    continue
                if len(words) < n:
                    self.keys.add(_key(words))
                    self.short_lengths.add(len(words))
                else:
                    self.keys.update(_key(words[i : i + n]) for i in range(len(words) - n + 1))

    def contaminated(self, text: str) -> bool:
        words = _WORD.findall(text.lower())
        for k in sorted(self.short_lengths | {self.n}):
            if any(_key(words[i : i + k]) in self.keys for i in range(len(words) - k + 1)):
                return True
        return False
