"""The native decode step (kernels/decode.c) against the PyTorch path on the same int8 block
weights: every Gemma generation, sliding rings and full caches, softcaps, batched rows."""

from __future__ import annotations

import pytest
import torch

from opengemma.native_decode import NativeDecoder
from opengemma.quantized_layers import quantize_model
from tests.native import built_kernels
from tests.tiny import build_reference, family_config, ours_from_dir, random_ids, save_reference

CASES = {
    "gemma-mqa": ("gemma", {}),
    "gemma2-gqa": ("gemma2", {}),
    "gemma3-gqa": ("gemma3", {}),
    "gemma3-mqa": ("gemma3", {"num_key_value_heads": 1, "query_pre_attn_scalar": 16}),
}


def quantized(case, tmp_path, **build):
    family, overrides = CASES[case]
    save_reference(build_reference(family_config(family, **overrides), **build), tmp_path)
    model = quantize_model(ours_from_dir(tmp_path))
    built_kernels()  # without them create() gives None and nothing native would be tested
    decoder = NativeDecoder.create(model)
    assert decoder is not None
    return model, decoder


def decode_both(model, decoder, prompt, steps, max_len):
    """Greedy-decode with the PyTorch path and the native path from the same prefill; both
    are fed the PyTorch path's tokens, so the logits are compared on identical inputs."""
    torch_cache, native_cache = model.new_cache(max_len), model.new_cache(max_len)
    with torch.no_grad():
        model.native_decoder = None
        model(prompt, torch_cache)
        model(prompt, native_cache)
        token = prompt[:, -1:]
        pairs = []
        for _ in range(steps):
            model.native_decoder = None
            want = model(token, torch_cache, last_only=True)
            model.native_decoder = decoder
            got = model(token, native_cache, last_only=True)
            pairs.append((got, want))
            token = want[:, -1].argmax(-1, keepdim=True)
    assert native_cache.length == torch_cache.length
    for ours, theirs in zip(native_cache.layers, torch_cache.layers, strict=True):
        if hasattr(theirs, "pos"):  # a sliding ring: the same position in every slot
            assert torch.equal(ours.pos, theirs.pos)
    return pairs


@pytest.mark.parametrize("case", list(CASES))
def test_native_step_equals_pytorch_step(case, tmp_path):
    model, decoder = quantized(case, tmp_path)
    # 12 prompt + 30 steps: past the sliding window of 8 (ring caches wrap several times)
    pairs = decode_both(model, decoder, random_ids(12), steps=30, max_len=64)
    scale = max(float(want.abs().max()) for _, want in pairs)
    assert scale > 1.0  # logits of a magnitude where bugs show
    for got, want in pairs:
        assert got.shape == want.shape == (1, 1, 512)
        # float32 rounding, and the rare activation that rounds to the other int8 level (its
        # key and value then stay in the cache: up to ~0.5% of the logits' range here)
        torch.testing.assert_close(got, want, atol=1e-2 * scale, rtol=0)
        assert got.argmax() == want.argmax()


@pytest.mark.parametrize("case", ["gemma2-gqa", "gemma3-gqa"])
def test_batched_rows_at_their_own_positions(case, tmp_path):
    """Three sequences in one native step, each in its own cache at its own position (one
    before the sliding window fills, two past it), against the PyTorch batched step."""
    model, decoder = quantized(case, tmp_path)
    prompts = [random_ids(n, seed=n) for n in (3, 11, 20)]
    native_caches = [model.new_cache(48) for _ in prompts]
    torch_caches = [model.new_cache(48) for _ in prompts]
    with torch.no_grad():
        model.native_decoder = None
        for p, a, b in zip(prompts, native_caches, torch_caches, strict=True):
            model(p, a)
            model(p, b)
        tokens = torch.cat([p[:, -1:] for p in prompts])  # (3, 1)
        for _ in range(12):
            model.native_decoder = None
            want = model(tokens, torch_caches, last_only=True)
            model.native_decoder = decoder
            got = model(tokens, native_caches, last_only=True)
            scale = float(want.abs().max())  # tolerance: as in the single-sequence test
            torch.testing.assert_close(got, want, atol=1e-2 * scale, rtol=0)
            assert torch.equal(got.argmax(-1), want.argmax(-1))
            tokens = want[:, -1].argmax(-1, keepdim=True)
    assert [c.length for c in native_caches] == [15, 23, 32]


def test_unsupported_caches_take_the_pytorch_path(tmp_path):
    """A cache holding several sequences (one position for all) is not the native step's:
    it declines, and the model computes the step in PyTorch."""
    model, decoder = quantized("gemma3-gqa", tmp_path)
    cache = model.new_cache(32, batch=2)
    ids = random_ids(6).repeat(2, 1)
    with torch.no_grad():
        model(ids, cache)
        assert decoder.step(ids[:, -1:], [cache]) is None
        out = model(ids[:, -1:], cache)
    assert out.shape == (2, 1, 512) and cache.length == 7
