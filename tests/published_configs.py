"""The published config.json of each Gemma model, as literal numbers (never derived from
opengemma's presets): the oracle of tests/test_config.py.

Source of each: https://huggingface.co/google/<repo>/blob/main/config.json, where <repo> is the
first item of each entry; for the multimodal Gemma 3 (4B and up) and Gemma 4 repositories, its
`text_config`. Fields the hub files leave to transformers' defaults are written out with the
value transformers gives them.
"""

from __future__ import annotations

# fmt: off
_SW, _FULL = "sliding_attention", "full_attention"
G4_ROPE = {"full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
PUBLISHED = {
    # google/gemma-2b, google/gemma-7b (Gemma 1: MQA at 2B, full MHA at 7B; vocab 256000)
    "gemma-2b": ("gemma-2b", {
        "model_type": "gemma", "vocab_size": 256000, "hidden_size": 2048,
        "intermediate_size": 16384, "num_hidden_layers": 18, "num_attention_heads": 8,
        "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1,
        "pad_token_id": 0}),
    "gemma-7b": ("gemma-7b", {
        "model_type": "gemma", "vocab_size": 256000, "hidden_size": 3072,
        "intermediate_size": 24576, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 16, "head_dim": 256, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 2, "eos_token_id": 1,
        "pad_token_id": 0}),
    # google/gemma-2-2b, -9b, -27b (sliding 4096 on every other layer, softcaps 50 / 30)
    "gemma2-2b": ("gemma-2-2b", {
        "model_type": "gemma2", "vocab_size": 256000, "hidden_size": 2304,
        "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 8192, "rope_theta": 10000.0}),
    "gemma2-9b": ("gemma-2-9b", {
        "model_type": "gemma2", "vocab_size": 256000, "hidden_size": 3584,
        "intermediate_size": 14336, "num_hidden_layers": 42, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 8192, "rope_theta": 10000.0}),
    "gemma2-27b": ("gemma-2-27b", {
        "model_type": "gemma2", "vocab_size": 256000, "hidden_size": 4608,
        "intermediate_size": 36864, "num_hidden_layers": 46, "num_attention_heads": 32,
        "num_key_value_heads": 16, "head_dim": 128, "query_pre_attn_scalar": 144,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0, "max_position_embeddings": 8192, "rope_theta": 10000.0}),
    # google/gemma-3-270m, google/gemma-3-1b-pt (text-only, 262144 rows, window 512)
    "gemma3-270m": ("gemma-3-270m", {
        "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
        "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 512, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": None, "sliding_window_pattern": 6}),
    "gemma3-1b": ("gemma-3-1b-pt", {
        "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152,
        "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 512, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": None, "sliding_window_pattern": 6}),
    # google/gemma-3-4b-pt, -12b-pt, -27b-pt: text_config (262208 rows, window 1024, linear
    # RoPE scaling 8 on global layers)
    "gemma3-4b": ("gemma-3-4b-pt", {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 2560,
        "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 6}),
    "gemma3-12b": ("gemma-3-12b-pt", {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 3840,
        "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 6}),
    "gemma3-27b": ("gemma-3-27b-pt", {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 5376,
        "intermediate_size": 21504, "num_hidden_layers": 62, "num_attention_heads": 32,
        "num_key_value_heads": 16, "head_dim": 128, "query_pre_attn_scalar": 168,
        "sliding_window": 1024, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 6}),
    # google/gemma-4-E4B-it, -26B-A4B-it, -31B-it: text_config (E2B: its own test below)
    "gemma4-e4b": ("gemma-4-E4B-it", {
        "model_type": "gemma4_text", "vocab_size": 262144, "hidden_size": 2560,
        "intermediate_size": 10240, "num_hidden_layers": 42, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 256, "global_head_dim": 512,
        "num_global_key_value_heads": None, "attention_k_eq_v": False, "sliding_window": 512,
        "hidden_size_per_layer_input": 256, "vocab_size_per_layer_input": 262144,
        "num_kv_shared_layers": 18, "use_double_wide_mlp": False,
        "max_position_embeddings": 131072, "final_logit_softcapping": 30.0,
        "layer_types": ([_SW] * 5 + [_FULL]) * 7, "enable_moe_block": False,
        "rope_parameters": G4_ROPE}),
    "gemma4-26b-a4b": ("gemma-4-26B-A4B-it", {
        "model_type": "gemma4_text", "vocab_size": 262144, "hidden_size": 2816,
        "intermediate_size": 2112, "num_hidden_layers": 30, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "global_head_dim": 512,
        "num_global_key_value_heads": 2, "attention_k_eq_v": True, "sliding_window": 1024,
        "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
        "use_double_wide_mlp": False, "max_position_embeddings": 262144,
        "final_logit_softcapping": 30.0, "layer_types": ([_SW] * 5 + [_FULL]) * 5,
        "enable_moe_block": True, "num_experts": 128, "top_k_experts": 8,
        "moe_intermediate_size": 704, "rope_parameters": G4_ROPE}),
    "gemma4-31b": ("gemma-4-31B-it", {
        "model_type": "gemma4_text", "vocab_size": 262144, "hidden_size": 5376,
        "intermediate_size": 21504, "num_hidden_layers": 60, "num_attention_heads": 32,
        "num_key_value_heads": 16, "head_dim": 256, "global_head_dim": 512,
        "num_global_key_value_heads": 4, "attention_k_eq_v": True, "sliding_window": 1024,
        "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
        "use_double_wide_mlp": False, "max_position_embeddings": 262144,
        "final_logit_softcapping": 30.0, "layer_types": ([_SW] * 5 + [_FULL]) * 10,
        "enable_moe_block": False, "rope_parameters": G4_ROPE}),
}
# fmt: on
