"""Head variants read from sentence-transformers files (the legacy Pooling keys EmbeddingGemma
ships, other pooling modes, prompts left out of the pooling) against sentence-transformers on
the same files; malformed module folders are clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
from tests.embed.test_parity import close, texts

LEGACY = {"word_embedding_dimension": 64, "pooling_mode_cls_token": False,
          "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
          "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
          "pooling_mode_lasttoken": False, "include_prompt": True}  # fmt: skip


def variant(tiny_embedding, tmp_path, **pooling):
    path = tmp_path / "variant"
    shutil.copytree(tiny_embedding.path, path)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({**LEGACY, **pooling}))
    return path


@pytest.mark.parametrize("pooling", [
    {"pooling_mode_mean_tokens": True},
    {"pooling_mode_lasttoken": True},
    {"pooling_mode_cls_token": True},
    {"pooling_mode_max_tokens": True},
    {"pooling_mode_mean_sqrt_len_tokens": True},
    {"pooling_mode_mean_tokens": True, "include_prompt": False},
])  # fmt: skip
def test_pooling_variants_match_sentence_transformers(tiny_embedding, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    import opengemma

    path = variant(tiny_embedding, tmp_path, **pooling)
    sample = texts(4, seed=10)
    ref = SentenceTransformer(str(path), device="cpu").encode(
        sample, prompt_name="query", normalize_embeddings=True
    )
    close(opengemma.load(str(path), dtype="float32").embed(sample, task="query"), ref)


@pytest.mark.parametrize("folder,change,fragment", [
    ("2_Dense", {"activation_function": "torch.nn.modules.activation.Softsign"}, "activation"),
    ("2_Dense", {"out_features": 95}, "shape"),
    ("1_Pooling", {"pooling_mode": "weightedmean"}, "not supported"),
    ("1_Pooling", {"embedding_dimension": 32}, "pooling width 32"),
])  # fmt: skip
def test_malformed_modules(tiny_embedding, tmp_path, folder, change, fragment):
    import opengemma
    from opengemma.errors import ModelLoadError

    path = tmp_path / "bad"
    shutil.copytree(tiny_embedding.path, path)
    cfg = path / folder / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **change}))
    lm = opengemma.load(str(path), dtype="float32")
    with pytest.raises(ModelLoadError, match=fragment):
        lm.embed("a rat")


def test_unknown_module_and_unknown_task(tiny_embedding, tiny_embed_lm, tmp_path):
    import opengemma
    from opengemma.errors import InvalidRequestError, ModelLoadError

    path = tmp_path / "bad"
    shutil.copytree(tiny_embedding.path, path)
    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = "sentence_transformers.models.LSTM"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="LSTM"):
        opengemma.load(str(path), dtype="float32").embed("a rat")
    with pytest.raises(InvalidRequestError, match="unknown task 'poetry'.*query"):
        tiny_embed_lm.embed("a rat", task="poetry")
    for bad in ([], [""], ["a rat", "  "]):
        with pytest.raises(InvalidRequestError, match="empty"):
            tiny_embed_lm.embed(bad)
    for dims in (0, 49, -1, 2.5, True):
        with pytest.raises(InvalidRequestError, match="dimensions"):
            tiny_embed_lm.embed("a rat", dimensions=dims)
