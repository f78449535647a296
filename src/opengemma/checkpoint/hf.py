"""Hugging Face model directories: config.json + model.safetensors (or a sharded index).

The config's size fields, the shard index and every safetensors header are validated, and the
tensor names and shapes checked against the config, before any tensor data is read.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint.core import (
    Checkpoint,
    check_config_numbers,
    check_coverage,
    expected_shapes,
)
from opengemma.checkpoint.errors import CheckpointError
from opengemma.checkpoint.keymap import HF_TOWERS, describe, hf_to_ours
from opengemma.checkpoint.safetensors_file import (
    FLOAT_DTYPES,
    SafetensorsFile,
    no_duplicate_keys,
)
from opengemma.config import GemmaConfig
from opengemma.errors import ConfigError

log = logging.getLogger("opengemma.checkpoint")
MAX_JSON = 50_000_000  # bytes in config.json or an index (real ones are a few KB to a few MB)
_SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                "sliding_window")  # fmt: skip


def read_json(path: Path, what: str) -> Any:
    """A small JSON file, size-capped, duplicate keys refused; errors name the file."""
    try:
        if path.stat().st_size > MAX_JSON:
            raise CheckpointError(f"{path} is larger than {MAX_JSON} bytes; it is not a {what}")
        text = path.read_text(encoding="utf-8")
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a valid {what}: {str(exc)[:100]}") from None


def hf_config(path: Path) -> GemmaConfig:
    """The GemmaConfig of a directory's config.json, after checking its size fields."""
    d = read_json(path / "config.json", "config.json")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path / 'config.json'} is not a JSON object")
    inner = d.get("text_config") if d.get("model_type") in ("gemma3", "gemma4") else d
    if not isinstance(inner, dict):
        raise CheckpointError(f"{path / 'config.json'}: text_config is not a JSON object")
    check_config_numbers({k: inner.get(k) for k in _SIZE_FIELDS}, path / "config.json", "field")
    try:
        return GemmaConfig.from_hf(d)
    except (ConfigError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from None


def shard_files(path: Path) -> list[Path]:
    """The safetensors files of a directory; an index may only name files inside it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise CheckpointError(f"{index} has no weight_map of tensor name -> shard file")
        files = sorted({_inside(path, name, index) for name in weight_map.values()})
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no *.safetensors weights next to its config.json")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{path}: the index names shards that are missing: {missing}")
    return files


def _inside(root: Path, name: str, index: Path) -> Path:
    """`root / name` when `name` is a plain file name that stays inside `root`."""
    candidate = root / name
    plain = name and "/" not in name and "\\" not in name and name not in (".", "..")
    if not plain or candidate.resolve().parent != root.resolve():
        raise CheckpointError(
            f"{index} names shard {name!r}, which is not a file inside {root}; shard names "
            "must be plain file names in the model directory"
        )
    return candidate


def _headers(path: Path, config: GemmaConfig) -> dict[str, tuple[SafetensorsFile, str]]:
    """Our name -> (file, key) for every tensor, from the validated headers."""
    where: dict[str, tuple[SafetensorsFile, str]] = {}
    towers = 0
    for file in shard_files(path):
        st = SafetensorsFile(file)
        for key, entry in st.entries.items():
            name = hf_to_ours(key, config.sandwich_norm)
            if name is None:
                towers += bool(HF_TOWERS.match(key))
                continue
            if name in where:
                raise CheckpointError(f"{path}: tensor {key} appears more than once")
            if entry.dtype not in FLOAT_DTYPES:
                raise CheckpointError(
                    f"{file}: tensor {key} is stored as {entry.dtype}; opengemma reads float "
                    "checkpoints (F32, F16, BF16): convert quantized ones back first"
                )
            where[name] = (st, key)
    if towers:
        log.warning("opengemma: notice: %s: %d vision/audio tensors skipped; opengemma runs "
                    "the text decoder", path, towers)  # fmt: skip
    return where


def load_hf(path: Path, dtype: torch.dtype) -> Checkpoint:
    config = hf_config(path)
    where = _headers(path, config)
    shapes = {name: st.entries[key].shape for name, (st, key) in where.items()}
    check_coverage(shapes, expected_shapes(config), path)
    tensors: dict[str, torch.Tensor] = {}
    src_dtypes: Counter[str] = Counter()
    nbytes = 0
    for name, (st, key) in where.items():
        entry = st.entries[key]
        tensors[name] = st.load(key, dtype)
        src_dtypes[entry.dtype] += 1
        nbytes += entry.end - entry.start
    tokenizer = path / "tokenizer.model"
    info = {"tensor_types": src_dtypes, "tensor_bytes": nbytes, "metadata": {},
            "tensors": [(key, st.entries[key].dtype, st.entries[key].shape,
                         st.entries[key].end - st.entries[key].start)
                        for st, key in where.values()]}  # fmt: skip
    if not tensors:
        raise CheckpointError(f"{path} holds no Gemma tensors; found {describe(shapes)}")
    return Checkpoint(config, tensors, "hf", path, tokenizer if tokenizer.is_file() else None, info)
