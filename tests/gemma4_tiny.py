"""Tiny random Gemma 4 text models, built and saved by transformers itself, one per feature
combination. Every weight is redrawn at a magnitude where it matters (norm scales around 1,
layer scalars and router scales away from 1), so a missing or misplaced part shows in the
logits."""

from __future__ import annotations

import torch

from tests.tiny import VOCAB

SLIDING, GLOBAL = "sliding_attention", "full_attention"

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32, global_head_dim=32, sliding_window=8,
              max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=1,
              hidden_size_per_layer_input=0, vocab_size_per_layer_input=VOCAB,
              layer_types=[SLIDING, SLIDING, GLOBAL, SLIDING, SLIDING, GLOBAL],
              num_hidden_layers=6)  # fmt: skip

# (a) per-layer embeddings + KV sharing (layers 3-5 reuse 1 and 2) + double-wide MLP + soft-cap
# (b) mixture of experts beside the dense MLP
# (c) dense, global layers with keys as values, their own head width and KV-head count
# (d) bidirectional attention over the whole input
CASES: dict[str, dict] = {
    "ple-kvshare": dict(hidden_size_per_layer_input=32, num_kv_shared_layers=3,
                        use_double_wide_mlp=True, final_logit_softcapping=30.0),
    "moe": dict(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32),
    "k-eq-v": dict(attention_k_eq_v=True, global_head_dim=64, num_global_key_value_heads=1),
    "bidirectional": dict(use_bidirectional_attention="all"),
}  # fmt: skip


def gemma4_config(case: str, **overrides):
    from transformers import Gemma4TextConfig

    return Gemma4TextConfig(**{**COMMON, **CASES[case], **overrides})


def build_gemma4(config, seed: int = 0):
    """A transformers Gemma4ForCausalLM with weights of realistic magnitude, eager attention."""
    from transformers import Gemma4ForCausalLM

    torch.manual_seed(seed)
    model = Gemma4ForCausalLM._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("router.scale"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))  # Gemma 4 stores scales, not offsets
            elif name.endswith("per_expert_scale"):
                p.uniform_(0.5, 1.5)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, p.shape[-1] ** -0.5)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)
    return model.eval()
