"""GGUF files (llama.cpp, Ollama): metadata -> GemmaConfig, tensors dequantized on load.

The file is memory-mapped and parsed with bounds checks (gguf_reader.GGUFFile). The config's
size fields are checked before a config is built, and every tensor's name and shape before any
tensor data is read. Each tensor is then dequantized with the `gguf` package's reference
routines a few rows at a time, straight into a tensor of the requested dtype, so peak memory is
the model in that dtype plus one chunk.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opengemma.checkpoint.core import (
    Checkpoint,
    check_config_numbers,
    check_coverage,
    expected_shapes,
)
from opengemma.checkpoint.errors import CheckpointError
from opengemma.checkpoint.gguf_keys import ARCHS, EMBED_HEAD_TENSORS, LOCAL_BASE_KEY, QPAS_KEY
from opengemma.checkpoint.gguf_reader import GGUFFile
from opengemma.checkpoint.keymap import (
    GGUF_DERIVED,
    describe,
    gguf_to_ours,
    is_norm,
    keeps_float,
)
from opengemma.config import GemmaConfig
from opengemma.errors import ConfigError

_VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                 "tokenizer.ggml.merges")  # fmt: skip
_SIZE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
              "attention.head_count_kv", "attention.key_length", "context_length",
              "attention.sliding_window")  # fmt: skip
_FLOAT_KEYS = ("rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.scaling.factor",
               "attn_logit_softcapping", "final_logit_softcapping")  # fmt: skip


def summary_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata for display: vocabulary arrays replaced by their lengths."""
    return {k: (f"<{len(v)} entries>" if k in _VOCAB_ARRAYS else v) for k, v in meta.items()}


