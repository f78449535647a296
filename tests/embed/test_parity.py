"""opengemma's embeddings against sentence-transformers on the same saved files: within 1e-4
(cosine >= 0.99999) for inputs longer than the sliding window, with and without Matryoshka
truncation and task prompts."""

from __future__ import annotations

import numpy as np
import pytest
from tests.embed.conftest import MAX_SEQ

WORDS = "the ten rats ate on a slim hill dome near his fog ship".split()


def texts(n: int = 6, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    # 5 to 10 words: 20 to 45 tokens, all past the window of 8, under the limit with a prompt
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 11)))) for _ in range(n)]


def close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    cos = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() >= 0.99999


def test_tokens_match_sentence_transformers(tiny_embedding, tiny_embed_lm):
    from opengemma.embed import Embedder

    emb = Embedder(tiny_embed_lm)
    sample = texts()
    ref = tiny_embedding.st.tokenizer(sample)["input_ids"]
    assert emb.tokenize(sample) == ref
    prompted = tiny_embedding.st.tokenizer([emb.prompt("query") + t for t in sample])
    assert emb.tokenize(sample, "query") == prompted["input_ids"]
    assert max(len(r) for r in prompted["input_ids"]) < MAX_SEQ
    assert all(r[-1] == 1 for r in ref)  # <eos> appended, as EmbeddingGemma's tokenizer does
    assert min(len(r) for r in ref) > 8  # longer than the sliding window


@pytest.mark.parametrize("task", [None, "query", "document"])
@pytest.mark.parametrize("dims", [None, 32, 16])
def test_embeddings_match_sentence_transformers(tiny_embedding, tiny_embed_lm, task, dims):
    sample = texts(seed=1)
    st = tiny_embedding.st
    ref = st.encode(sample, prompt_name=task, truncate_dim=dims, normalize_embeddings=True,
                    batch_size=4, convert_to_numpy=True)  # fmt: skip
    ours = tiny_embed_lm.embed(sample, dimensions=dims, task=task)
    close(ours, ref)
    assert np.abs(ref).max() > 0.05  # not a degenerate vector
    if task is not None:  # the prompt changes the answer
        plain = tiny_embed_lm.embed(sample, dimensions=dims)
        assert np.abs(plain - ours).max() > 1e-3


def test_single_string_and_batch_order(tiny_embedding, tiny_embed_lm):
    sample = texts(5, seed=2)
    batch = tiny_embed_lm.embed(sample)
    one = tiny_embed_lm.embed(sample[3])
    assert one.shape == (48,)
    np.testing.assert_allclose(one, batch[3], atol=1e-5, rtol=0)
    close(one[None], tiny_embedding.st.encode([sample[3]], normalize_embeddings=True))


def test_truncation_matches_sentence_transformers(tiny_embedding, tiny_embed_lm):
    long = " ".join(WORDS * 4)  # ~190 tokens, cut to MAX_SEQ keeping <eos>
    from opengemma.embed import Embedder

    ids = Embedder(tiny_embed_lm).tokenize([long])[0]
    assert len(ids) == MAX_SEQ and ids[-1] == 1
    assert (
        ids
        == tiny_embedding.st.tokenizer([long], truncation=True, max_length=MAX_SEQ)["input_ids"][0]
    )
    close(tiny_embed_lm.embed([long, "a short one"]),
          tiny_embedding.st.encode([long, "a short one"], normalize_embeddings=True))  # fmt: skip
