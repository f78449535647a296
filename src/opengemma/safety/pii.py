"""PII detection as a safety service: `Scanner` runs the detectors a set of types needs.

A detector turns texts into `Finding`s: character offsets into the text it was given, a type
name, a score and the detector's name. A finding never carries the value it found, so findings
can be logged and written to disk without leaking what they point at.

Layout (imports point down only): `pii_base` (types, `Finding`, `RuleDetector`) <- detector
modules `pii_numbers` (structured identifiers), `pii_phone` (PHONE), `pii_secrets` (keys and
credentials), `pii_entities`, `pii_names`, `pii_cjk` (PERSON), `pii_address` (STREET_ADDRESS),
`pii_repeats` (names written again), `pii_specimens` (published test values, not reported)
<- this module <- clients such as `opengemma.data.scrub`.
Detection stays under `safety/` (it judges text, whoever produced it); `data/` is its client.
A new recognizer plugs in by implementing `Detector` and being passed to
`Scanner(extra_detectors=...)`; one that should see what the others found (the Gemma second
pass, `pii_gemma.GemmaPIIDetector`) implements `SecondPass` and goes in `second_pass=...`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from opengemma.safety import pii_entities as ent
from opengemma.safety.pii_address import StreetAddressDetector
from opengemma.safety.pii_base import PRIORITY, TYPES, Detector, Finding, PIIError, RuleDetector
from opengemma.safety.pii_cjk import CjkPersonDetector
from opengemma.safety.pii_entities import DEFAULT_SPACY_MODEL
from opengemma.safety.pii_names import NameRuleDetector
from opengemma.safety.pii_numbers import (
    CreditCardDetector,
    DateOfBirthDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    SsnDetector,
)
from opengemma.safety.pii_phone import DEFAULT_PHONE_REGIONS, PhoneDetector
from opengemma.safety.pii_repeats import repeated_names
from opengemma.safety.pii_secrets import (
    ApiKeyDetector,
    PrivateKeyDetector,
    UrlCredentialsDetector,
)
from opengemma.safety.pii_specimens import is_specimen

__all__ = [
    "DEFAULT_PHONE_REGIONS", "DEFAULT_SPACY_MODEL", "TYPES", "PRIORITY", "Detector", "Finding",
    "PIIError", "RuleDetector", "Scanner", "parse_types", "resolve_overlaps",
]  # fmt: skip

# ---------------------------------------------------------------------------- scanner

RULE_DETECTORS: tuple[type[RuleDetector], ...] = (
    EmailDetector, PhoneDetector, CreditCardDetector, IbanDetector, SsnDetector,
    IpAddressDetector, UrlCredentialsDetector, ApiKeyDetector, PrivateKeyDetector,
    DateOfBirthDetector,
)  # fmt: skip


class SecondPass(Protocol):
    """A detector that runs after the others and sees their findings (a Gemma model, say)."""

    def second_pass(
        self, texts: Sequence[str], found: Sequence[Sequence[Finding]]
    ) -> list[list[Finding]]: ...

    def describe(self) -> dict[str, Any]: ...


def parse_types(spec: str | Iterable[str] | None) -> frozenset[str]:
    """`"EMAIL,PHONE"` (or an iterable, or None for all) -> a validated set of type names."""
    if spec is None:
        return frozenset(TYPES)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {s.strip().upper() for s in items if s.strip()}
    unknown = sorted(names - set(TYPES))
    if unknown or not names:
        raise PIIError(f"unknown type(s) {unknown or spec!r}; choose from {', '.join(TYPES)}")
    return frozenset(names)


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keep a non-overlapping subset: higher type priority, then longer, then higher score.

    A PHONE lying wholly inside a STREET_ADDRESS is part of it (a house number and postcode
    read as a number) and gives way, so a weak phone reading cannot delete the address."""
    findings = list(findings)
    streets = [(f.start, f.end) for f in findings if f.type == "STREET_ADDRESS"]
    if streets:
        findings = [
            f
            for f in findings
            if f.type != "PHONE" or not any(s <= f.start and f.end <= e for s, e in streets)
        ]
    ranked = sorted(
        findings, key=lambda f: (-PRIORITY[f.type], -(f.end - f.start), -f.score, f.start)
    )
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


class Scanner:
    """Runs the detectors that `types` needs over batches of texts and resolves overlaps.

    PERSON needs a model; when it is missing, `strict=True` raises `PIIError` and otherwise
    the type is skipped and `skipped` says why (the scrub report shows it).
    """

    def __init__(
        self,
        types: str | Iterable[str] | None = None,
        *,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        ner_model: str = DEFAULT_SPACY_MODEL,
        strict: bool = False,
        extra_detectors: Sequence[Detector] = (),
        second_pass: Sequence[SecondPass] = (),
    ) -> None:
        self.types = parse_types(types)
        self.second = list(second_pass)
        self.skipped: dict[str, str] = {}
        self.detectors: list[Detector] = []
        for cls in RULE_DETECTORS:
            if cls.types & self.types:
                self.detectors.append(
                    cls(phone_regions) if cls is PhoneDetector else cls()  # type: ignore[call-arg]
                )
        self._add_entities(ner_model, strict, {t for d in extra_detectors for t in d.types})
        self.detectors.extend(extra_detectors)

    def _add_entities(self, ner_model: str, strict: bool, covered: set[str]) -> None:
        if "STREET_ADDRESS" in self.types and "STREET_ADDRESS" not in covered:
            self.detectors.append(StreetAddressDetector())
        if "PERSON" in self.types and "PERSON" not in covered:
            try:
                self.detectors.append(ent.SpacyPersonDetector(ner_model))
            except PIIError as exc:
                if strict:
                    raise
                self.skipped["PERSON"] = f"NER model not used: {exc}"
            self.detectors.append(NameRuleDetector())
            try:
                self.detectors.append(CjkPersonDetector())
            except PIIError as exc:
                if strict:
                    raise
                self.skipped["PERSON"] = f"Japanese/Chinese names not found: {exc}"

    def describe(self) -> list[dict[str, Any]]:
        """What ran: one entry per detector (name, types, rule or model, model version)."""
        return [d.describe() for d in [*self.detectors, *self.second]]

    def scan(
        self, texts: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[list[Finding]]:
        """Findings per text, non-overlapping and sorted by offset."""
        fields = fields if fields is not None else [""] * len(texts)
        found: list[list[Finding]] = [[] for _ in texts]
        for det in self.detectors:
            every = det.types <= self.types  # no finding of this detector needs filtering
            for i, hits in enumerate(det.detect(texts, fields)):
                if hits:
                    found[i].extend(hits if every else (h for h in hits if h.type in self.types))
        found = [resolve_overlaps(f) if len(f) > 1 else f for f in found]
        # A published test value keeps its span (no weaker reading of it is reported) but is
        # not reported itself: pii_specimens lists them.
        found = [
            [f for f in fs if not is_specimen(f.type, text[f.start : f.end])]
            for fs, text in zip(found, texts, strict=True)
        ]
        if "PERSON" in self.types:  # a name found once is found where it is written again
            for i, text in enumerate(texts):
                if extra := repeated_names(text, found[i]):
                    found[i] = sorted(found[i] + extra, key=lambda f: f.start)
        for det in self.second:  # sees what the detectors found; adds what they missed
            for i, hits in enumerate(det.second_pass(texts, found)):
                found[i] = resolve_overlaps(found[i] + [h for h in hits if h.type in self.types])
        return found
