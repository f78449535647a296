"""Sampling processors, the generation layers, stop handling and request validation."""

from __future__ import annotations

import pytest
import torch

from opengemma.errors import InvalidRequestError
from opengemma.generate import held_back
from opengemma.sampling import (
    Sampler,
    SamplingParams,
    min_p,
    presence_frequency_penalty,
    repetition_penalty,
    top_k,
    top_p,
)

NO_TOKENS = torch.tensor([], dtype=torch.long)


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0, 5.0])
    assert kept(top_k(2)(NO_TOKENS, logits)) == [1, 4]
    assert kept(top_k(10)(NO_TOKENS, logits)) == [0, 1, 2, 3, 4]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    assert kept(top_p(0.5)(NO_TOKENS, logits)) == [0]
    assert kept(top_p(0.75)(NO_TOKENS, logits)) == [0, 1]
    assert kept(top_p(0.81)(NO_TOKENS, logits)) == [0, 1, 2]
    assert kept(top_p(1.0)(NO_TOKENS, logits)) == [0, 1, 2, 3]
    assert kept(top_p(5e-324)(NO_TOKENS, logits)) == [0]


def _nucleus_by_sorting(logits: torch.Tensor, p: float) -> list[int]:
    probs = torch.softmax(logits, -1)
    ordered, order = torch.sort(probs, descending=True)
    before = ordered.cumsum(0) - ordered
    return sorted(order[(before < p) | (torch.arange(len(order)) == 0)].tolist())


@pytest.mark.parametrize("spread", [6.0, 0.05])  # peaked: 2-257 kept; flat: 100k+
def test_top_p_over_a_full_vocabulary_equals_sorting(spread):
    """262k logits: the nucleus found among the top candidates, or by the full sort when the
    candidates do not reach p, is the set a full sort gives."""
    logits = torch.randn(262_144, generator=torch.Generator().manual_seed(0)) * spread
    for p in (0.5, 0.9, 0.99):
        got = kept(top_p(p)(NO_TOKENS, logits))
        assert got == _nucleus_by_sorting(logits, p)
        assert (len(got) > 1024) == (spread < 1)  # both branches are exercised
        survivors = top_p(p)(NO_TOKENS, logits)
        assert torch.equal(survivors[got], logits[got])


def test_min_p_is_relative_to_the_top_token():
    logits = torch.tensor([0.6, 0.25, 0.1, 0.05]).log()
    assert kept(min_p(0.2)(NO_TOKENS, logits)) == [0, 1]


def test_repetition_penalty_shrinks_seen_logits_toward_zero():
    logits = torch.tensor([2.0, -2.0, 2.0])
    out = repetition_penalty(2.0)(torch.tensor([0, 1, 1]), logits)
    assert out.tolist() == [1.0, -4.0, 2.0]


def test_presence_and_frequency_count_only_generated_tokens():
    logits = torch.zeros(4)
    tokens = torch.tensor([3, 3, 1, 1, 2])  # prompt = first two
    out = presence_frequency_penalty(0.5, 0.25, prompt_len=2)(tokens, logits)
    assert out.tolist() == [0.0, -(0.5 + 0.5), -(0.5 + 0.25), 0.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"min_p": 1}, {"top_k": -2},
     {"repetition_penalty": 0}, {"presence_penalty": 3}],
)  # fmt: skip
def test_bad_sampling_params(kwargs):
    with pytest.raises(InvalidRequestError):
        SamplingParams(**kwargs)


def test_seeded_sampler_is_reproducible():
    logits = torch.randn(1000)
    a = Sampler(SamplingParams(temperature=1.0, seed=7))
    b = Sampler(SamplingParams(temperature=1.0, seed=7))
    assert [a(NO_TOKENS, logits) for _ in range(20)] == [b(NO_TOKENS, logits) for _ in range(20)]
    c = Sampler(SamplingParams(temperature=1.0, seed=8))
    assert [a(NO_TOKENS, logits) for _ in range(20)] != [c(NO_TOKENS, logits) for _ in range(20)]


def test_held_back_tail():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0
    assert held_back("ab", ["abc", "b"]) == 2


# ------------------------------------------------------------------ on the embedded model

PROMPT = "The three primary colors are"


def test_stream_matches_generate_one_chunk_per_token(lm):
    chunks = list(lm.stream(PROMPT, max_tokens=12))
    assert len(chunks) == 12
    assert chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])
    text = "".join(chunks)
    assert text == lm.generate(PROMPT, max_tokens=12)
    assert text == lm.tokenizer.decode([c.token for c in chunks])
    assert "red" in text and "blue" in text


def test_seed_makes_sampling_reproducible(lm):
    kw = dict(max_tokens=16, temperature=1.0, top_k=40, seed=1234)
    assert lm.generate(PROMPT, **kw) == lm.generate(PROMPT, **kw)
    samples = {lm.generate(PROMPT, **dict(kw, seed=s)) for s in range(4)}
    assert len(samples) > 1


def test_stop_string_is_cut_and_never_streamed(lm):
    full = lm.generate(PROMPT, max_tokens=12)
    stop = full[full.index("blue") - 2 : full.index("blue") + 4]  # e.g. ", blue"
    chunks = list(lm.stream(PROMPT, max_tokens=12, stop=[stop]))
    text = "".join(chunks)
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"


def test_stop_token_ends_generation(lm):
    first = next(iter(lm.stream(PROMPT, max_tokens=1))).token
    from opengemma.generate import stream_generate

    sampler = Sampler(SamplingParams())
    ids = lm.tokenizer.encode(PROMPT)
    chunks = list(stream_generate(lm.model, lm.tokenizer, ids, sampler, 10, stop_ids={first}))
    assert len(chunks) == 1 and chunks[0].finish_reason == "stop" and chunks[0] == ""


def test_request_validation(lm):
    with pytest.raises(InvalidRequestError, match="empty"):
        lm.generate("", max_tokens=4)
    with pytest.raises(InvalidRequestError, match="context"):
        next(iter(lm.stream_ids([2] * lm.config.max_position_embeddings, max_tokens=4)))
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        lm.generate(PROMPT, max_tokens=0)


def test_max_tokens_is_clipped_to_the_context(lm):
    from opengemma.generate import check_lengths

    context = lm.config.max_position_embeddings
    assert check_lengths(lm.model, context - 3, 100) == 3


def test_sampling_draws_from_the_softmax():
    """Inverse-transform draws: frequencies follow the softmax, masked tokens never come, and
    a seed repeats the draws."""
    logits = torch.tensor([0.0, 1.0, 2.0, float("-inf"), 0.5, float("-inf")])
    sampler = Sampler(SamplingParams(temperature=1.0, seed=3))
    draws = [sampler(NO_TOKENS, logits) for _ in range(20_000)]
    counts = torch.bincount(torch.tensor(draws), minlength=6).double()
    assert counts[3] == counts[5] == 0
    expected = torch.softmax(logits.double(), -1) * len(draws)
    finite = expected > 0
    chi2 = float((((counts - expected) ** 2)[finite] / expected[finite]).sum())
    assert chi2 < 20  # 3 degrees of freedom: p < 2e-4 for a correct sampler
    again = Sampler(SamplingParams(temperature=1.0, seed=3))
    assert [again(NO_TOKENS, logits) for _ in range(200)] == draws[:200]
    only = torch.full((262_144,), float("-inf"))
    only[262_143] = 0.0  # the last id: the top of the cumulative distribution
    assert sampler(NO_TOKENS, only) == 262_143
