"""Fixtures of the safety tests: a tiny random Gemma 2 model with the real Gemma vocabulary
(ShieldGemma checkpoints are Gemma 2), saved as a Hugging Face directory with a tokenizer.model,
and transformers' SynthID processor wrapped as a plain logits processor."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gemma2_dir(tmp_path_factory, lm) -> Path:
    """config.json + model.safetensors + tokenizer.model (the embedded model's tokenizer);
    vocabulary 262144 so that 'Yes', 'No' and the turn markers are the real ones."""
    from tests.tiny import build_reference, family_config, save_reference

    tok = lm.tokenizer  # the embedded model's (the session loads it for other tests anyway)
    cfg = family_config("gemma2", vocab_size=tok.vocab_size, max_position_embeddings=1024)
    ref = build_reference(cfg, seed=7)
    path = save_reference(ref, tmp_path_factory.mktemp("tiny_gemma2"))
    (path / "tokenizer.model").write_bytes(tok.model_proto.SerializeToString())
    return path


@pytest.fixture(scope="session")
def tiny_lm(tiny_gemma2_dir):
    import opengemma

    return opengemma.load(tiny_gemma2_dir)


@pytest.fixture(scope="session")
def hf_synthid():
    """A factory: WatermarkConfig -> transformers' SynthID processor for it, wrapped as
    `(tokens 1-D, logits 1-D) -> logits` (its own object is the wrapper's `.hf`)."""
    return _hf_processor


def _hf_processor(cfg):
    from transformers.generation.logits_process import SynthIDTextWatermarkLogitsProcessor

    proc = SynthIDTextWatermarkLogitsProcessor(
        ngram_len=cfg.ngram_len,
        keys=list(cfg.keys),
        sampling_table_size=cfg.sampling_table_size,
        sampling_table_seed=cfg.sampling_table_seed,
        context_history_size=cfg.context_history_size,
        device="cpu",
        skip_first_ngram_calls=cfg.skip_first_ngram_calls,
    )

    def process(tokens, logits):
        return proc(tokens[None], logits[None])[0]

    process.hf = proc
    return process


SYNTHID_KEYS = (654, 400, 836, 123, 340, 443, 597, 160, 57, 29, 590, 639, 13, 715, 468, 990)


@pytest.fixture(scope="session")
def embedded_watermarked(lm):
    """48 tokens sampled from the embedded model (temperature 1, top-k 40, seed 5) with
    opengemma's watermark: {"cfg", "prompt_ids", "ids"}."""
    from opengemma.generate import generate_step
    from opengemma.safety.watermark import WatermarkConfig, WatermarkProcessor
    from opengemma.sampling import Sampler, SamplingParams

    cfg = WatermarkConfig(keys=SYNTHID_KEYS)
    prompt = lm.tokenizer.encode("The old lighthouse keeper")
    params = SamplingParams(temperature=1.0, top_k=40, seed=5)
    sampler = Sampler(params, extra=[WatermarkProcessor(cfg)], prompt_len=len(prompt))
    ids = list(generate_step(lm.model, prompt, sampler, 48))
    return {"cfg": cfg, "prompt_ids": prompt, "ids": ids}
