"""The Checkpoint a loader returns, and the checks every format's loader runs before reading data.

Loaders (gguf_checkpoint, hf, ckpt) build a Checkpoint; `expected_shapes` / `check_coverage` compare
a file's tensor names and shapes with the config, `check_config_numbers` refuses absurd sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint.errors import CheckpointError
from opengemma.config import GemmaConfig

__all__ = ["Checkpoint", "check_config_numbers", "check_coverage", "expected_shapes"]


@dataclass
class Checkpoint:
    """What a loader returns: the config, the tensors (our names) and where the vocab lives."""

    config: GemmaConfig
    tensors: dict[str, torch.Tensor]
    format: str  # "gguf" | "hf" | "ckpt"
    path: Path
    tokenizer_source: Any  # a GGUFFile, or the path of a tokenizer.model, or None
    info: dict[str, Any] = field(default_factory=dict)  # per-tensor types, bytes, metadata
    # matrices kept as Q8_0 blocks (opengemma.quantized_layers): name -> uint8 (N, K/32*34), or
    # as the file stores them (opengemma.stored_layers.StoredBlocks: Q4_K, Q6_K); these names
    # are absent from `tensors`
    quantized: dict[str, torch.Tensor] = field(default_factory=dict)
    tokenizer: Any = None  # an opengemma Tokenizer, when the loader built it (GGUF, on request)


def expected_shapes(config: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor a model with this config holds (built on `meta`: free)."""
    from opengemma.model import GemmaModel

    with torch.device("meta"):
        model = GemmaModel(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_coverage(tensors: dict[str, Any], expected: dict[str, Any], source: Path) -> None:
    """Every expected tensor present with its shape, nothing unexpected: else a clear error.

    `tensors` maps names to tensors or to shapes (so headers can be checked before any data).
    """
    from opengemma.checkpoint.keymap import describe

    missing = expected.keys() - tensors.keys()
    extra = tensors.keys() - expected.keys()
    if missing:
        raise CheckpointError(
            f"{source} lacks tensors {describe(missing)}; is this a complete Gemma checkpoint? "
            f"It holds tensors like {describe(tensors.keys(), 3)}"
        )
    if extra:
        raise CheckpointError(
            f"{source} has tensors this Gemma config does not use: {describe(extra)}"
        )
    for name, shape in expected.items():
        got = tensors[name]
        got = tuple(got.shape) if hasattr(got, "shape") else tuple(got)
        if got != tuple(shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {got}, the config implies {tuple(shape)}; "
                "the file and its config disagree"
            )


def check_config_numbers(values: dict[str, Any], source: Path, what: str) -> None:
    """Refuse absurd or mistyped size fields before a config (and a model) is built from them.

    `values` maps a field name to its raw value; None means absent (the default applies).
    """
    for key, value in values.items():
        if value is None:
            continue
        low, high = _LIMITS[key.rsplit(".", 1)[-1]]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(
                f"{source}: {what} {key} is {value!r}; a Gemma model needs an integer in "
                f"[{low}, {high}]. The file is damaged or not a Gemma checkpoint"
            )


_LIMITS = {  # plausible ranges, far wider than any Gemma model
    "block_count": (1, 1024), "num_hidden_layers": (1, 1024),
    "embedding_length": (1, 1 << 16), "hidden_size": (1, 1 << 16),
    "feed_forward_length": (1, 1 << 20), "intermediate_size": (1, 1 << 20),
    "head_count": (1, 1024), "num_attention_heads": (1, 1024),
    "head_count_kv": (1, 1024), "num_key_value_heads": (1, 1024),
    "key_length": (1, 4096), "head_dim": (1, 4096),
    "vocab_size": (1, 1 << 22),
    "context_length": (1, 1 << 24), "max_position_embeddings": (1, 1 << 24),
    "sliding_window": (1, 1 << 24),
}  # fmt: skip
