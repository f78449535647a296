"""Write a GGUF file that llama.cpp, `transformers`' GGUF loader and opengemma all read.

Metadata follows llama.cpp's Gemma converters: the architecture's hyper-parameters, the
SentencePiece vocabulary (`tokenizer.ggml.*`, model "llama") and `general.file_type`. Norm weights
are stored as w + 1, llama.cpp's convention for Gemma. Fields llama.cpp derives from the
architecture instead of reading (the query scale, the local RoPE base) are also written under
`opengemma.*`, so configs that differ from the published models survive a round trip. Tensors
are quantized and written one at a time into a temporary file that is renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from opengemma.checkpoint.gguf_keys import LOCAL_BASE_KEY, QPAS_KEY
from opengemma.checkpoint.gguf_quantize import FILE_TYPE, quantize, storage_type
from opengemma.checkpoint.keymap import is_norm, keeps_float, ours_to_gguf
from opengemma.checkpoint.writing import checked_atomic_path
from opengemma.config import GemmaConfig

# SentencePiece piece type -> gguf token type. llama.cpp's Gemma converter marks <unk> CONTROL
# (the unknown id is carried by tokenizer.ggml.unknown_token_id), as in its published files.
_SPM_TO_GGUF_TYPE = {1: 1, 2: 3, 3: 3, 4: 4, 5: 5, 6: 6}


def gguf_arch(cfg: GemmaConfig) -> str:
    """llama.cpp's architecture name: a bidirectional Gemma 3 (EmbeddingGemma) is
    `gemma-embedding`, the others their family."""
    if cfg.use_bidirectional_attention and cfg.family == "gemma3":
        return "gemma-embedding"
    return cfg.family


def _count(w: GGUFWriter, key: str, values: list[int]) -> None:
    """A count written once, or once per layer where layers differ (llama.cpp's Gemma 4)."""
    if len(set(values)) == 1:
        w.add_uint32(key, values[0])
    else:
        w.add_array(key, values)


def _add_gemma4(w: GGUFWriter, cfg: GemmaConfig) -> None:
    """The keys llama.cpp's gemma4 converter adds (the sliding layers' head width, KV sharing,
    per-layer embeddings, experts, the sliding layers' RoPE base)."""
    w.add_uint32("gemma4.attention.key_length_swa", cfg.head_dim)
    w.add_uint32("gemma4.attention.value_length_swa", cfg.head_dim)
    w.add_uint32("gemma4.attention.shared_kv_layers", cfg.num_kv_shared_layers)
    w.add_uint32("gemma4.embedding_length_per_layer_input", cfg.hidden_size_per_layer_input)
    w.add_float32("gemma4.rope.freq_base_swa", cfg.rope_local_theta)
    w.add_uint32("gemma4.rope.dimension_count", cfg.global_head_dim or cfg.head_dim)
    w.add_uint32("gemma4.rope.dimension_count_swa", cfg.head_dim)
    if cfg.num_experts:
        w.add_uint32("gemma4.expert_count", cfg.num_experts)
        w.add_uint32("gemma4.expert_used_count", cfg.top_k_experts)
        w.add_uint32("gemma4.expert_feed_forward_length", cfg.moe_intermediate_size)


def rope_freqs(cfg: GemmaConfig) -> torch.Tensor:
    """llama.cpp's `rope_freqs` of Gemma 4 global layers: frequency divisors per pair, 1 for a
    rotated pair and 1e30 (frequency 0) for the pairs proportional RoPE leaves still."""
    half = (cfg.global_head_dim or cfg.head_dim) // 2
    rotated = int(cfg.rope_partial_factor * half)
    return torch.tensor([1.0] * rotated + [1e30] * (half - rotated), dtype=torch.float32)


def _add_hparams(w: GGUFWriter, cfg: GemmaConfig) -> None:
    arch = gguf_arch(cfg)
    n = cfg.num_layers
    w.add_uint32(f"{arch}.context_length", cfg.max_position_embeddings)
    w.add_uint32(f"{arch}.embedding_length", cfg.hidden_size)
    w.add_uint32(f"{arch}.block_count", cfg.num_layers)
    _count(w, f"{arch}.feed_forward_length", [cfg.layer_intermediate(i) for i in range(n)])
    w.add_uint32(f"{arch}.attention.head_count", cfg.num_heads)
    _count(w, f"{arch}.attention.head_count_kv", [cfg.layer_kv_heads(i) for i in range(n)])
    head = cfg.global_head_dim or cfg.head_dim  # llama.cpp: key_length is the global layers'
    w.add_uint32(f"{arch}.attention.key_length", head)
    w.add_uint32(f"{arch}.attention.value_length", head)
    if arch == "gemma4":
        _add_gemma4(w, cfg)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps)
    if arch != "gemma":
        w.add_float32(f"{arch}.rope.freq_base", cfg.rope_theta)
        w.add_uint32(f"{arch}.attention.sliding_window", cfg.sliding_window or 0)
        w.add_array(f"{arch}.attention.sliding_window_pattern",
                    [k == "sliding" for k in cfg.layer_types])  # fmt: skip
    if cfg.attn_logit_softcap is not None:
        w.add_float32(f"{arch}.attn_logit_softcapping", cfg.attn_logit_softcap)
    if cfg.final_logit_softcap is not None:
        w.add_float32(f"{arch}.final_logit_softcapping", cfg.final_logit_softcap)
    if cfg.rope_scaling != 1.0:
        w.add_string(f"{arch}.rope.scaling.type", "linear")
        w.add_float32(f"{arch}.rope.scaling.factor", cfg.rope_scaling)
    w.add_float32(QPAS_KEY, float(cfg.query_pre_attn_scalar))
    w.add_float32(LOCAL_BASE_KEY, cfg.rope_local_theta)


