"""load_checkpoint(path) -> Checkpoint: config + tensors under opengemma's names, any format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from opengemma.config import GemmaConfig
from opengemma.errors import ModelLoadError


@dataclass
class Checkpoint:
    """What a loader returns: the config, the tensors (our names) and where the vocab lives."""

    config: GemmaConfig
    tensors: dict[str, torch.Tensor]
    format: str  # "gguf" | "hf"
    path: Path
    tokenizer_source: Any  # a gguf.GGUFReader, or the path of a tokenizer.model
    info: dict[str, Any] = field(default_factory=dict)  # per-tensor types, bytes, metadata


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise ModelLoadError(
            f"{path} is a directory without config.json; pass a Hugging Face model directory "
            "(config.json + *.safetensors) or a .gguf file"
        )
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return "gguf"
    raise ModelLoadError(
        f"{path} is not a model file opengemma reads (no GGUF magic); pass a .gguf file or a "
        "Hugging Face model directory"
    )


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Read a GGUF file or a Hugging Face directory into a Checkpoint with `dtype` tensors."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"no such file or directory: {path}")
    fmt = detect_format(path)
    if fmt == "gguf":
        from opengemma.checkpoint.gguf_file import load_gguf

        return load_gguf(path, dtype)
    from opengemma.checkpoint.hf import load_hf

    return load_hf(path, dtype)


def check_coverage(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: Path
) -> None:
    """Every expected tensor present with its shape, nothing unexpected: else a clear error."""
    from opengemma.checkpoint.keymap import describe

    missing = expected.keys() - tensors.keys()
    extra = tensors.keys() - expected.keys()
    if missing:
        raise ModelLoadError(
            f"{source} lacks tensors {describe(missing)}; is this a complete Gemma checkpoint? "
            f"It holds tensors like {describe(tensors.keys(), 3)}"
        )
    if extra:
        raise ModelLoadError(
            f"{source} has tensors this Gemma config does not use: {describe(extra)}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise ModelLoadError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, the config "
                f"implies {tuple(shape)}; the file and its config disagree"
            )