def gguf_config(gf: GGUFFile) -> GemmaConfig:
    """The GemmaConfig a GGUF file describes, after checking every field it is built from."""
    meta, path = gf.metadata, gf.path
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise CheckpointError(
            f"{path}: GGUF architecture is {arch!r}; opengemma reads {', '.join(ARCHS)} files"
        )
    sizes = {k: meta.get(f"{arch}.{k}") for k in _SIZE_KEYS}
    for k, v in sizes.items():  # Gemma 4 writes some counts once per layer: check each
        if isinstance(v, list):
            sizes[k] = max(v, key=lambda x: x if isinstance(x, int) else 1 << 62) if v else None
    check_config_numbers(sizes, path, "GGUF metadata")
    for key in _FLOAT_KEYS:
        value = meta.get(f"{arch}.{key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CheckpointError(f"{path}: GGUF metadata {arch}.{key} is {value!r}, not a number")
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id"):  # fmt: skip
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CheckpointError(f"{path}: GGUF metadata {key} is {value!r}, not a token id")
    embed = gf.tensors.get("token_embd.weight")
    if embed is None or len(embed.shape) != 2:
        raise CheckpointError(
            f"{path} has no 2-D token_embd.weight tensor; it is not a complete Gemma GGUF file"
        )
    try:
        config = GemmaConfig.from_gguf_metadata(meta, vocab_size=embed.shape[0])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if config.family == "gemma4":
        config = _gemma4_tensor_fields(config, gf)
    return _own_fields(config, meta, path)


def _gemma4_tensor_fields(config: GemmaConfig, gf: GGUFFile) -> GemmaConfig:
    """What a gemma4 file tells by its tensors: global layers without `attn_v` take values from
    the keys; `layer_output_scale` present or not; the rows of the per-layer table; the share
    of each global head that RoPE rotates (llama.cpp's `rope_freqs`: 1 for a rotated pair, a
    huge factor for a still one)."""
    t = gf.tensors
    producers = [i for i in range(config.num_layers) if config.kv_source(i) == i]
    globals_ = [i for i in producers if config.layer_types[i] == "global"]
    k_eq_v = bool(globals_) and all(f"blk.{i}.attn_v.weight" not in t for i in globals_)
    changes: dict[str, Any] = {"attention_k_eq_v": k_eq_v,
                               "layer_scalar": "blk.0.layer_output_scale.weight" in t}  # fmt: skip
    if "per_layer_token_embd.weight" in t:
        changes["vocab_size_per_layer_input"] = t["per_layer_token_embd.weight"].shape[0]
    if "rope_freqs.weight" in t:
        factors = gf.load("rope_freqs.weight", torch.float32)
        changes["rope_partial_factor"] = float((factors == 1.0).sum()) / max(factors.numel(), 1)
    try:
        return config.replace(**changes)
    except ConfigError as exc:
        raise CheckpointError(f"{gf.path}: {exc}") from None


def _own_fields(config: GemmaConfig, meta: dict[str, Any], path: Path) -> GemmaConfig:
    """Fields opengemma writes that llama.cpp derives from the architecture instead."""
    # float32 metadata: 1e-6 reads back as 9.99999997e-07; keep the shortest float32 spelling
    changes: dict[str, float] = {"rms_norm_eps": float(str(np.float32(config.rms_norm_eps)))}
    for key, fld in ((QPAS_KEY, "query_pre_attn_scalar"), (LOCAL_BASE_KEY, "rope_local_theta")):
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise CheckpointError(
                f"{path}: GGUF metadata {key} is {value!r}, not a positive number"
            )
        changes[fld] = float(str(np.float32(value)))
    return config.replace(**changes)


def gguf_shapes(gf: GGUFFile) -> dict[str, tuple[int, ...]]:
    """Our name -> stored shape for every tensor; unknown tensor names are an error."""
    shapes, unknown = {}, []
    for gguf_name, info in gf.tensors.items():
        name = gguf_to_ours(gguf_name)
        if name is None:
            # an untied copy of the embedding (Gemma ties them); EmbeddingGemma's projections,
            # which opengemma.embed reads
            if gguf_name not in ("output.weight", *EMBED_HEAD_TENSORS, *GGUF_DERIVED):
                unknown.append(gguf_name)
            continue
        shapes[name] = info.shape
    if unknown:
        raise CheckpointError(
            f"{gf.path} has tensors a Gemma model does not have: {describe(unknown)}"
        )
    return shapes


_FLOAT_TYPES = ("F32", "F16", "BF16")


def load_gguf(
    path: Path, dtype: torch.dtype, quant: str = "none", tokenizer: bool = False
) -> Checkpoint:
    """Parse, validate and dequantize a GGUF file (norm weights back to the w convention).

    quant "q8": Q4_K / Q6_K projections stay in the file's blocks (memory-mapped
    `opengemma.stored_layers.StoredBlocks`), other matrices go straight from their stored
    blocks to Q8_0 blocks (both in `Checkpoint.quantized`); "auto": so when any matrix is
    stored quantized; "none": all in `dtype`. tokenizer: build `Checkpoint.tokenizer` first,
    then drop the vocabulary arrays.
    """
    gf = GGUFFile(path)
    config = gguf_config(gf)
    check_coverage(gguf_shapes(gf), expected_shapes(config), path)
    metadata = summary_metadata(gf.metadata)
    built = None
    if tokenizer:
        from opengemma.tokenizer import Tokenizer

        built = Tokenizer.from_gguf(gf)
        for key in _VOCAB_ARRAYS:  # tens of MB of Python objects, not needed any more
            if key in gf.metadata:
                gf.metadata[key] = None
    ours = {n: gguf_to_ours(n) for n in gf.tensors}
    matrices = [n for n, t in gf.tensors.items()  # 3-D: stacked experts
                if len(t.shape) in (2, 3) and ours[n] and not keeps_float(ours[n])]  # fmt: skip
    if quant == "auto":
        stored = {gf.tensors[n].type_name for n in matrices}
        quant = "q8" if stored - set(_FLOAT_TYPES) else "none"
    tensors: dict[str, torch.Tensor] = {}
    quantized: dict[str, torch.Tensor] = {}
    for gguf_name in gf.tensors:
        name = gguf_to_ours(gguf_name)
        if name is None:
            continue
        if quant == "q8" and gguf_name in matrices:
            stored = _keeps_stored(name, gf.tensors[gguf_name])
            quantized[name] = gf.load_stored(gguf_name) if stored else gf.load_q8_0(gguf_name)
            continue
        # llama.cpp stores Gemma 1-3 norm weights as w + 1 (Gemma 4's as they are)
        shifted = is_norm(name) and config.norm_offset == 1.0
        tensors[name] = gf.load(gguf_name, dtype, _minus_one if shifted else None)
    # the header (the vocabulary: megabytes) is parsed; matrices kept as stored hold the map
    # open, so drop its pages (they stay on disk, and are read again if ever needed)
    gf.release(0, gf.data_start)
    infos = gf.tensors.values()
    info = {
        "metadata": metadata,
        "tensor_types": Counter(t.type_name for t in infos),
        "tensor_bytes": sum(t.nbytes for t in infos),
        "tensors": [(t.name, t.type_name, t.shape, t.nbytes) for t in infos],
    }
    return Checkpoint(config, tensors, "gguf", path, gf, info, quantized, built)


def _keeps_stored(name: str, info) -> bool:
    """Whether a matrix stays in its file's blocks (opengemma.stored_layers): 2-D Q4_K, Q6_K,
    Q5_0 and Q4_0 projections, and the token embedding (also the tied output projection).
    Other embedding tables and stacked experts are held as Q8_0 blocks."""
    from opengemma.stored_layers import STORED_TYPES

    module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    matrix = name == "embed_tokens.weight" or not module.startswith("embed")
    return info.qtype in STORED_TYPES and len(info.shape) == 2 and matrix


def _minus_one(x: torch.Tensor) -> torch.Tensor:
    return x - 1.0
