"""A causal Gemma embeds out of the box (the embedded 270M GGUF): its final hidden states,
mean- or last-token-pooled and L2-normalised, against transformers on the same file; the
model is labelled as not a trained embedding model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SAMPLE = ["The cat sat on the mat.", "A kitten rested on a rug.", "Stock markets fell sharply."]


@pytest.fixture(scope="module")
def reference(lm, hf_gguf_model):
    """transformers' final-norm hidden states of each text, as our tokenizer encodes it."""
    states = []
    for text in SAMPLE:
        ids = torch.tensor([lm.tokenizer.encode(text)])
        with torch.no_grad():
            out = hf_gguf_model(ids, output_hidden_states=True)
        states.append(out.hidden_states[-1][0])  # after the final norm
    return states


def unit(x: torch.Tensor) -> np.ndarray:
    return (x / x.norm()).numpy()


@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_pooled_states_match_transformers(lm, reference, pooling):
    from opengemma.embed import Embedder

    ours = lm.embed(SAMPLE, pooling=pooling)
    pooled = [s.mean(0) if pooling == "mean" else s[-1] for s in reference]
    expected = np.stack([unit(p) for p in pooled])
    assert ours.shape == (3, lm.config.hidden_size) and ours.dtype == np.float32
    cos = (ours * expected).sum(-1)
    assert cos.min() > 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
    assert not Embedder(lm, pooling=pooling).trained


def test_modes_differ_and_bad_pooling(lm):
    from opengemma.errors import InvalidRequestError

    mean, last = lm.embed(SAMPLE[0]), lm.embed(SAMPLE[0], pooling="lasttoken")
    assert float(mean @ last) < 0.999
    with pytest.raises(InvalidRequestError, match="mean or lasttoken"):
        lm.embed(SAMPLE[0], pooling="max")
