"""Prompt-lookup speculative decoding: a verified chunk holds the same bits as single steps, and
generation with speculation gives exactly the tokens of plain decoding (greedy, sampled, with a
repetition penalty), across sliding-window rings that wrap and drafts that are rejected."""

from __future__ import annotations

import pytest
import torch

from opengemma.errors import InvalidRequestError
from opengemma.generate import generate_step
from opengemma.kv_cache import SlidingLayerCache
from opengemma.native_decode import NativeDecoder
from opengemma.quantized_layers import quantize_model
from opengemma.sampling import Sampler, SamplingParams
from opengemma.speculative import (
    NgramDrafter,
    SpeculationStats,
    ngram_generate_step,
    rewind,
    speculative_steps,
    widen_rings,
)
from tests.tiny import build_reference, family_config, ours_from_dir, random_ids, save_reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A Gemma 3 shape with a sliding window of 8 (rings wrap every few tokens), int8 blocks."""
    path = tmp_path_factory.mktemp("gemma3")
    save_reference(build_reference(family_config("gemma3")), path)
    floats = ours_from_dir(path)
    model = quantize_model(ours_from_dir(path))
    model.native_decoder = NativeDecoder.create(model)
    assert model.native_decoder is not None
    return model, floats


def _repetitive_prompt(n_blocks: int = 4) -> list[int]:
    block = random_ids(9, seed=3)[0, 1:].tolist()
    return [2, *(block * n_blocks)]


def test_a_chunk_of_tokens_holds_the_bits_of_single_steps(tiny):
    model, _ = tiny
    decoder = model.native_decoder
    prompt = random_ids(12)
    single, chunked = model.new_cache(80), model.new_cache(80)
    with torch.no_grad():
        model(prompt, single)
        model(prompt, chunked)
        widen_rings(chunked, 8)
        ids = random_ids(40, seed=5)[0]
        start = 0
        for size in (1, 3, 9, 2, 5, 9, 4, 7):  # past the window of 8 several times
            part = ids[start : start + size]
            rows = decoder.step_chunk(part, chunked)
            for t, token in enumerate(part):
                want = model(token.view(1, 1), single, last_only=True)[0, -1]
                assert torch.equal(rows[t], want), (start, t)
            start += size
    assert chunked.length == single.length


def test_a_ring_too_small_for_the_chunk_is_refused(tiny):
    model, _ = tiny
    cache = model.new_cache(64)
    with torch.no_grad():
        model(random_ids(12), cache)
        with pytest.raises(ValueError, match="ring of 8 slots cannot verify 3 tokens"):
            model.native_decoder.step_chunk(torch.tensor([5, 6, 7]), cache)


def test_rewind_empties_only_the_dropped_positions_of_rings(tiny):
    model, _ = tiny
    cache = model.new_cache(64)
    with torch.no_grad():
        model(random_ids(20), cache)
    widen_rings(cache, 4)
    rings = [lc for lc in cache.layers if isinstance(lc, SlidingLayerCache)]
    assert rings and all(lc.k.shape[2] == 12 for lc in rings)
    held = rings[0].pos.clone()
    rewind(cache, 3)
    assert cache.length == 17
    assert torch.equal(rings[0].pos, torch.where(held >= 17, -1, held))


SAMPLINGS = {
    "greedy": {"temperature": 0.0},
    "sampled": {"temperature": 1.0, "seed": 7},
    "penalized": {"temperature": 0.0, "repetition_penalty": 1.3},
    "top-k": {"temperature": 0.7, "top_k": 5, "seed": 1},
}


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
def test_speculation_gives_exactly_the_tokens_of_plain_decoding(tiny, sampling):
    model, _ = tiny
    prompt = _repetitive_prompt()
    params = SamplingParams(**SAMPLINGS[sampling])
    with torch.no_grad():
        plain = list(generate_step(model, prompt, Sampler(params), 60))
        stats = SpeculationStats()
        spec = list(ngram_generate_step(model, prompt, Sampler(params), 60, stats, max_draft=4))
    assert spec == plain
    assert stats.reason is None and stats.generated == 60 and stats.drafted > 0
    assert stats.steps < 60 or stats.accepted < stats.drafted  # it drafted, and the draft ran


def test_drafts_from_the_latest_earlier_occurrence_of_the_suffix():
    drafter = NgramDrafter([1, 2, 3, 9, 1, 2, 3], max_ngram=3, min_ngram=3)
    assert drafter.draft(4) == [9, 1, 2, 3]
    drafter.append(7)
    assert drafter.draft(4) == []  # (2, 3, 7) never occurred
    drafter = NgramDrafter([4, 5, 6, 1, 4, 5, 6, 2, 4, 5, 6], max_ngram=3, min_ngram=2)
    assert drafter.draft(2) == [2, 4]  # the latest occurrence wins


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
def test_rejected_drafts_roll_back_exactly(tiny, sampling, monkeypatch):
    """Drafts forced at every step, mostly wrong: each rejection rolls the cache back (rings
    included, wrapping every 8 tokens), and the tokens still equal plain decoding's."""
    model, _ = tiny
    prompt = random_ids(10, seed=9)[0].tolist()
    params = SamplingParams(**SAMPLINGS[sampling])
    with torch.no_grad():
        plain = list(generate_step(model, prompt, Sampler(params), 50))
    calls = iter(range(10**6))

    def draft(self, limit):  # wrong guesses, and every third time the right next token first
        i, done = next(calls), len(self.history) - len(prompt)
        right = [plain[done]] if i % 3 == 0 and done < len(plain) else []
        return (right + [(7 * i) % 500 + 3] * 3)[:limit]

    monkeypatch.setattr(NgramDrafter, "draft", draft)
    stats = SpeculationStats()
    with torch.no_grad():
        spec = list(ngram_generate_step(model, prompt, Sampler(params), 50, stats))
    assert spec == plain
    assert 0 < stats.accepted < stats.drafted


def test_without_the_native_step_generation_is_plain_and_says_why(tiny):
    _, floats = tiny
    prompt = _repetitive_prompt()
    with torch.no_grad():
        plain = list(generate_step(floats, prompt, Sampler(SamplingParams()), 20))
        stats = SpeculationStats()
        spec = list(ngram_generate_step(floats, prompt, Sampler(SamplingParams()), 20, stats))
    assert spec == plain and "native int8 decode step" in stats.reason and stats.drafted == 0


def test_unknown_methods_are_refused():
    with pytest.raises(InvalidRequestError, match="unknown speculative method 'tree'"):
        speculative_steps("tree")


def test_lm_generate_and_run_speculative_on_the_embedded_model(capsys):
    import opengemma
    from opengemma.cli import main

    lm = opengemma.load(threads=1)
    prompt = ("The lamp still turned every evening at dusk, and the children said a ghost "
              "climbed the stairs. The lamp still turned every evening")  # fmt: skip
    plain = lm.generate(prompt, 40)
    fast = lm.generate(prompt, 40, speculative="ngram")
    assert fast == plain
    assert lm.last_speculation.accepted > 10 and lm.last_speculation.reason is None
    assert main(["run", "-n", "40", "--threads", "1", "--speculative", "ngram", prompt]) == 0
    out = capsys.readouterr()
    assert out.out == plain + "\n" and "[speculative ngram: " in out.err
