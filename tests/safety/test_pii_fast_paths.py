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
from opengemma.safety.pii_base import finditer_at, occurrences

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


# Tokens of every provider format (shapes from the providers' documentation; made-up values),
# glued to words, cut short and repeated so that matches start, end and fail at odd places.
_TOKENS = [
    "AKIAIOSFODNN7REALKEY", "ASIA" + "Q" * 16, "ghp_" + "a1B2" * 9, "gho_" + "Z" * 36,
    "github_pat_" + "11AB_" * 5, "glpat-" + "x_-9" * 5, "xoxb-123456789012-abc", "xoxp-1-2",
    "sk_live_" + "4eC39HqLyjWDarjt", "rk_test_" + "Ab3" * 6, "AIza" + "Sy-_9" * 7,
    "sk-ant-api03-" + "q" * 40, "sk-proj-" + "A1" * 16, "sk-" + "9" * 32, "hf_" + "abc" * 10,
    "SG." + "a" * 22 + "." + "b" * 43, "npm_" + "C" * 36, "pypi-AgEIcHlwaS5vcmc" + "x" * 40,
    "dop_v1_" + "f" * 64, "shpat_" + "0a" * 16, "AC" + "0f" * 16, "SK" + "9e" * 16,
    "eyJhbGciOiJI.eyJzdWIiOiIx.SflKxwRJSMeKKF2QT4",
]  # fmt: skip


def _token_texts(seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    glue = [" ", "", "x", "_", "-", ".", "=", "'", "\n", "token: ", "Bearer ", "password="]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randrange(1, 5)):
            tok = rnd.choice(_TOKENS)
            tok = tok[: rnd.randrange(len(tok) // 2, len(tok) + 1)] if rnd.random() < 0.3 else tok
            parts.append(rnd.choice(glue) + (tok.lower() if rnd.random() < 0.1 else tok))
        out.append("".join(parts) + rnd.choice(glue))
    return out


def test_expressions_tried_only_where_they_can_start_find_what_a_full_scan_finds():
    texts = CASES + _token_texts(2, 600)
    rnd = random.Random(3)
    noise = ["".join(rnd.choice("abcdefABCDEF0123456789:.:: gx-") for _ in range(50))
             for _ in range(400)]  # fmt: skip
    ibans = ["".join(rnd.choice(["DE", "de", "Gb", "PL", "xDE", "1", "89", " ", "-", "37040044"])
                     for _ in range(10)) for _ in range(400)]  # fmt: skip

    def spans(matches):
        return [m.span() for m in matches]

    found = 0
    for text in texts:
        full = spans(pii_secrets._PROVIDER_KEYS.finditer(text))
        starts = occurrences(text, pii_secrets._PROVIDER_STARTS)
        assert spans(finditer_at(pii_secrets._PROVIDER_KEYS, text, starts)) == full, text
        found += len(full)
        for pattern in (pii_secrets._ASSIGNED, pii_secrets._PASSWORD):
            assert spans(pii_secrets._finditer(pattern, text)) == spans(pattern.finditer(text))
    assert found > 500  # the texts hold many keys
    iban, v6 = pii_numbers.IbanDetector, pii_numbers.IpAddressDetector
    for text in texts + noise + ibans:
        starts = [m.start() - 2 for m in iban._check_digits.finditer(text)]
        assert spans(finditer_at(iban._re, text, starts)) == spans(iban._re.finditer(text))
        assert spans(finditer_at(v6._v6, text, v6._v6_starts(text))) == spans(
            v6._v6.finditer(text)
        ), text


def test_the_birth_word_gate_answers_as_the_birth_expression():
    rnd = random.Random(4)
    words = ["born", "reborn", "Born", "DOB", "d.o.b", "b-day", "bday", "née", "ne", "one",
             "nato", "donato", "f. nac", "d. n.", "ur.", "your.", "geb.", "Geburt", "x", "_ne",
             "1ne", "d. t.", "abd.o.b", "birthday", "nacido", "naissance"]  # fmt: skip
    texts = CASES + ["".join(rnd.choice(words) + rnd.choice(" .-_") for _ in range(4))
                     for _ in range(3000)]  # fmt: skip
    hits = 0
    for text in filter(str.isascii, texts):
        want = pii_numbers._BIRTH.search(text) is not None
        assert (pii_numbers._BIRTH_LOWER.search(text.lower()) is not None) == want, text
        hits += want
    assert 0 < hits < len(texts)


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
