"""Tiny random Gemma models built with transformers' own classes, saved as real checkpoints.

Weights are redrawn at magnitudes that make every part of the network matter (transformers'
default init leaves logits near zero, where almost any bug would pass unnoticed).
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 512


def family_config(family: str, **overrides):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, head_dim=16,
                  num_attention_heads=4, max_position_embeddings=256, pad_token_id=0,
                  bos_token_id=2, eos_token_id=1)  # fmt: skip
    if family == "gemma":
        cfg = dict(common, num_hidden_layers=3, num_key_value_heads=1)
        cls = tf.GemmaConfig
    elif family == "gemma2":
        cfg = dict(common, num_hidden_layers=4, num_key_value_heads=2, sliding_window=8,
                   query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
                   final_logit_softcapping=30.0)  # fmt: skip
        cls = tf.Gemma2Config
    elif family == "gemma3":
        cfg = dict(common, num_hidden_layers=7, num_key_value_heads=2, sliding_window=8,
                   query_pre_attn_scalar=32,
                   rope_parameters={
                       "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                       "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                   })  # fmt: skip
        cls = tf.Gemma3TextConfig
    else:
        raise ValueError(family)
    cfg.update(overrides)
    return cls(**cfg)


def build_reference(config, seed: int = 0, norm_scale: float = 0.5, qk_scale: float = 1.0):
    """A transformers CausalLM with weights of realistic magnitude, eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, norm_scale)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5)
                if "q_proj" in name or "k_proj" in name:
                    p.mul_(qk_scale)
    return model.eval()


def save_reference(model, path: Path, max_shard_size: str | None = None) -> Path:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(path), safe_serialization=True, **kwargs)
    return path


def ours_from_dir(path: Path, dtype=torch.float32):
    """Load a checkpoint directory through the production loader (no tokenizer needed)."""
    from opengemma.build import build_model
    from opengemma.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, dtype)
    return build_model(ckpt, dtype, "cpu")


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (1, n), generator=g)
    ids[0, 0] = 2  # BOS
    return ids
