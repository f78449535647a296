"""Declarative key maps from each checkpoint format onto opengemma's module names.

`{}` stands for a layer index. opengemma's names are Hugging Face's without the `model.` prefix,
so the HF map is almost the identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# llama.cpp GGUF tensor names -> opengemma names (all three generations).
GGUF_TO_OURS: dict[str, str] = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "blk.{}.attn_norm.weight": "layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "layers.{}.self_attn.o_proj.weight",
    "blk.{}.attn_q_norm.weight": "layers.{}.self_attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "layers.{}.self_attn.k_norm.weight",
    "blk.{}.post_attention_norm.weight": "layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_norm.weight": "layers.{}.pre_feedforward_layernorm.weight",
    "blk.{}.ffn_gate.weight": "layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "layers.{}.mlp.down_proj.weight",
    "blk.{}.post_ffw_norm.weight": "layers.{}.post_feedforward_layernorm.weight",
    # Gemma 4 (llama.cpp's `gemma4` architecture)
    "blk.{}.layer_output_scale.weight": "layers.{}.layer_scalar",
    "blk.{}.ffn_gate_inp.weight": "layers.{}.router.proj.weight",
    "blk.{}.ffn_gate_inp.scale": "layers.{}.router.scale",
    "blk.{}.ffn_down_exps.scale": "layers.{}.router.per_expert_scale",
    "blk.{}.ffn_gate_up_exps.weight": "layers.{}.experts.gate_up_proj",
    "blk.{}.ffn_down_exps.weight": "layers.{}.experts.down_proj",
    "blk.{}.pre_ffw_norm_2.weight": "layers.{}.pre_feedforward_layernorm_2.weight",
    "blk.{}.post_ffw_norm_1.weight": "layers.{}.post_feedforward_layernorm_1.weight",
    "blk.{}.post_ffw_norm_2.weight": "layers.{}.post_feedforward_layernorm_2.weight",
    "per_layer_token_embd.weight": "embed_tokens_per_layer.weight",
    "per_layer_model_proj.weight": "per_layer_model_projection.weight",
    "per_layer_proj_norm.weight": "per_layer_projection_norm.weight",
    "blk.{}.inp_gate.weight": "layers.{}.per_layer_input_gate.weight",
    "blk.{}.proj.weight": "layers.{}.per_layer_projection.weight",
    "blk.{}.post_norm.weight": "layers.{}.post_per_layer_input_norm.weight",
}
# Tensors of a Gemma 4 GGUF that the decoder derives rather than holds: the proportional-RoPE
# frequency factors of the global layers (opengemma computes them from the config).
GGUF_DERIVED = ("rope_freqs.weight",)

# gemma_pytorch (.ckpt) state-dict keys -> Hugging Face keys (then mapped by `hf_to_ours`). Its
# fused `qkv_proj` is split into q/k/v by the loader; the rest is a rename.
_L = "model.layers.{}."
CKPT_TO_HF: dict[str, str] = {
    "embedder.weight": "model.embed_tokens.weight",
    "model.norm.weight": "model.norm.weight",
    _L + "self_attn.qkv_proj.weight": _L + "self_attn.qkv_proj.weight",
    _L + "self_attn.o_proj.weight": _L + "self_attn.o_proj.weight",
    _L + "self_attn.query_norm.weight": _L + "self_attn.q_norm.weight",
    _L + "self_attn.key_norm.weight": _L + "self_attn.k_norm.weight",
    _L + "mlp.gate_proj.weight": _L + "mlp.gate_proj.weight",
    _L + "mlp.up_proj.weight": _L + "mlp.up_proj.weight",
    _L + "mlp.down_proj.weight": _L + "mlp.down_proj.weight",
    _L + "input_layernorm.weight": _L + "input_layernorm.weight",
    _L + "post_attention_layernorm.weight": _L + "post_attention_layernorm.weight",
    _L + "pre_feedforward_layernorm.weight": _L + "pre_feedforward_layernorm.weight",
    _L + "post_feedforward_layernorm.weight": _L + "post_feedforward_layernorm.weight",
}
# The fused attention projection of a gemma_pytorch layer, as our name with `{}` for q/k/v.
CKPT_QKV = "layers.{}.self_attn.qkv_proj.weight"

# Prefixes under which Hugging Face checkpoints keep the text decoder (CausalLM, and the
# multimodal Gemma 3 classes of transformers 4.x and 5.x).
HF_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Tensors a text-only model does not use: the tied output copy, and the vision and audio
# parts of the multimodal Gemma 3 and Gemma 4 checkpoints (HF_TOWERS, skipped with a notice).
HF_TOWERS = re.compile(
    r"^(model\.)?(vision_tower|audio_tower|multi_modal_projector|embed_vision|embed_audio)\..*$"
)
HF_IGNORED = re.compile(r"^lm_head\.weight$|" + HF_TOWERS.pattern)


def _compile(table: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    out = []
    for src, dst in table.items():
        pattern = re.compile("^" + re.escape(src).replace(r"\{\}", r"(\d+)") + "$")
        out.append((pattern, dst))
    return out


_GGUF = _compile(GGUF_TO_OURS)
_OURS_TO_GGUF = _compile({v: k for k, v in GGUF_TO_OURS.items()})
_CKPT = _compile(CKPT_TO_HF)


def _lookup(table: list[tuple[re.Pattern[str], str]], name: str) -> str | None:
    for pattern, dst in table:
        m = pattern.match(name)
        if m:
            return dst.replace("{}", m.group(1)) if m.groups() else dst
    return None


def gguf_to_ours(name: str) -> str | None:
    """Our name for a GGUF tensor name, or None when the name is not a Gemma tensor."""
    return _lookup(_GGUF, name)


def ours_to_gguf(name: str) -> str:
    """The llama.cpp GGUF name of one of our tensor names."""
    out = _lookup(_OURS_TO_GGUF, name)
    if out is None:
        raise KeyError(f"no GGUF name for tensor {name}")
    return out


def ckpt_to_hf(name: str) -> str | None:
    """The Hugging Face key of a gemma_pytorch key, or None when it is not a Gemma tensor."""
    return _lookup(_CKPT, name)


def ours_to_hf(name: str, sandwich_norm: bool) -> str:
    """The Hugging Face key (`model.` prefix, transformers' norm names) of one of our names."""
    if not sandwich_norm:
        name = name.replace(".pre_feedforward_layernorm.", ".post_attention_layernorm.")
    return "model." + name


def hf_to_ours(name: str, sandwich_norm: bool) -> str | None:
    """Our name for a Hugging Face key; None for keys a text model ignores."""
    if HF_IGNORED.match(name):
        return None
    for prefix in HF_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if not sandwich_norm:
        # Gemma 1 calls its pre-MLP norm `post_attention_layernorm`; Gemma 2/3 use that name for
        # the norm after attention and call the pre-MLP norm `pre_feedforward_layernorm`.
        name = name.replace(".post_attention_layernorm.", ".pre_feedforward_layernorm.")
    return name


def keeps_float(name: str) -> bool:
    """Matrices never held as int8 blocks: the MoE router (exact expert choice)."""
    return ".router." in name


def is_norm(name: str) -> bool:
    """True for RMSNorm weights (stored as w + 1 by llama.cpp's Gemma converters)."""
    return name.endswith("norm.weight")


def describe(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