def _add_tokenizer(w: GGUFWriter, proto, cfg: GemmaConfig, add_eos: bool = False) -> None:
    """SentencePiece ModelProto -> tokenizer.ggml.* (llama.cpp spells user-defined '▁' as ' ')."""
    tokens, scores, types = [], [], []
    for p in proto.pieces:
        piece = p.piece.replace("\u2581", " ") if p.type == 4 else p.piece
        tokens.append(piece)
        scores.append(p.score)
        types.append(_SPM_TO_GGUF_TYPE.get(p.type, 1))
    spec = proto.trainer_spec
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_string("tokenizer.ggml.pre", "default")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.scores", scores)
    w.add_array("tokenizer.ggml.token_type", types)
    w.add_uint32(
        "tokenizer.ggml.bos_token_id", spec.bos_id if spec.bos_id >= 0 else cfg.bos_token_id
    )
    w.add_uint32(
        "tokenizer.ggml.eos_token_id", spec.eos_id if spec.eos_id >= 0 else cfg.eos_token_id
    )
    w.add_uint32("tokenizer.ggml.unknown_token_id", max(spec.unk_id, 0))
    w.add_uint32(
        "tokenizer.ggml.padding_token_id", spec.pad_id if spec.pad_id >= 0 else cfg.pad_token_id
    )
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("tokenizer.ggml.add_sep_token", False)
    w.add_bool("tokenizer.ggml.add_eos_token", add_eos)
    w.add_bool("tokenizer.ggml.add_space_prefix", False)


def _stored(t: torch.Tensor, name: str, qtype: GGMLQuantizationType, shift: bool) -> np.ndarray:
    """The bytes (or numbers) GGUF stores for one of our tensors."""
    x = t.detach().to(torch.float32)
    if shift and is_norm(name):
        x = x + 1.0  # llama.cpp's Gemma 1-3 convention (Gemma 4 stores the scale itself)
    return quantize(x.numpy(), qtype)


def write_gguf(
    config: GemmaConfig,
    tensors: dict[str, torch.Tensor],
    dst: Path,
    qtype: GGMLQuantizationType = GGMLQuantizationType.F16,
    tokenizer_proto=None,
    name: str | None = None,
    overwrite: bool = False,
    head: dict[str, torch.Tensor] | None = None,
    pooling_type: int | None = None,
    add_eos: bool = False,
) -> dict[str, str]:
    """Write `tensors` (our names) as a GGUF file at `dst`; returns name -> stored type name.

    `qtype` is the type of the 2-D tensors (those whose rows it cannot divide fall back to
    Q8_0 or F16); 1-D tensors are F32. `tokenizer_proto` is a SentencePiece ModelProto.
    `head` (EmbeddingGemma): its Dense weights under llama.cpp's names (`dense_2.weight`,
    `dense_3.weight`), with their in/out sizes; `pooling_type`: llama.cpp's pooling enum;
    `add_eos`: the tokenizer appends <eos> (EmbeddingGemma's does).
    """
    head = head or {}
    plan = {n: storage_type(tuple(t.shape), qtype) for n, t in {**tensors, **head}.items()}
    # the MoE router stays float32, as llama.cpp keeps ffn_gate_inp: exact expert choice
    plan.update({n: GGMLQuantizationType.F32 for n in tensors if keeps_float(n)})
    with checked_atomic_path(dst, overwrite, is_dir=False) as out:
        w = GGUFWriter(out, gguf_arch(config))
        w.add_type("model")
        w.add_name(name or f"{gguf_arch(config)} ({config.num_layers} layers)")
        _add_hparams(w, config)
        for n, t in head.items():
            w.add_dense_features_dims(n.removesuffix(".weight"), t.shape[1], t.shape[0])
        if pooling_type is not None:
            w.add_uint32(f"{gguf_arch(config)}.pooling_type", pooling_type)
        if tokenizer_proto is not None:
            _add_tokenizer(w, tokenizer_proto, config, add_eos)
        w.add_uint32("general.file_type", FILE_TYPE.get(qtype, 1))
        w.add_uint32("general.quantization_version", 2)
        named = [(ours_to_gguf(n), n, t) for n, t in tensors.items()]
        named += [(n, n, t) for n, t in head.items()]
        if config.family == "gemma4" and "global" in config.layer_types:
            extra = {"rope_freqs.weight": rope_freqs(config)}
            plan.update({n: storage_type(tuple(t.shape), qtype) for n, t in extra.items()})
            named += [(n, n, t) for n, t in extra.items()]
        for gguf_name, n, t in named:
            block, size = GGML_QUANT_SIZES[plan[n]]
            shape = tuple(t.shape)
            nbytes = int(np.prod(shape)) // block * size
            w.add_tensor_info(gguf_name, shape, np.dtype(np.float32), nbytes, plan[n])
        w.write_header_to_file(out)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for _, n, t in named:
            w.write_tensor_data(_stored(t, n, plan[n], config.norm_offset == 1.0))
        w.close()
    return {n: q.name for n, q in plan.items()}
