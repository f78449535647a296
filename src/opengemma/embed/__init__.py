"""Sentence embeddings: EmbeddingGemma (a bidirectional Gemma 3 decoder + its
sentence-transformers head) and pooled states of any causal Gemma decoder.

`Embedder(lm).embed(texts, dimensions=None, task=None)` -> float32 (n, dim); `LM.embed` wraps it.
"""

from __future__ import annotations

from opengemma.embed.embedder import Embedder, load_head
from opengemma.embed.head import TASK_PROMPTS, SentenceHead, matryoshka

__all__ = ["TASK_PROMPTS", "Embedder", "SentenceHead", "load_head", "matryoshka"]
