"""GGUF files (llama.cpp, Ollama): metadata -> GemmaConfig, tensors dequantized on load.

The file is memory-mapped and parsed with bounds checks (gguf_reader.GGUFFile); each tensor is
dequantized with the `gguf` package's reference routines and converted to the requested dtype
one at a time, so peak memory is the model in that dtype plus one tensor.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint import Checkpoint
from opengemma.checkpoint.gguf_reader import GGUFFile
from opengemma.checkpoint.keymap import describe, gguf_to_ours, is_norm
from opengemma.config import GemmaConfig
from opengemma.errors import ConfigError, ModelLoadError

_VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                 "tokenizer.ggml.merges")  # fmt: skip


def summary_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata for display: vocabulary arrays replaced by their lengths."""
    return {k: (f"<{len(v)} entries>" if k in _VOCAB_ARRAYS else v) for k, v in meta.items()}


def load_gguf(path: Path, dtype: torch.dtype) -> Checkpoint:
    gf = GGUFFile(path)
    embed = gf.tensors.get("token_embd.weight")
    try:
        config = GemmaConfig.from_gguf_metadata(
            gf.metadata, vocab_size=embed.shape[0] if embed else None
        )
    except ConfigError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    unknown = []
    for gguf_name in gf.tensors:
        name = gguf_to_ours(gguf_name)
        if name is None:
            if gguf_name != "output.weight":  # an untied copy of the embedding: Gemma ties them
                unknown.append(gguf_name)
            continue
        arr = gf.dequantize(gguf_name)
        if is_norm(name):
            arr = arr - 1.0  # llama.cpp stores Gemma norm weights as w + 1
        tensors[name] = torch.from_numpy(arr).to(dtype)
    if unknown:
        raise ModelLoadError(f"{path} has tensors a Gemma model does not have: {describe(unknown)}")
    infos = gf.tensors.values()
    info = {
        "metadata": summary_metadata(gf.metadata),
        "tensor_types": Counter(t.type_name for t in infos),
        "tensor_bytes": sum(t.nbytes for t in infos),
        "tensors": [(t.name, t.type_name, t.shape, t.nbytes) for t in infos],
    }
    return Checkpoint(config, tensors, "gguf", path, gf, info)
