"""The continuous-batching engine in process, on the default (int8-block) weights."""

from __future__ import annotations

import threading

import pytest

import opengemma
from opengemma.engine import Engine, GenerationRequest

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "def add(a, b):"]


@pytest.fixture(scope="module")
def fast_lm():
    lm = opengemma.load()  # quant="auto": int8 blocks for the quantized GGUF
    assert lm.quant == "q8"
    return lm


def test_concurrent_requests_equal_sequential_ones_on_q8_weights(fast_lm):
    lm = fast_lm
    engine = Engine(lm.model, lm.tokenizer, max_batch=4).start()
    try:
        requests = [GenerationRequest(lm.tokenizer.encode(p), max_tokens=8) for p in PROMPTS]
        results: dict[int, str] = {}

        def run(i: int) -> None:
            results[i] = "".join(e.text for e in engine.generate(requests[i]))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        expected = [lm.generate(p, max_tokens=8) for p in PROMPTS]
        assert [results[i] for i in range(len(PROMPTS))] == expected
    finally:
        engine.close()
        engine.abort_all()


def test_engine_watermarks_sampled_requests(fast_lm):
    import random

    from opengemma.safety.watermark import WatermarkConfig, detect
    from opengemma.sampling import SamplingParams

    # fixed keys: with fresh random ones a repetitive sample sometimes scores too few n-grams
    keys = tuple(random.Random(7).sample(range(1 << 16), 20))  # distinct modulo the table
    lm, cfg = fast_lm, WatermarkConfig(keys=keys)
    engine = Engine(lm.model, lm.tokenizer, max_batch=2).start()
    try:
        ids = lm.tokenizer.encode("Write a short story about a lighthouse keeper.")
        params = SamplingParams(temperature=1.0, top_k=40, seed=11)

        def text(watermark):
            request = GenerationRequest(ids, 120, params, stop_ids=frozenset(), watermark=watermark)
            return "".join(e.text for e in engine.generate(request))

        assert detect(text(cfg), cfg, lm.tokenizer).p_value < 1e-3
        assert detect(text(None), cfg, lm.tokenizer).p_value > 1e-3
    finally:
        engine.close()
        engine.abort_all()
