"""The watermark against transformers' SynthIDTextWatermarkLogitsProcessor: same table, same
g-values, same masks, same reweighted distributions step by step, and detection both ways."""

from __future__ import annotations

import pytest
import torch

from opengemma.safety.watermark import (
    WatermarkConfig,
    WatermarkProcessor,
    detect,
    detect_ids,
    g_values,
    sampling_table,
    score_g_values,
    score_mask,
)
from opengemma.sampling import Sampler, SamplingParams

KEYS = (654, 400, 836, 123, 340, 443, 597, 160, 57, 29, 590, 639, 13, 715, 468, 990)  # as conftest
CONFIGS = [
    WatermarkConfig(keys=KEYS),
    WatermarkConfig(
        keys=KEYS[:5],
        ngram_len=3,
        context_history_size=8,
        sampling_table_seed=11,
        sampling_table_size=1000,
    ),  # fmt: skip
    WatermarkConfig(keys=(2**62 + 5, -(2**61) - 3, 7), ngram_len=4, skip_first_ngram_calls=True),
]


def _ids_with_repeats(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 262144, (n,), generator=g)
    ids[40:52] = ids[10:22]  # repeated contexts 30 positions apart
    ids[60:64] = ids[57:61].clone()  # and 3 apart
    return ids


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "small-table", "big-keys-skip"])
def test_table_g_values_and_masks_equal_transformers(cfg, hf_synthid):
    hf = hf_synthid(cfg).hf
    assert torch.equal(sampling_table(cfg.sampling_table_seed, cfg.sampling_table_size),
                       hf.sampling_table)  # fmt: skip
    ids = _ids_with_repeats(120, seed=cfg.ngram_len)
    assert torch.equal(g_values(ids, cfg), hf.compute_g_values(ids[None])[0])
    rep = hf.compute_context_repetition_mask(ids[None])[0].bool()
    assert torch.equal(score_mask(ids, cfg), rep)
    assert (~rep).any(), "the sequence must contain repeated contexts"
    eos = int(ids[90])
    hf_eos = hf.compute_eos_token_mask(ids[None], eos)[0, cfg.ngram_len - 1 :].bool()
    assert torch.equal(score_mask(ids, cfg, eos_id=eos), rep & hf_eos)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "small-table", "big-keys-skip"])
def test_processor_outputs_equal_transformers_step_by_step(cfg, hf_synthid):
    theirs, ours = hf_synthid(cfg), WatermarkProcessor(cfg)
    g = torch.Generator().manual_seed(1)
    vocab = 2000
    tokens = torch.randint(0, vocab, (9,), generator=g)
    changed = unchanged = 0
    for step in range(40):
        logits = torch.randn(vocab, generator=g) * 3
        if step % 2:  # top-k truncated, as the sampler hands it over
            logits = logits.masked_fill(logits < torch.topk(logits, 40).values[-1], -float("inf"))
        a, b = theirs(tokens, logits.clone()), ours(tokens, logits.clone())
        pa, pb = torch.softmax(a, -1), torch.softmax(b, -1)
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-4), step
        assert torch.equal(pa > 0, pb > 0)
        same = torch.equal(b, logits)
        changed, unchanged = changed + (not same), unchanged + same
        if 20 <= step < 30:  # repeat a context: the processors must both leave it alone
            nxt = int(tokens[-(cfg.ngram_len - 1)])
        else:
            nxt = int(torch.multinomial(pb, 1, generator=g))
        tokens = torch.cat([tokens, torch.tensor([nxt])])
    assert changed > 20 and unchanged > 0


def test_processor_rejects_a_different_sequence():
    from opengemma.safety.watermark import WatermarkError

    proc = WatermarkProcessor(CONFIGS[0])
    proc(torch.arange(5), torch.zeros(100))
    with pytest.raises(WatermarkError, match="new processor for each sequence"):
        proc(torch.arange(9), torch.zeros(100))


@pytest.mark.slow
def test_cross_detection_with_transformers_on_the_embedded_model(lm, hf_synthid,
                                                                 embedded_watermarked):  # fmt: skip
    from opengemma.generate import generate_step

    cfg, prompt, by_us = (embedded_watermarked[k] for k in ("cfg", "prompt_ids", "ids"))
    # transformers' processor drives sampling: the same seed gives the same tokens as ours
    params = SamplingParams(temperature=1.0, top_k=40, seed=5)
    sampler = Sampler(params, extra=[hf_synthid(cfg)], prompt_len=len(prompt))
    by_hf = list(generate_step(lm.model, prompt, sampler, len(by_us)))
    assert by_hf == by_us
    # ours detects transformers' watermark, from the decoded text
    d = detect(lm.tokenizer.decode(by_hf), cfg, lm.tokenizer)
    assert d.watermarked and d.p_value < 1e-4, d
    other_keys = WatermarkConfig(keys=tuple(k + 1 for k in cfg.keys))
    assert not detect_ids(by_hf, other_keys).watermarked
    # transformers' own g-values and masks of our text give our scores and verdict
    hf = hf_synthid(cfg).hf
    ids = torch.tensor(by_us)
    g_hf = hf.compute_g_values(ids[None])[0]
    mask_hf = hf.compute_context_repetition_mask(ids[None])[0].bool()
    from_hf = score_g_values(g_hf, mask_hf, cfg)
    assert from_hf == detect_ids(ids, cfg)
    assert from_hf.watermarked and g_hf[mask_hf].float().mean() > 0.55
