"""A second pass that asks a Gemma model for the personal data the rule detectors missed.

The text is shown to the model with every value the rules found already replaced by its
`<TYPE>` tag, and the model is asked to list what personal data is left, one `TYPE: value`
per line (NeMo Curator's LLM PII step works the same way). The answer is parsed leniently --
bullets, numbering, quotes, `**bold**`, synonyms such as `NAME` or `phone number` -- and a
value is kept only when it occurs verbatim in the original text outside the rules' findings,
so a model that invents values adds nothing. Any model `opengemma.load` reads will do; the
embedded Gemma 3 270M is small, and what it adds is measured in docs/scrub.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from opengemma.safety.pii_base import TYPES, Finding

PROMPT = """You find personal data in text. Values already found are shown as tags like <PHONE>.
List every other piece of personal data in the text: names of people (PERSON), street
addresses (STREET_ADDRESS), phone numbers (PHONE), e-mail addresses (EMAIL), dates of birth
(DATE_OF_BIRTH), IBANs (IBAN), card numbers (CREDIT_CARD), passwords or keys (SECRET).
Write one per line as TYPE: exact text. If there is none, write NONE.

Text:
{text}

Personal data:
"""
_SYNONYMS = {
    "NAME": "PERSON", "PERSON_NAME": "PERSON", "FULL_NAME": "PERSON", "PEOPLE": "PERSON",
    "ADDRESS": "STREET_ADDRESS", "STREET": "STREET_ADDRESS", "POSTAL_ADDRESS": "STREET_ADDRESS",
    "PHONE_NUMBER": "PHONE", "TELEPHONE": "PHONE", "MOBILE": "PHONE", "TEL": "PHONE",
    "E-MAIL": "EMAIL", "EMAIL_ADDRESS": "EMAIL", "MAIL": "EMAIL", "DOB": "DATE_OF_BIRTH",
    "BIRTHDAY": "DATE_OF_BIRTH", "BIRTH_DATE": "DATE_OF_BIRTH", "PASSWORD": "SECRET",
    "KEY": "SECRET", "TOKEN": "SECRET", "CARD": "CREDIT_CARD", "CARD_NUMBER": "CREDIT_CARD",
}  # fmt: skip
_LINE = re.compile(r"^[\s>*\-•\d.)\]]*\**\s*(?P<type>[A-Za-z][A-Za-z _-]{1,30}?)\s*\**\s*[:=|–-]\s*"
                   r"(?P<value>.+?)\s*$")  # fmt: skip


def parse_answer(answer: str) -> list[tuple[str, str]]:
    """(type, value) pairs from a model's free-form answer; unknown types are dropped."""
    out = []
    for line in answer.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        key = re.sub(r"[\s-]+", "_", m["type"].strip()).upper()
        type_ = key if key in TYPES else _SYNONYMS.get(key) or _SYNONYMS.get(key.replace("_", ""))
        value = m["value"].strip().strip("*`\"'“”«»").strip().rstrip(".,;")
        if type_ and len(value) >= 3 and not re.fullmatch(r"<[A-Z_]+>|none|n/?a", value, re.I):
            out.append((type_, value))
    return out


def locate(text: str, value: str, taken: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The first occurrence of `value` in `text` (exact, else ignoring case) that overlaps no
    span in `taken`."""
    for hay, needle in ((text, value), (text.lower(), value.lower())):
        pos = hay.find(needle)
        while pos >= 0:
            end = pos + len(needle)
            if all(end <= s or pos >= e for s, e in taken):
                return pos, end
            pos = hay.find(needle, pos + 1)
    return None


def mask(text: str, findings: Sequence[Finding]) -> str:
    """`text` with each finding replaced by its `<TYPE>` tag."""
    pieces, pos = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        pieces += [text[pos : f.start], f"<{f.type}>"]
        pos = max(pos, f.end)
    return "".join(pieces) + text[pos:]


class GemmaPIIDetector:
    """Second-pass detector: a Gemma model lists the personal data left after the rules."""

    name, kind = "gemma-second-pass", "model"
    types = frozenset(t for t in TYPES if t not in ("PRIVATE_KEY", "URL_CREDENTIALS"))
    max_chars = 1500  # longer texts are asked about in pieces (line-aligned)

    def __init__(self, model: Any = None, max_tokens: int = 96) -> None:
        """`model`: an `opengemma.api.LM`, a model path, or None for the embedded default."""
        if model is None or isinstance(model, str):
            from opengemma.api import load  # a model is only loaded when this pass is asked for

            model = load(model)
        self.lm = model
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "types": sorted(self.types), "kind": self.kind,
                "model": str(getattr(self.lm, "path", "?"))}  # fmt: skip

    def ask(self, text: str) -> str:
        prompt = PROMPT.format(text=text)
        return self.lm.generate(prompt, self.max_tokens, temperature=0.0, stop=["\n\n\n"])

    def second_pass(
        self, texts: Sequence[str], found: Sequence[Sequence[Finding]]
    ) -> list[list[Finding]]:
        """Findings the model adds to `found` (one list per text)."""
        out: list[list[Finding]] = []
        for text, hits in zip(texts, found, strict=True):
            taken = [(f.start, f.end) for f in hits]
            added: list[Finding] = []
            for off in range(0, len(text), self.max_chars):
                piece = text[off : off + self.max_chars]
                local = [f for f in hits if off <= f.start < off + self.max_chars]
                shifted = [Finding(f.start - off, f.end - off, f.type, f.score, f.detector)
                           for f in local]  # fmt: skip
                for type_, value in parse_answer(self.ask(mask(piece, shifted))):
                    span = locate(text, value, taken)
                    if span is not None:
                        taken.append(span)
                        added.append(Finding(span[0], span[1], type_, 0.5, self.name))
            out.append(added)
        return out
