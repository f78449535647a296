"""Detector quality on the hand-written multilingual evaluation set (`pii_eval`), per language.

The targets are asserted on the tuning split and looser floors on the dev and validation
splits (all three may be tuned on). The held-out split, written independently of the detectors
and never tuned on, is checked for size, breadth and well-formed values, and its table is
printed (`pytest -s`): a held-out figure is reported, not a target the detectors are tuned to
meet.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import pytest
from pii_eval import STRUCTURED, language, load, run, table, totals  # tests/data is on sys.path

from opengemma.safety.pii import Scanner


@pytest.fixture(scope="module")
def scanner():
    return Scanner(strict=True)


@pytest.fixture(scope="module")
def tuning(scanner):
    return run("tuning", scanner)


def test_splits_are_separate_and_multilingual():
    splits = {name: load(name) for name in ("tuning", "dev", "validation", "heldout")}
    for a, b in combinations(splits.values(), 2):
        assert not {r.text for r in a} & {r.text for r in b}
    for records in splits.values():
        langs = {language(r.lang) for r in records}
        assert len(langs - {"code"}) >= 10, langs
        kinds = {r.kind for r in records}
        assert {"letter", "chat", "form", "config", "log"} <= kinds, kinds
        assert kinds & {"python", "code"} and kinds & {"env", "config"}, kinds
        assert all(r.text[s:e] for r in records for s, e, _ in r.spans)


def _iban_ok(value: str) -> bool:
    s = value.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _luhn_ok(value: str) -> bool:
    digits = [int(c) for c in re.sub(r"\D", "", value)][::-1]
    doubled = [d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)]
    return sum(doubled) % 10 == 0


def test_heldout_split_is_large_broad_and_well_formed():
    held = load("heldout")
    values = [(r.lang, t, r.text[s:e]) for r in held for s, e, t in r.spans]
    per_type = Counter(t for _, t, _ in values)
    assert len(held) >= 120 and len(values) >= 800, (len(held), len(values))
    assert len({language(r.lang) for r in held} - {"code"}) >= 20
    assert set(per_type) == {*STRUCTURED, "PERSON", "STREET_ADDRESS"}, per_type
    assert all(v == v.strip() and "[[" not in v for _, _, v in values)
    assert all(_iban_ok(v) for _, t, v in values if t == "IBAN")
    assert all(_luhn_ok(v) for _, t, v in values if t == "CREDIT_CARD")


def test_markup_offsets_point_at_the_values():
    (rec,) = [r for r in load("tuning") if r.lang == "en" and r.kind == "form"]
    assert [rec.text[s:e] for s, e, _ in rec.spans][:2] == ["Rebecca Thornton", "March 3, 1971"]
    assert "[[" not in rec.text


def test_tuning_split_meets_the_targets_per_language(tuning):
    _, cells, errs = tuning
    for (type_, lang), c in cells.items():
        wrong = [e for e in errs if e[0] == lang and e[2] == type_]
        if type_ in STRUCTURED:
            assert c.recall >= 0.99 and c.precision >= 0.97, (type_, lang, wrong)
        else:
            assert c.recall >= 0.9 and c.precision >= 0.85, (type_, lang, wrong)


def test_dev_split_floors(scanner):
    _, cells, _ = run("dev", scanner)
    tot = totals(cells)
    for type_ in ("PHONE", "EMAIL", "IBAN", "PERSON", "STREET_ADDRESS"):
        assert tot[type_].tp + tot[type_].fn >= 7, type_
        assert tot[type_].recall >= 0.8 and tot[type_].precision >= 0.8, (type_, tot[type_])


def test_validation_split_floors(scanner):
    _, cells, _ = run("validation", scanner)
    tot = totals(cells)
    for type_, c in tot.items():
        assert c.recall >= 0.9 and c.precision >= 0.8, (type_, c)
    assert tot["PERSON"].recall >= 0.93 and tot["PERSON"].precision >= 0.9, tot["PERSON"]


def test_heldout_split_report(scanner):
    records, cells, errs = run("heldout", scanner)
    print("\nheld-out split\n" + table(cells))
    gold = Counter((t, language(r.lang)) for r in records for _, _, t in r.spans)
    assert {k: c.tp + c.fn for k, c in cells.items() if c.tp + c.fn} == dict(gold)
    assert sum(e[1] == "FN" for e in errs) == sum(c.fn for c in cells.values())
