"""Cached decoding equals a full forward, past the sliding window, for every cache path."""

from __future__ import annotations

import pytest
import torch

from opengemma.generate import prefill
from opengemma.kv_cache import attention_mask
from tests.tiny import build_reference, family_config, ours_from_dir, random_ids, save_reference


@pytest.fixture(scope="module", params=["gemma2", "gemma3"])
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    save_reference(build_reference(family_config(request.param)), path)
    return ours_from_dir(path)


@pytest.mark.parametrize("prefill_len,chunk", [(1, 512), (5, 512), (20, 512), (20, 3), (13, 8)])
def test_decode_matches_full_forward(tiny, prefill_len, chunk):
    ids = random_ids(48)  # window is 8: decoding runs far past it
    with torch.no_grad():
        full = tiny(ids)[0]  # (T, vocab)
        cache = tiny.new_cache(48)
        last = prefill(tiny, ids[0, :prefill_len].tolist(), cache, chunk=chunk)
        torch.testing.assert_close(last, full[prefill_len - 1], atol=1e-4, rtol=0)
        for t in range(prefill_len, 48):
            step = tiny(ids[:, t : t + 1], cache, last_only=True)[0, -1]
            torch.testing.assert_close(step, full[t], atol=1e-4, rtol=0)


def test_sliding_cache_keeps_only_the_window(tiny):
    cache = tiny.new_cache(48)
    kinds = [type(c).__name__ for c in cache.layers]
    assert "SlidingLayerCache" in kinds and "FullLayerCache" in kinds
    sliding = next(c for c in cache.layers if type(c).__name__ == "SlidingLayerCache")
    assert sliding.k.shape[2] == 8


def test_cache_overflow_is_a_clear_error(tiny):
    from opengemma.errors import InvalidRequestError

    cache = tiny.new_cache(10)
    with torch.no_grad(), pytest.raises(InvalidRequestError, match="do not fit"):
        tiny(random_ids(11), cache)


def test_attention_mask_semantics():
    q = torch.tensor([9])
    k = torch.arange(12)
    assert attention_mask(q, k, None).tolist() == [[True] * 10 + [False] * 2]
    # a window of 4 keeps the query itself and the three before it
    assert attention_mask(q, k, 4)[0].nonzero().flatten().tolist() == [6, 7, 8, 9]
    assert not attention_mask(q, torch.tensor([-1]), None).any()  # empty slot


@pytest.mark.slow
def test_embedded_model_decode_past_window(lm):
    """The real model (window 512): chunked prefill of 530 tokens, then cached decode."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200_000, (1, 540), generator=g)
    ids[0, 0] = 2
    model = lm.model
    with torch.no_grad():
        full = model(ids)[0]
        cache = model.new_cache(540)
        last = prefill(model, ids[0, :530].tolist(), cache, chunk=256)
        torch.testing.assert_close(last, full[529], atol=2e-3, rtol=0)
        for t in range(530, 540):
            step = model(ids[:, t : t + 1], cache, last_only=True)[0, -1]
            torch.testing.assert_close(step, full[t], atol=2e-3, rtol=0)


def test_batched_decode_matches_single_sequences(tiny):
    """Rows at different positions (one past the window) decode as they would alone."""
    lengths = [3, 11, 17]
    seqs = [random_ids(n + 6, seed=n)[0] for n in lengths]
    with torch.no_grad():
        caches = [tiny.new_cache(32) for _ in seqs]
        for s, c, n in zip(seqs, caches, lengths, strict=True):
            prefill(tiny, s[:n].tolist(), c)
        for step in range(6):
            tokens = torch.stack([s[n + step] for s, n in zip(seqs, lengths, strict=True)])
            batched = tiny(tokens[:, None], caches, last_only=True)[:, -1]
            for b, (s, n) in enumerate(zip(seqs, lengths, strict=True)):
                alone = tiny(s[None, : n + step + 1])[0, -1]
                torch.testing.assert_close(batched[b], alone, atol=1e-4, rtol=0)
        assert [c.length for c in caches] == [n + 6 for n in lengths]
