"""Bidirectional attention (EmbeddingGemma's decoder) against transformers, and padded batches
whose key mask keeps every row equal to that row run alone."""

from __future__ import annotations

import json

import pytest
import torch

from opengemma.config import GemmaConfig
from opengemma.kv_cache import attention_mask
from tests.tiny import build_reference, family_config, ours_from_dir, random_ids, save_reference


@pytest.mark.parametrize("window", [8, 7])
def test_bidirectional_logits_match_transformers(window, tmp_path):
    cfg = family_config("gemma3", use_bidirectional_attention=True, sliding_window=window)
    ref = build_reference(cfg)
    save_reference(ref, tmp_path)
    ours = ours_from_dir(tmp_path)
    assert ours.config.use_bidirectional_attention
    stored = json.loads((tmp_path / "config.json").read_text())["sliding_window"]
    assert ours.config.sliding_window == stored  # the config.json value, as the Hub stores it
    ids = random_ids(40)  # five times the window: sliding layers see only part of the input
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours(ids)
        causal = ours_from_dir(tmp_path)
        for layer in causal.layers:
            layer.self_attn.bidirectional = False
        assert (causal(ids) - expected).abs().max() > 0.1  # the flag changes the answer
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_symmetric_window_mask():
    pos = torch.arange(10)
    mask = attention_mask(pos, pos, 8, bidirectional=True)
    dist = (pos[None, :] - pos[:, None]).abs()
    assert torch.equal(mask, dist <= 4)
    assert attention_mask(pos, pos, None, bidirectional=True).all()


def test_hf_config_flag():
    base = family_config("gemma3").to_dict()
    assert not GemmaConfig.from_hf(base).use_bidirectional_attention
    flagged = family_config("gemma3", use_bidirectional_attention=True).to_dict()
    assert GemmaConfig.from_hf(flagged).use_bidirectional_attention


@pytest.mark.parametrize("bidirectional", [True, False])
def test_key_mask_rows_equal_unpadded(bidirectional, tmp_path):
    cfg = family_config("gemma3", use_bidirectional_attention=bidirectional)
    save_reference(build_reference(cfg), tmp_path)
    ours = ours_from_dir(tmp_path)
    lengths = [30, 11, 19]
    rows = [random_ids(n, seed=i)[0] for i, n in enumerate(lengths)]
    ids = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = r
        valid[b, : len(r)] = True
    with torch.no_grad():
        batched = ours(ids, key_mask=valid, hidden=True)
        for b, r in enumerate(rows):
            alone = ours(r[None], hidden=True)[0]
            torch.testing.assert_close(batched[b, : len(r)], alone, atol=1e-5, rtol=0)
        unmasked = ours(ids, hidden=True)
    if bidirectional:  # without the mask, padding leaks into every position of a short row
        assert (unmasked[1, :11] - batched[1, :11]).abs().max() > 1e-3
