"""Automatic prefix caching: a multi-turn chat replayed turn by turn gives the same greedy
output with the cache on and off, past the sliding window (512 on the embedded Gemma 3 270M),
on the float32 reference and on the default int8 weights."""

from __future__ import annotations

import pytest
import torch

import opengemma
from opengemma.chat import chat_prompt_ids
from opengemma.engine import Engine, GenerationRequest
from opengemma.prefix_cache import PrefixCache

SYSTEM = (
    "You are a careful assistant for a small bakery. The bakery sells sourdough, rye, baguettes, "
    "croissants, cinnamon rolls and seasonal pies. It opens at seven and closes at six, except "
    "on Sundays, when it closes at two. Prices: sourdough 6 euros, rye 5, baguette 2, "
    "croissant 1.80, cinnamon roll 2.50, pie 18. Orders above 50 euros are delivered free. "
) * 5
QUESTIONS = [
    "What time do you close on Sunday?",
    "How much are two baguettes and a pie?",
    "Do you deliver an order of three pies?",
    "Which breads do you sell?",
    "Is there anything with cinnamon?",
]


def replay(lm, prefix_bytes: int, turns: int) -> tuple[list[str], list[int], int]:
    """Each turn's greedy answer, its prompt length and the tokens served from the cache."""
    engine = Engine(lm.model, lm.tokenizer, max_batch=2, prefix_cache_bytes=prefix_bytes)
    engine.start()
    messages = [{"role": "system", "content": SYSTEM}]
    answers, lengths, cached = [], [], 0
    try:
        for question in QUESTIONS[:turns]:
            messages.append({"role": "user", "content": question})
            ids = chat_prompt_ids(lm.tokenizer, messages)
            request = GenerationRequest(ids, max_tokens=16)
            handle_events = list(engine.generate(request))
            answer = "".join(e.text for e in handle_events)
            answers.append(answer)
            lengths.append(len(ids))
            messages.append({"role": "assistant", "content": answer})
        cached = engine.prefix_cache.hit_tokens
        assert engine.prefix_cache.nbytes <= prefix_bytes
    finally:
        engine.shutdown()
    return answers, lengths, cached


@pytest.mark.parametrize("dtype", ["float32", None])
def test_greedy_chat_same_with_cache_on_and_off(dtype):
    lm = opengemma.load(dtype=dtype)
    off, lengths, _ = replay(lm, 0, 3)
    on, lengths_on, cached = replay(lm, 256 << 20, 3)
    assert lengths == lengths_on
    assert min(lengths[1:]) > lm.config.sliding_window  # the later turns are past the window
    assert on == off
    assert cached > sum(lengths[:-1]) * 0.9  # each later turn reused (almost) the whole history


def test_snapshots_respect_the_window_and_the_byte_bound():
    lm = opengemma.load(dtype="float32")
    window = lm.config.sliding_window
    cache = lm.model.new_cache(window * 2 + 64)
    ids = lm.tokenizer.encode("a b c d e f g " * 200)[: window + 100]
    from opengemma.generate import prefill

    prefill(lm.model, ids, cache)
    pc = PrefixCache(lm.config, 1 << 30)
    pc.store(ids, cache)
    snap = next(iter(pc._snaps.values()))
    full = torch.tensor(ids + [5, 6])
    assert pc.usable(snap, full) == len(ids)  # extends it: all of it
    # a prompt that parts from it 60 tokens back: the ring lacks keys that query needs
    parted = torch.tensor(ids[:-60] + [7] * 70)
    assert pc.usable(snap, parted) == 0
    # a bound below one snapshot stores nothing; LRU eviction keeps the total in bounds
    small = PrefixCache(lm.config, snap.nbytes - 1)
    small.store(ids, cache)
    assert len(small) == 0 and small.nbytes == 0
    two = PrefixCache(lm.config, snap.nbytes + snap.nbytes // 2)
    two.store(ids, cache)
    short = lm.model.new_cache(128)
    prefill(lm.model, ids[:100], short)
    two.store(ids[:100], short)
    assert two.nbytes <= two.max_bytes and len(two) >= 1


def test_server_reports_cached_tokens(int8_server):
    import httpx

    url = f"{int8_server.url}/v1/chat/completions"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[0]}]
    body = {"messages": messages, "max_tokens": 4, "temperature": 0}
    first = httpx.post(url, json=body, timeout=300).json()
    messages += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                 {"role": "user", "content": QUESTIONS[1]}]  # fmt: skip
    second = httpx.post(url, json={**body, "messages": messages}, timeout=300).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] <= cached < second["usage"]["prompt_tokens"]
    assert int8_server.metric("opengemma:prefix_cache_hit_tokens_total") >= cached
    assert int8_server.metric("opengemma:prefix_cache_bytes") > 0
