"""gemma_pytorch `.ckpt` files: a torch zip archive holding `{"model_state_dict": {...}}`.

Read with `torch.load(weights_only=True, mmap=True)` only: the restricted unpickler rebuilds
tensors and plain containers and refuses any other object, so pickled code never runs. There is
no fallback to a full unpickler. The file carries no config: the variant comes from the caller
(a preset name or a GemmaConfig) or is inferred from the tensor shapes. The fused `qkv_proj` is
split into q/k/v; int8 weights with a `weight_scaler` are dequantized.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import Counter
from pathlib import Path

import torch

from opengemma.checkpoint.core import Checkpoint, check_coverage, expected_shapes
from opengemma.checkpoint.errors import CheckpointError
from opengemma.checkpoint.keymap import CKPT_QKV, ckpt_to_hf, describe, hf_to_ours
from opengemma.config import PRESETS, GemmaConfig

_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    MemoryError,
)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a gemma_pytorch checkpoint, without executing anything in the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{path} is not a loadable gemma_pytorch checkpoint: {str(exc).splitlines()[0][:200]}"
            ". Only plain tensor checkpoints are read (never pickled code)"
        ) from None
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path} does not hold a state dict of tensors (model_state_dict); it is not a "
            "gemma_pytorch checkpoint"
        )
    return state


def infer_config(shapes: dict[str, tuple[int, ...]], path: Path) -> GemmaConfig:
    """The preset whose family, width and depth match the checkpoint's tensor shapes."""
    embed = shapes.get("embedder.weight")
    if embed is None or len(embed) != 2:
        raise CheckpointError(f"{path} has no 2-D embedder.weight; not a gemma_pytorch checkpoint")
    layers = 1 + max((int(k.split(".")[2]) for k in shapes if k.startswith("model.layers.")),
                     default=-1)  # fmt: skip
    if any(k.endswith("query_norm.weight") for k in shapes):
        family = "gemma3"
    elif any(k.endswith("pre_feedforward_layernorm.weight") for k in shapes):
        family = "gemma2"
    else:
        family = "gemma"
    for cfg in PRESETS.values():
        if (cfg.family, cfg.hidden_size, cfg.num_layers) == (family, embed[1], layers):
            return cfg.replace(vocab_size=embed[0])
    raise CheckpointError(
        f"{path}: no Gemma preset has family {family}, width {embed[1]} and {layers} layers; "
        f"pass the variant explicitly (--variant, one of {', '.join(PRESETS)})"
    )


def _to_ours(state: dict[str, torch.Tensor], config: GemmaConfig, path: Path):
    """Rename to our names, split qkv, fold int8 scalers; tensors stay lazy (mmap views)."""
    out: dict[str, torch.Tensor] = {}
    q = config.num_heads * config.head_dim
    kv = config.num_kv_heads * config.head_dim
    for key, t in state.items():
        if key.endswith(".weight_scaler"):
            continue
        hf = ckpt_to_hf(key)
        if hf is None:
            raise CheckpointError(f"{path} has a tensor a Gemma model does not have: {key}")
        scaler = state.get(key.removesuffix(".weight") + ".weight_scaler")
        if scaler is not None:
            t = t.to(torch.float32) * scaler.to(torch.float32).unsqueeze(-1)
        name = hf_to_ours(hf, config.sandwich_norm)
        if name.endswith(".qkv_proj.weight"):
            if t.dim() != 2 or t.shape[0] != q + 2 * kv:
                raise CheckpointError(
                    f"{path}: {key} has shape {tuple(t.shape)}, expected "
                    f"({q + 2 * kv}, {config.hidden_size}) for this variant"
                )
            layer = name.split(".")[1]
            for part, piece in zip("qkv", t.split([q, kv, kv]), strict=True):
                out[CKPT_QKV.replace("{}", layer).replace("qkv", part)] = piece
            continue
        out[name] = t
    return out


def load_ckpt(path: Path, dtype: torch.dtype, variant: str | GemmaConfig | None) -> Checkpoint:
    state = read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if variant is None:
        config = infer_config(shapes, path)
    elif isinstance(variant, GemmaConfig):
        config = variant
    elif variant in PRESETS:
        config = PRESETS[variant].replace(vocab_size=shapes.get("embedder.weight", (0,))[0])
    else:
        raise CheckpointError(f"unknown variant {variant!r}; choose one of {', '.join(PRESETS)}")
    ours = _to_ours(state, config, path)
    check_coverage(ours, expected_shapes(config), path)
    # Same dtype: the tensors stay views of the file's memory map (no copy).
    tensors = {name: t.to(dtype) for name, t in ours.items()}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; found {describe(shapes)}")
    tokenizer = path.parent / "tokenizer.model"
    info = {"tensor_types": Counter(str(t.dtype).removeprefix("torch.") for t in state.values()),
            "tensor_bytes": sum(t.numel() * t.element_size() for t in state.values()),
            "metadata": {}}  # fmt: skip
    return Checkpoint(config, tensors, "ckpt", path, tokenizer if tokenizer.is_file() else None,
                      info)  # fmt: skip
