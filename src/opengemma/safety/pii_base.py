"""Base types of the PII detectors: the type names, `Finding`, `PIIError`, `RuleDetector`.

PII detection is a safety service: `opengemma.safety.pii.Scanner` is its surface and the corpus
pipeline (`opengemma.data.scrub`) is one client of it (a guard on model output could be another).
Import order, foundations first, no cycles: `pii_base` <- the detector modules (`pii_numbers`,
`pii_secrets`, `pii_entities`) <- `pii` (the `Scanner` that assembles them) <- clients.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from re import Match, Pattern
from typing import Any, Protocol

from opengemma.errors import OpenGemmaError

TYPES: tuple[str, ...] = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "URL_CREDENTIALS",
    "API_KEY", "PRIVATE_KEY", "SECRET", "PERSON", "STREET_ADDRESS", "DATE_OF_BIRTH",
)  # fmt: skip
# SECRET: a high-entropy value assigned to a secret-ish key (`password=`, `token:`) that matches
# no provider's key format -- a lower-confidence kind of API_KEY.
# Overlap winner: secrets and structured identifiers beat fuzzy entities that sit inside them.
PRIORITY: dict[str, int] = {t: len(TYPES) - i for i, t in enumerate((
    "PRIVATE_KEY", "URL_CREDENTIALS", "API_KEY", "SECRET", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN",
    "IP_ADDRESS", "PHONE", "DATE_OF_BIRTH", "STREET_ADDRESS", "PERSON",
))}  # fmt: skip


# Letter classes for regular expressions over the Latin scripts (Latin-1 and Latin Extended-A:
# Polish Ł/ś, Turkish Ş/İ/ı, Czech Č, Romanian Ţ...; Vietnamese Ơ/Ư and the tone-marked letters
# of Latin Extended Additional: ễ, ị, ạ): upper-case letters, and letters of any case.
_VIETNAMESE = [0x1A0, 0x1A1, 0x1AF, 0x1B0, *range(0x1EA0, 0x1EFA)]
UPPER = "A-ZÀ-ÖØ-Þ" + "".join(
    c for c in map(chr, [*range(0x100, 0x180), *_VIETNAMESE]) if c.isupper()
)
LOWER = "a-zß-öø-ÿ\u0100-\u017f\u01a0\u01a1\u01af\u01b0\u1ea0-\u1ef9"


HAS_DIGIT = re.compile(r"\d")  # `HAS_DIGIT.search(text)`: much faster than a loop over chars


class PIIError(OpenGemmaError, ValueError):
    """A detector was asked for an unknown type, or its model is not installed."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected span: `text[start:end]` (character offsets) is a value of `type`."""

    start: int
    end: int
    type: str
    score: float
    detector: str


class Detector(Protocol):
    """Anything that finds typed spans in a batch of texts (`fields` name where each came from)."""

    name: str
    types: frozenset[str]

    def detect(self, texts: Sequence[str], fields: Sequence[str]) -> list[list[Finding]]: ...

    def describe(self) -> dict[str, Any]: ...


class RuleDetector:
    """Base of the detectors that look at one text at a time, without a model."""

    name = "rule"
    types: frozenset[str] = frozenset()
    kind = "rule"

    def detect(self, texts: Sequence[str], fields: Sequence[str]) -> list[list[Finding]]:
        return [self.find(t, f) for t, f in zip(texts, fields, strict=True)]

    def find(self, text: str, field: str) -> list[Finding]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "types": sorted(self.types), "kind": self.kind}

    def _hit(self, start: int, end: int, score: float, type_: str | None = None) -> Finding:
        return Finding(start, end, type_ or next(iter(self.types)), score, self.name)


def shannon_entropy(s: str) -> float:
    """Bits per character of `s`'s own character distribution."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def before(text: str, start: int, width: int) -> str:
    """The `width` characters of `text` before offset `start`."""
    return text[max(0, start - width) : start]


def occurrences(text: str, literals: Iterable[str]) -> list[int]:
    """The sorted offsets at which one of `literals` starts in `text`."""
    found: set[int] = set()
    for lit in literals:
        i = text.find(lit)
        while i >= 0:
            found.add(i)
            i = text.find(lit, i + 1)
    return sorted(found)


def finditer_at(pattern: Pattern[str], text: str, starts: Iterable[int]) -> Iterator[Match[str]]:
    """`pattern.finditer(text)` for a pattern that can only match at one of `starts` (sorted
    offsets, e.g. the `occurrences` of the literals every match begins with): the same matches,
    tried only there. `str.find` skips to them far faster than `re` scans an alternation whose
    branches begin differently. Look-behinds and `\\b` still see the text before each start."""
    end = 0
    for p in starts:
        if p < end:
            continue
        m = pattern.match(text, p)
        if m is not None:
            yield m
            end = max(m.end(), p + 1)
