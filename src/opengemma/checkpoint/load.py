"""load_checkpoint(path): detect the format of a path (or a pulled repo id) and run its loader."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from opengemma.checkpoint.core import Checkpoint
from opengemma.checkpoint.errors import CheckpointError
from opengemma.config import GemmaConfig

__all__ = ["detect_format", "load_checkpoint", "resolve_path"]


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
        from opengemma.checkpoint.gguf_checkpoint import load_gguf

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
