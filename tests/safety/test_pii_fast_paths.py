"""The PII detectors' fast paths give the answers of the slow ones they replace.

Oracles: the case-insensitive expressions themselves (the fast paths scan lower-cased ASCII
text with case-sensitive twins), look-behind-first forms of the number expressions, and the
spaCy detector reading every text (the fast path skips texts without a possible name).
"""

from __future__ import annotations

import random
import re

from opengemma.safety import pii_entities, pii_numbers, pii_phone, pii_secrets
from opengemma.safety.pii import Scanner

TEXTS = [
    "Dear Ms. Anna Schmidt-Weber, your parcel left Berlin on 12 March 1984.",
    "DOB: MARCH 3, 1971; Born 1984-05-12; geboren am 1. Mai 1990; né le 3 mars 1985",
    'API_KEY = "AbC123xYz987QwErTy55"\nPassword: S3cr3t!pass\nBEARER abcdefghijKLMNOP1234',
    "password=........ and PASSWORD: Tr0ub4dor&3, Kennwort: Xy9#kk12",
    "Call +49 (0)30 4448 4644 or (303) 555-0172, card 4111 1111 1111 1111, ssn 078-05-1120",
    "ip 192.168.1.20, v1.2.3.4 build, 10.0.0.1:8080, PL61 1090 1014 0000 0712 1981 2874",
    "Ein Brief von Jürgen Müller aus München: Grüße, Jürgen",
    "[10:01] user: hey, i'm Leonardo Borja Durán\n[10:02] agent: Hi Evelia! How can I help?",
    "name,email\nmaurits van breugel,m@example.com\nJOHN SMITH,j@example.com",
    "{'client_secret': 'q8Zr2LmN5vXc7TbY', 'timeout': 30} # Success, Deep Learning",
    "Olá, sou a Maria da Silva; ligue 21 98765-4321. Atenciosamente, Maria",
    "the order 2024-000123 shipped; tracking 1Z999AA10123456784; total $1,234.56",
]


def _mutations(seed: int, n: int) -> list[str]:
    """Case flips, accents and separators mixed into the texts above."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        t = rnd.choice(TEXTS)
        chars = [c.upper() if rnd.random() < 0.2 else c for c in t]
        if rnd.random() < 0.3:
            chars.insert(rnd.randrange(len(chars) + 1), rnd.choice("éßİſK.-/ \n:=\"'"))
        out.append("".join(chars))
    return out


CASES = TEXTS + _mutations(0, 400)


def test_case_sensitive_twins_find_what_the_case_insensitive_expressions_find():
    for text in CASES:
        assert pii_secrets.has_key_word(text) == bool(pii_secrets._KEY_WORD.search(text))
        for pattern in (pii_secrets._ASSIGNED, pii_secrets._PASSWORD):
            assert [m.span() for m in pii_secrets._finditer(pattern, text)] == [
                m.span() for m in pattern.finditer(text)
            ]
        if text.isascii():
            assert [m.span() for m in pii_numbers._DATE_LOWER.finditer(text.lower())] == [
                m.span() for m in pii_numbers._DATE.finditer(text)
            ]


def test_number_expressions_match_their_look_behind_first_forms():
    slow = {
        pii_numbers.CreditCardDetector._re: r"(?<![\w+-])\d(?:[ -]?\d){11,18}(?![\w])",
        pii_numbers.IbanDetector._nrb: r"(?<![\w-])\d{2}(?:[ -]?\d{4}){6}(?![\w-])",
        pii_numbers.SsnDetector._re: r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])",
        pii_numbers.IpAddressDetector._v4: r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)",
        pii_phone._CANDIDATE: pii_phone._CANDIDATE.pattern.removeprefix(r"(?=[+(\d])"),
    }
    rnd = random.Random(1)
    noise = [
        "".join(rnd.choice("0123456789-+. ()/_a:=#,\n") for _ in range(60)) for _ in range(300)
    ]
    for fast, pattern in slow.items():
        oracle = re.compile(pattern)
        for text in CASES + noise:
            got = [(m.span(), m.groups()) for m in fast.finditer(text)]
            assert got == [(m.span(), m.groups()) for m in oracle.finditer(text)], text


def test_a_password_of_dots_is_not_a_secret_and_does_not_fail():
    assert Scanner(["SECRET"]).scan(["password=........", "pwd: ........."]) == [[], []]


def test_person_model_skips_only_texts_where_it_could_keep_nothing():
    det = pii_entities.SpacyPersonDetector()
    texts = CASES[:120]
    fast = det.detect(texts, [""] * len(texts))
    every = _detect_every_text(det, texts)
    assert fast == every
    assert any(fast)  # the check is not empty
    assert det._nlp.pipe_names == ["ner"]


def _detect_every_text(det: pii_entities.SpacyPersonDetector, texts: list[str]) -> list:
    """The detector with its gate replaced by "every text holds a possible name"."""
    gate = det._possible_names
    try:
        det._possible_names = lambda text, english: iter([(0, len(text))])  # type: ignore
        return det.detect(texts, [""] * len(texts))
    finally:
        det._possible_names = gate  # type: ignore[method-assign]
