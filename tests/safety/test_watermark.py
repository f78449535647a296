"""The watermark on its own: configuration and key files, detector calibration without a
watermark, detection power, masks, and the generation helper's checks."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch

from opengemma.errors import InvalidRequestError
from opengemma.safety.watermark import (
    DEFAULT_ALPHA,
    WatermarkConfig,
    WatermarkError,
    WatermarkProcessor,
    detect_ids,
    keygen,
    layer_weights,
    score_mask,
)

CFG = WatermarkConfig(keys=tuple(range(100, 100 + 20 * 7919, 7919)))  # depth 20


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(keys=()), "non-empty list of integers"),
        (dict(keys=(1, "2")), "non-empty list of integers"),
        (dict(keys=(2**63,)), "64-bit"),
        (dict(keys=(1, 2), ngram_len=1), "ngram_len"),
        (dict(keys=(1, 2), sampling_table_size=2**24 + 1), "sampling_table_size"),
        (dict(keys=(1, 2), context_history_size=0), "context_history_size"),
        (dict(keys=(5, 5 + 2**16)), "equal modulo sampling_table_size"),
    ],
)
def test_invalid_configurations_are_rejected(fields, message):
    with pytest.raises(WatermarkError, match=message):
        WatermarkConfig(**fields)


def test_keygen_and_key_file_round_trip(tmp_path):
    cfg = keygen(30, ngram_len=4)
    assert cfg.depth == 30 and len({k % cfg.sampling_table_size for k in cfg.keys}) == 30
    assert keygen(30).keys != cfg.keys  # fresh randomness each time
    path = cfg.save(tmp_path / "keys.json")
    assert WatermarkConfig.load(path) == cfg
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary left behind
    # transformers' configuration dict (with its debug_mode field) is accepted as is
    hf_style = dict(cfg.to_dict(), debug_mode=False)
    assert WatermarkConfig.from_dict(hf_style) == cfg


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON watermark key file"),
        ("[1, 2]", "one JSON object"),
        ('{"ngram_len": 5}', "no 'keys'"),
        ('{"keys": [1], "colour": "red"}', "unknown watermark fields"),
    ],
)
def test_malformed_key_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(WatermarkError, match=message):
        WatermarkConfig.load(path)
    with pytest.raises(WatermarkError, match="cannot read"):
        WatermarkConfig.load(tmp_path / "missing.json")


def test_p_values_are_calibrated_on_text_without_the_watermark():
    # random token sequences carry no watermark: p-values must be ~uniform, so the share below
    # any level is that level (binomial bounds: 400 texts, 4 standard deviations)
    g = torch.Generator().manual_seed(0)
    texts = [torch.randint(0, 262144, (int(n),), generator=g)
             for n in torch.randint(20, 200, (400,), generator=g)]  # fmt: skip
    ds = [detect_ids(t, CFG) for t in texts]
    for level in (0.5, 0.2, 0.05):
        share = sum(d.p_value < level for d in ds) / len(ds)
        assert abs(share - level) < 4 * math.sqrt(level * (1 - level) / len(ds)), (level, share)
        share = sum(d.mean_p_value < level for d in ds) / len(ds)
        assert share < level + 4 * math.sqrt(level * (1 - level) / len(ds)), (level, share)
    assert sum(d.watermarked for d in ds) <= 3  # alpha 1e-3: about 0.4 expected
    assert abs(sum(d.score for d in ds) / len(ds) - 0.5) < 0.01


def _toy_generate(cfg, n_tokens, seed, watermark):
    """Sample from a toy language model (random logits, top-k 40) with or without the
    watermark; returns the generated ids."""
    g = torch.Generator().manual_seed(seed)
    proc = WatermarkProcessor(cfg) if watermark else None
    tokens = torch.tensor([2, 17, 33])
    for _ in range(n_tokens):
        logits = torch.randn(5000, generator=g) * 2
        logits = logits.masked_fill(logits < torch.topk(logits, 40).values[-1], -float("inf"))
        if proc is not None:
            logits = proc(tokens, logits)
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)
        tokens = torch.cat([tokens, nxt])
    return tokens[3:]


def test_detects_watermarked_samples_and_not_plain_ones():
    wm = [detect_ids(_toy_generate(CFG, 120, s, True), CFG) for s in range(12)]
    plain = [detect_ids(_toy_generate(CFG, 120, s, False), CFG) for s in range(12)]
    assert all(d.watermarked and d.p_value < 1e-8 for d in wm), [d.p_value for d in wm]
    assert not any(d.watermarked for d in plain)
    assert min(d.score for d in wm) > max(d.score for d in plain)
    # the weighted mean favours the first layers, where the tournament leaves the most signal
    assert sum(d.score for d in wm) > sum(d.mean for d in wm)


def test_weights_fall_linearly_and_sum_to_depth():
    w = layer_weights(10)
    assert float(w.sum()) == pytest.approx(10)
    assert float(w[0] / w[-1]) == pytest.approx(10)
    assert float(layer_weights(1)[0]) == pytest.approx(1)


def test_masks_drop_repeated_contexts_and_everything_from_eos_on():
    cfg = WatermarkConfig(keys=(1, 2, 3), ngram_len=3, context_history_size=4)
    ids = [10, 11, 12, 10, 11, 13, 20, 21, 22, 23, 24, 10, 11, 14]
    mask = score_mask(ids, cfg).tolist()
    # n-gram i has context ids[i:i+2]; (10, 11) recurs at i=3 (seen 3 n-grams earlier: masked)
    # and at i=11 (8 n-grams later: beyond the history of 4, so scored again)
    assert mask == [True, True, True, False, True, True, True, True, True, True, True, True]
    with_eos = score_mask(ids, cfg, eos_id=21).tolist()
    assert with_eos == mask[:5] + [False] * 7  # n-grams ending at or after the first EOS


def test_too_short_text_scores_nothing():
    d = detect_ids([5, 6, 7], CFG)
    assert d.num_scored == 0 and d.p_value == 1.0 and not d.watermarked
    assert math.isnan(d.score)
    with pytest.raises(WatermarkError, match="alpha"):
        detect_ids([5, 6, 7, 8, 9, 10], CFG, alpha=0)
    assert DEFAULT_ALPHA == 1e-3
    assert json.loads(json.dumps(d.to_dict(), allow_nan=True))["num_scored"] == 0


def test_generation_helper_needs_sampling(tiny_lm):
    from opengemma.safety.watermark import generate, stream

    with pytest.raises(InvalidRequestError, match="temperature > 0"):
        stream(tiny_lm, "Hello", CFG, 4)
    # temperature 2: the tiny random model's distribution is nearly one-hot at 1, where the
    # watermark's reweighting rarely changes a draw
    text = generate(tiny_lm, "Hello", CFG, 6, temperature=2.0, top_k=40, seed=1)
    again = generate(tiny_lm, "Hello", CFG, 6, temperature=2.0, top_k=40, seed=1)
    plain = tiny_lm.generate("Hello", 6, temperature=2.0, top_k=40, seed=1)
    assert text == again and isinstance(text, str)
    assert text != plain


def test_binomial_tail_is_exact():
    from fractions import Fraction

    from opengemma.safety.watermark import _binomial_sf

    for k, n, q in [(5, 10, Fraction(1, 2)), (60, 100, Fraction(49, 100)), (3, 3, Fraction(3, 10)),
                    (290, 480, Fraction(1, 2))]:  # fmt: skip
        exact = sum(Fraction(math.comb(n, i)) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1))
        assert _binomial_sf(k, n, float(q)) == pytest.approx(float(exact), rel=1e-9)
    assert _binomial_sf(0, 5, 0.5) == 1.0 and _binomial_sf(6, 5, 0.5) == 0.0


def test_lm_generate_with_watermark_is_detected(lm):
    """lm.generate(..., watermark=cfg) embeds a watermark the detector finds; plain text not."""
    from opengemma.errors import InvalidRequestError
    from opengemma.safety.watermark import detect, keygen

    cfg = keygen(depth=20)
    prompt = "Write a short story about a lighthouse keeper."
    kw = dict(max_tokens=60, temperature=1.0, top_k=40, seed=5)
    marked = lm.generate(prompt, watermark=cfg, **kw)
    plain = lm.generate(prompt, **kw)
    assert detect(marked, cfg, lm.tokenizer).p_value < detect(plain, cfg, lm.tokenizer).p_value
    assert detect(marked, cfg, lm.tokenizer).p_value < 1e-3
    with pytest.raises(InvalidRequestError, match="sampling"):
        lm.generate(prompt, watermark=cfg, max_tokens=4)
