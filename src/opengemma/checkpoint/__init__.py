"""load_checkpoint(path) -> Checkpoint: config + tensors under opengemma's names, any format.

Formats: GGUF files (llama.cpp, Ollama), Hugging Face directories (config.json + safetensors,
sharded or not), gemma_pytorch `.ckpt` files (torch zip, read with `weights_only=True`), and
repo ids pulled into the local Hub cache. Every file is treated as untrusted: headers are
validated before anything is allocated, and names and shapes are checked against the config
before any tensor data is read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint.errors import CheckpointError
from opengemma.config import GemmaConfig

__all__ = ["Checkpoint", "CheckpointError", "detect_format", "load_checkpoint", "check_coverage",
           "expected_shapes"]  # fmt: skip


@dataclass
class Checkpoint:
    """What a loader returns: the config, the tensors (our names) and where the vocab lives."""

    config: GemmaConfig
    tensors: dict[str, torch.Tensor]
    format: str  # "gguf" | "hf" | "ckpt"
    path: Path
    tokenizer_source: Any  # a GGUFFile, or the path of a tokenizer.model, or None
    info: dict[str, Any] = field(default_factory=dict)  # per-tensor types, bytes, metadata
    # matrices kept as Q8_0 blocks (opengemma.quant): name -> uint8 (N, K/32*34); these names
    # are absent from `tensors`
    quantized: dict[str, torch.Tensor] = field(default_factory=dict)
    tokenizer: Any = None  # an opengemma Tokenizer, when the loader built it (GGUF, on request)


def detect_format(path: Path) -> str:
    """ "gguf", "hf" or "ckpt", from the directory layout or the file's first bytes."""
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise CheckpointError(
            f"{path} is a directory without config.json; pass a Hugging Face model directory "
            "(config.json + *.safetensors), a .gguf file or a gemma_pytorch .ckpt file"
        )
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if magic == b"GGUF":
        return "gguf"
    if magic == b"PK\x03\x04" and zipfile.is_zipfile(path):
        return "ckpt"
    raise CheckpointError(
        f"{path} is not a model file opengemma reads (neither GGUF nor a torch zip archive); "
        "pass a .gguf file, a gemma_pytorch .ckpt file or a Hugging Face model directory"
    )


def load_checkpoint(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    variant: str | GemmaConfig | None = None,
    quant: str = "none",
    tokenizer: bool = False,
) -> Checkpoint:
    """Read a checkpoint into a Checkpoint with `dtype` tensors.

    `path` is a .gguf file, a Hugging Face directory, a gemma_pytorch .ckpt file, or the id of
    a repo pulled with `opengemma pull`. `variant` (a preset name or a GemmaConfig) is used by
    .ckpt files, which carry no config; by default it is inferred from the tensor shapes.
    `quant` (GGUF files): "q8" reads the matrices straight into Q8_0 blocks (`quantized`),
    never holding them in `dtype`; "auto" does so when the file's matrices are quantized.
    `tokenizer` (GGUF files): build the tokenizer before the tensors and drop the vocabulary
    arrays it was built from, so they are not held while the weights are read.
    """
    path = resolve_path(path)
    fmt = detect_format(path)
    if fmt == "gguf":
        from opengemma.checkpoint.gguf_file import load_gguf

        return load_gguf(path, dtype, quant, tokenizer)
    if fmt == "ckpt":
        from opengemma.checkpoint.ckpt import load_ckpt

        return load_ckpt(path, dtype, variant)
    from opengemma.checkpoint.hf import load_hf

    return load_hf(path, dtype)


def resolve_path(model: str | Path) -> Path:
    """A local path for `model`: an existing file or directory, else a pulled Hub repo id."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    from opengemma.checkpoint.hub import looks_like_repo_id, resolve_cached

    if isinstance(model, str) and looks_like_repo_id(model):
        return resolve_cached(model)
    raise CheckpointError(
        f"no such file or directory: {path}; pass a .gguf file, a Hugging Face directory, a "
        "gemma_pytorch .ckpt file, or a repo id fetched with `opengemma pull`"
    )


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
