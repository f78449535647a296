"""The embedded Gemma 3 270M GGUF: opengemma against transformers loading the same file.

Both run in float32 on the same dequantized weights; every position of every prompt is
compared (one prompt is three times the 512-token sliding window), then 48 greedy tokens.
"""

from __future__ import annotations

import pytest
import torch

from opengemma.chat import chat_prompt_ids

pytestmark = pytest.mark.slow

_PARAGRAPH = (
    "In {year}, the observatory on Mount {name} recorded {n} meteors in a single night, "
    "a number that surprised the astronomers who had predicted barely half of that. "
)


def long_prompt() -> str:
    names = ["Wilson", "Palomar", "Kenya", "Teide", "Hopkins", "Graham", "Lemmon", "Bigelow"]
    parts = [
        _PARAGRAPH.format(year=1900 + 7 * i, name=names[i % len(names)], n=13 * i + 5)
        for i in range(48)
    ]
    return "".join(parts) + "The observatory that recorded the most meteors was"


def prompts(tokenizer) -> dict[str, list[int]]:
    chat = chat_prompt_ids(
        tokenizer,
        [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan? Answer in one word."},
        ],
    )
    texts = {
        "english": "The three primary colors are",
        "code": "def fibonacci(n):\n    if n < 2:\n        return n\n",
        "german": "Die Hauptstadt von Deutschland ist",
        "chinese": "中国的首都是北京，日本的首都是",
        "japanese_emoji": "今日はとても良い天気ですね 🌞 明日は",
        "digits": "1, 1, 2, 3, 5, 8, 13, 21,",
        "long": long_prompt(),
    }
    out = {name: tokenizer.encode(text) for name, text in texts.items()}
    out["chat"] = chat
    return out


@pytest.fixture(scope="module")
def cases(lm):
    return prompts(lm.tokenizer)


def test_long_prompt_is_past_the_window(cases, lm):
    assert len(cases["long"]) >= max(1500, 3 * lm.config.sliding_window)
    assert len(cases) >= 8


@pytest.fixture(scope="module")
def results(lm, hf_gguf_model, cases):
    """Per prompt: our 48 greedy tokens (cached decode), then one full forward of prompt +
    continuation by each engine."""
    out = {}
    for name, ids in cases.items():
        generated = []
        for chunk in lm.stream_ids(ids, max_tokens=48):
            generated.append(chunk.token)
        seq = ids + generated
        ours = lm.logits(seq)
        with torch.no_grad():
            ref = hf_gguf_model(torch.tensor([seq])).logits[0]
        out[name] = (ids, generated, ours, ref)
    return out


def test_logits_match_at_every_position(results, lm):
    worst = {}
    for name, (ids, generated, ours, ref) in results.items():
        assert ours.shape == ref.shape == (len(ids) + len(generated), lm.config.vocab_size)
        worst[name] = float((ours - ref).abs().max())
    assert max(worst.values()) <= 1e-2, worst


def test_48_greedy_tokens_identical(results, lm):
    """transformers' greedy choice at every step, given the same prefix, is our token: so its
    greedy generation is ours (checked teacher-forced, one forward instead of 48)."""
    for name, (ids, generated, _, ref) in results.items():
        n = len(ids)
        theirs = ref[n - 1 : n - 1 + len(generated)].argmax(-1).tolist()
        assert generated == theirs, name
        stopped = generated[-1] in lm.stop_ids
        assert len(generated) == 48 or stopped, name
        assert not any(t in lm.stop_ids for t in generated[:-1]), name
