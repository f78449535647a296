"""The tiny EmbeddingGemma written as a `gemma-embedding` GGUF (llama.cpp's tensor and key
names, read back by the `gguf` package) embeds as sentence-transformers does."""

from __future__ import annotations

import numpy as np
import pytest
from tests.embed.test_parity import close, texts


@pytest.fixture(scope="module")
def gguf_path(tiny_embedding, tmp_path_factory):
    from opengemma.embed.export import export_gguf

    return export_gguf(tiny_embedding.path, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_layout_is_llama_cpps(gguf_path):
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    fields = {f.name: f for f in reader.fields.values()}

    def value(key):
        return fields[key].contents()

    assert value("general.architecture") == "gemma-embedding"
    assert value("gemma-embedding.pooling_type") == 1  # MEAN
    assert value("gemma-embedding.attention.sliding_window") == 8  # config.json's value
    assert (
        value("gemma-embedding.dense_2_feat_in"),
        value("gemma-embedding.dense_2_feat_out"),
    ) == (64, 96)
    assert (
        value("gemma-embedding.dense_3_feat_in"),
        value("gemma-embedding.dense_3_feat_out"),
    ) == (96, 48)
    assert value("tokenizer.ggml.add_eos_token") is True
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    assert shapes["dense_2.weight"] == (64, 96)  # ggml order: (in, out)
    assert shapes["dense_3.weight"] == (96, 48)


@pytest.mark.parametrize("task,dims", [(None, None), ("query", 32), ("document", 16)])
def test_gguf_embeds_as_sentence_transformers(tiny_embedding, gguf_path, task, dims):
    import opengemma

    lm = opengemma.load(str(gguf_path), dtype="float32")
    assert lm.config.use_bidirectional_attention and lm.config.sliding_window == 8
    sample = texts(seed=3)
    ref = tiny_embedding.st.encode(sample, prompt_name=task, truncate_dim=dims,
                                   normalize_embeddings=True)  # fmt: skip
    close(lm.embed(sample, dimensions=dims, task=task), ref)


def test_gguf_q8_path_tracks_float(tiny_embedding, gguf_path, tmp_path):
    """The int8 path (Q8_0 blocks, native kernels) on a Q8_0 file: close to float32."""
    import opengemma
    from opengemma.embed.export import export_gguf

    q8 = export_gguf(tiny_embedding.path, tmp_path / "q8.gguf", quant="q8_0")
    lm = opengemma.load(str(q8))
    assert lm.quant == "q8"
    sample = texts(seed=4)
    ref = tiny_embedding.st.encode(sample, normalize_embeddings=True)
    ours = lm.embed(sample)
    cos = (ours * ref).sum(-1)
    assert cos.min() > 0.99, cos
    assert np.abs(ours - ref).max() > 1e-6  # the int8 weights really were used
