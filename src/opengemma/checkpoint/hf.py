"""Hugging Face model directories: config.json + model.safetensors (or a sharded index)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from opengemma.checkpoint import Checkpoint
from opengemma.checkpoint.keymap import hf_to_ours
from opengemma.config import GemmaConfig
from opengemma.errors import ConfigError, ModelLoadError


def shard_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index} is not a valid safetensors index: {exc}") from None
        files = sorted({path / name for name in weight_map.values()})
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} holds no *.safetensors weights next to its config.json")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{path}: the index names shards that are missing: {missing}")
    return files


def load_hf(path: Path, dtype: torch.dtype) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        config = GemmaConfig.from_hf(path)
    except ConfigError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    src_dtypes: Counter[str] = Counter()
    nbytes = 0
    for file in shard_files(path):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    name = hf_to_ours(key, config.sandwich_norm)
                    if name is None:
                        continue
                    t = f.get_tensor(key)
                    src_dtypes[str(t.dtype).removeprefix("torch.")] += 1
                    nbytes += t.numel() * t.element_size()
                    if name in tensors:
                        raise ModelLoadError(f"{path}: tensor {key} appears in more than one shard")
                    tensors[name] = t.to(dtype)
        except SafetensorError as exc:
            raise ModelLoadError(f"{file} is not a valid safetensors file: {exc}") from None
    tokenizer = path / "tokenizer.model"
    info = {"tensor_types": src_dtypes, "tensor_bytes": nbytes, "metadata": {}}
    return Checkpoint(config, tensors, "hf", path, tokenizer if tokenizer.is_file() else None, info)
