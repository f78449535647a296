"""A tiny random EmbeddingGemma-shaped model saved by sentence-transformers itself: a Gemma 3
decoder with bidirectional attention and a sliding window of 8, mean pooling, two bias-free
Dense layers with the identity activation, Normalize; a tokenizer that appends <eos>."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from opengemma.embed.head import TASK_PROMPTS

MAX_SEQ = 96  # the input limit saved with the model (tokens, <bos> and <eos> included)
PROMPTS = {name: TASK_PROMPTS[name] for name in ("query", "document", "clustering")}


@dataclass
class TinyEmbedding:
    path: Path  # the sentence-transformers directory (decoder at the root)
    st: object  # sentence_transformers.SentenceTransformer loaded back from `path`


def _require_sentence_transformers():
    try:
        import sentence_transformers
    except ImportError:
        pytest.fail("sentence-transformers is needed: pip install -e '.[dev]'")
    return sentence_transformers


def build_tiny_embedding(root: Path, embedded_path: Path, seed: int = 0) -> TinyEmbedding:
    _require_sentence_transformers()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from tests.eval.conftest import _tiny_tokenizer
    from tests.tiny import build_reference, family_config

    base = root / "decoder"
    base.mkdir(parents=True)
    cfg = family_config("gemma3", use_bidirectional_attention=True, sliding_window=8)
    build_reference(cfg, seed=seed).model.save_pretrained(str(base))
    _tiny_tokenizer(base, embedded_path)
    tok_cfg = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "add_eos_token": True}))
    torch.manual_seed(seed)
    identity = torch.nn.Identity()
    modules = [
        Transformer(str(base), max_seq_length=MAX_SEQ),
        Pooling(64, "mean"),
        Dense(64, 96, bias=False, activation_function=identity),
        Dense(96, 48, bias=False, activation_function=identity),
        Normalize(),
    ]
    out = root / "tiny-embeddinggemma"
    SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").save(str(out))
    shutil.copy(base / "tokenizer.model", out / "tokenizer.model")  # as the Hub repo ships it
    return TinyEmbedding(out, SentenceTransformer(str(out), device="cpu"))


@pytest.fixture(scope="session")
def tiny_embedding(tmp_path_factory, embedded_path) -> TinyEmbedding:
    return build_tiny_embedding(tmp_path_factory.mktemp("tiny_embedding"), embedded_path)


@pytest.fixture(scope="session")
def tiny_embed_lm(tiny_embedding):
    import opengemma

    return opengemma.load(str(tiny_embedding.path), dtype="float32")
