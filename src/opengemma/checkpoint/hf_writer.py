"""Write a Hugging Face model directory: config.json, safetensors shards + index, tokenizer.model.

The output loads in `transformers` (GemmaForCausalLM / Gemma2ForCausalLM / Gemma3ForCausalLM)
and in opengemma. Gemma norm weights use the same `1 + w` convention in both, so they are
written as they are held.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint.keymap import ours_to_hf
from opengemma.checkpoint.writing import checked_atomic_path
from opengemma.config import GemmaConfig

DEFAULT_SHARD_BYTES = 2 * 1000**3  # 2 GB per safetensors shard
_ARCH = {"gemma": ("gemma", "GemmaForCausalLM", "hidden_act"),
         "gemma2": ("gemma2", "Gemma2ForCausalLM", "hidden_activation"),
         "gemma3": ("gemma3_text", "Gemma3ForCausalLM", "hidden_activation"),
         "gemma4": ("gemma4_text", "Gemma4ForCausalLM", "hidden_activation")}  # fmt: skip
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def hf_config_dict(cfg: GemmaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """config.json for `cfg`, readable by transformers 4.5x (rope_theta, rope_local_base_freq,
    rope_scaling) and 5.x (rope_parameters, layer_types)."""
    model_type, arch, act_key = _ARCH[cfg.family]
    d: dict[str, Any] = {
        "architectures": [arch], "model_type": model_type, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
        act_key: "gelu_pytorch_tanh", "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": True,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id, "attention_bias": False, "torch_dtype":
        _DTYPE_NAMES[dtype], "rope_theta": cfg.rope_theta,
    }  # fmt: skip
    if cfg.family == "gemma":
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        return d
    d.update(
        query_pre_attn_scalar=_int_if_whole(cfg.query_pre_attn_scalar),
        sliding_window=cfg.sliding_window,
        layer_types=[{"sliding": "sliding_attention", "global": "full_attention"}[k]
                     for k in cfg.layer_types],
        attn_logit_softcapping=cfg.attn_logit_softcap,
        final_logit_softcapping=cfg.final_logit_softcap,
    )  # fmt: skip
    if cfg.family == "gemma2":
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        return d
    full: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling != 1.0:
        full = {"rope_type": "linear", "factor": cfg.rope_scaling, "rope_theta": cfg.rope_theta}
        d["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_scaling}
    d["rope_parameters"] = {
        "full_attention": full,
        "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta},
    }
    d["rope_local_base_freq"] = cfg.rope_local_theta
    return d if cfg.family != "gemma4" else _gemma4_fields(cfg, d)


def _gemma4_fields(cfg: GemmaConfig, d: dict[str, Any]) -> dict[str, Any]:
    """The Gemma 4 keys, as the published config.json files spell them."""
    for key in ("query_pre_attn_scalar", "attn_logit_softcapping", "rope_local_base_freq"):
        d.pop(key)
    full = {"rope_type": "proportional", "partial_rotary_factor": cfg.rope_partial_factor,
            "rope_theta": cfg.rope_theta}  # fmt: skip
    if cfg.rope_scaling != 1.0:
        full["factor"] = cfg.rope_scaling
    d["rope_parameters"]["full_attention"] = full
    d.pop("rope_scaling", None)
    d.update(
        global_head_dim=cfg.global_head_dim or cfg.head_dim,
        num_global_key_value_heads=cfg.num_global_kv_heads, attention_k_eq_v=cfg.attention_k_eq_v,
        hidden_size_per_layer_input=cfg.hidden_size_per_layer_input,
        vocab_size_per_layer_input=cfg.vocab_size_per_layer_input or cfg.vocab_size,
        num_kv_shared_layers=cfg.num_kv_shared_layers, use_double_wide_mlp=cfg.double_wide_mlp,
        enable_moe_block=bool(cfg.num_experts), num_experts=cfg.num_experts or None,
        top_k_experts=cfg.top_k_experts or None,
        moe_intermediate_size=cfg.moe_intermediate_size or None,
        use_bidirectional_attention="all" if cfg.use_bidirectional_attention else None,
    )  # fmt: skip
    return d


def _int_if_whole(x: float) -> int | float:
    """transformers' configs type the query scale as int: write 256, not 256.0."""
    return int(x) if float(x).is_integer() else x


def _shards(tensors: dict[str, torch.Tensor], dtype: torch.dtype, limit: int) -> list[list[str]]:
    """Names grouped into shards of at most `limit` bytes (a larger tensor gets its own)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in tensors:
        n = tensors[name].numel() * dtype.itemsize
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


def write_hf(
    config: GemmaConfig,
    tensors: dict[str, torch.Tensor],
    dst: Path,
    dtype: torch.dtype = torch.bfloat16,
    tokenizer_model: bytes | None = None,
    overwrite: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write `tensors` (our names) as a Hugging Face directory at `dst`, atomically.

    `tokenizer_model` is a serialized SentencePiece model, written as tokenizer.model.
    """
    from safetensors.torch import save_file

    hf_names = {name: ours_to_hf(name, config.sandwich_norm) for name in tensors}
    with checked_atomic_path(dst, overwrite, is_dir=True) as out:
        groups = _shards(tensors, dtype, shard_bytes)
        weight_map, total = {}, 0
        for i, group in enumerate(groups):
            fname = ("model.safetensors" if len(groups) == 1
                     else f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors")  # fmt: skip
            shard = {hf_names[n]: tensors[n].to(dtype).contiguous() for n in group}
            save_file(shard, str(out / fname), metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in shard.values())
            weight_map.update({k: fname for k in shard})
            del shard
        if len(groups) > 1:
            index = {
                "metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        cfg_json = json.dumps(hf_config_dict(config, dtype), indent=2)
        (out / "config.json").write_text(cfg_json + "\n", encoding="utf-8")
        if tokenizer_model is not None:
            (out / "tokenizer.model").write_bytes(tokenizer_model)
    return dst
