"""Detector quality on the generated, labelled corpus (`pii_corpus`) against the targets."""

from __future__ import annotations

import pytest
from pii_corpus import CorpusGenerator, errors, score  # noqa: E402  (tests/data is on sys.path)

from opengemma.safety.pii import Scanner  # noqa: E402

STRUCTURED = ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "API_KEY",
              "PRIVATE_KEY", "URL_CREDENTIALS"]  # fmt: skip


@pytest.fixture(scope="module")
def results():
    samples = CorpusGenerator(seed=7).samples(1500)
    found = Scanner(strict=True).scan([s.text for s in samples])
    preds = [[(f.start, f.end, f.type) for f in fs] for fs in found]
    return samples, preds, score(samples, preds)


@pytest.mark.parametrize("type_", STRUCTURED)
def test_structured_types_meet_targets(results, type_):
    samples, preds, scores = results
    s = scores[type_]
    fns, fps = errors(samples, preds, type_)
    assert s.tp >= 20, f"too few {type_} samples to measure"
    assert s.recall >= 0.99, f"{type_} recall {s.recall:.3f}; missed e.g. {fns[:3]}"
    assert s.precision >= 0.97, f"{type_} precision {s.precision:.3f}; wrong e.g. {fps[:3]}"


@pytest.mark.parametrize("type_", ["PERSON", "STREET_ADDRESS"])
def test_entities_meet_recall_target(results, type_):
    s = results[2][type_]
    assert s.recall >= 0.85, f"{type_} recall {s.recall:.3f}"
    assert s.precision >= 0.8, f"{type_} precision {s.precision:.3f}"


def test_date_of_birth_needs_birth_context(results):
    s = results[2]["DATE_OF_BIRTH"]
    assert s.recall >= 0.95 and s.precision >= 0.95


def test_hard_negatives_stay_clean(results):
    samples, preds, _ = results
    flagged = [(s.text, p) for s, p in zip(samples, preds, strict=True)
               if s.kind == "negative" and any(t not in ("PERSON",) for _, _, t in p)]  # fmt: skip
    negatives = sum(s.kind == "negative" for s in samples)
    assert negatives > 100
    assert len(flagged) <= 0.01 * negatives, flagged[:5]
