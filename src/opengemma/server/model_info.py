"""What the server says about its model (Ollama's /api/tags, /api/show, /api/ps): size on
disk, content digest, family, parameter count, quantization."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

# llama.cpp's file types (GGUF general.file_type)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
              16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip
_lock = threading.Lock()
_digests: dict[Path, str] = {}


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def model_digest(state) -> str:
    """sha256 of the model's file(s) (computed once; a directory hashes its files in order)."""
    path = Path(state.lm.path)
    with _lock:
        if path not in _digests:
            h = hashlib.sha256()
            for f in _files(path):
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            _digests[path] = h.hexdigest()
        return _digests[path]


def _parameters(lm) -> int:
    tensors = lm.info.get("tensors")
    if tensors:
        total = 0
        for _, _, shape, _ in tensors:
            n = 1
            for d in shape:
                n *= int(d)
            total += n
        return total
    return sum(p.numel() for p in lm.model.parameters())


def _size_label(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def model_details(lm) -> dict[str, Any]:
    meta = lm.info.get("metadata") or {}
    family = lm.config.family
    quant = FILE_TYPES.get(meta.get("general.file_type"), "")
    if not quant:
        quant = (
            "Q8_0"
            if getattr(lm, "quant", "none") == "q8"
            else str(lm.model.dtype).split(".")[-1].upper()
        )
    return {
        "parent_model": "",
        "format": lm.format,
        "family": family,
        "families": [family],
        "parameter_size": _size_label(_parameters(lm)),
        "quantization_level": quant,
    }


def model_info(lm) -> dict[str, Any]:
    """Bytes on disk, and Ollama's `model_info` keys (`general.*`, `<arch>.*`)."""
    size = sum(f.stat().st_size for f in _files(Path(lm.path)))
    cfg = lm.config
    arch = cfg.family
    info = {
        "general.architecture": arch,
        "general.parameter_count": _parameters(lm),
        f"{arch}.context_length": cfg.max_position_embeddings,
        f"{arch}.embedding_length": cfg.hidden_size,
        f"{arch}.block_count": cfg.num_layers,
        f"{arch}.attention.head_count": cfg.num_heads,
        f"{arch}.attention.head_count_kv": cfg.num_kv_heads,
        f"{arch}.attention.sliding_window": cfg.sliding_window,
        f"{arch}.vocab_size": cfg.vocab_size,
    }
    return {"bytes": size, "model_info": info}
