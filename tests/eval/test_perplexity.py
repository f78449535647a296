"""Sliding-window perplexity equals the same computation written with transformers."""

from __future__ import annotations

import math

import pytest

from opengemma.eval import EvalError
from opengemma.eval.perplexity import perplexity_of_text, read_text, windows

TEXT = (
    "The river bends twice before it reaches the old mill, where the stones are green with moss. "
    "Children race paper boats there in spring; the heron watches and does not move. "
    "Later, in autumn, the water runs faster and darker, carrying leaves to the sea.\n"
) * 2


@pytest.mark.parametrize("context,stride,batch", [(48, 16, 1), (48, 47, 3), (33, 5, 2)])
def test_perplexity_matches_transformers(
    tiny_model, tiny_lm, reference_nll, context, stride, batch
):
    ids = tiny_lm.tokenizer.encode_plain(TEXT)
    assert len(ids) > 4 * context  # many windows, each longer than the sliding window (8)
    res = perplexity_of_text(tiny_lm, TEXT, context=context, stride=stride, batch_size=batch)
    nll, count = reference_nll(tiny_model.reference, ids, tiny_lm.tokenizer.bos_id, context, stride)
    assert res.tokens == count == len(ids)
    assert res.nll == pytest.approx(nll, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_windows_score_every_token_once():
    for n, context, stride in [(1, 8, 3), (7, 8, 7), (100, 10, 4), (100, 10, 9), (57, 512, 256)]:
        scored = []
        for w in windows(n, context, stride):
            assert w.end - w.begin <= context - 1 and w.begin <= w.score_from < w.end
            scored += range(w.score_from, w.end)
        assert scored == list(range(n))


def test_bad_options_and_files(tiny_lm, tmp_path):
    with pytest.raises(EvalError, match="stride"):
        perplexity_of_text(tiny_lm, TEXT, context=16, stride=16)
    with pytest.raises(EvalError, match="exceeds the model's context"):
        perplexity_of_text(tiny_lm, TEXT, context=10_000)
    with pytest.raises(EvalError, match="not a file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EvalError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(EvalError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
