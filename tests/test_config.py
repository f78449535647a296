from __future__ import annotations

import json

import pytest

from opengemma.config import PRESETS, GemmaConfig
from opengemma.errors import ConfigError

NAMES = ["gemma-2b", "gemma-7b", "gemma2-2b", "gemma2-9b", "gemma2-27b", "gemma3-270m",
         "gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b", "gemma4-e2b", "gemma4-e4b",
         "gemma4-26b-a4b", "gemma4-31b"]  # fmt: skip


def test_all_presets_present():
    assert sorted(PRESETS) == sorted(NAMES)


def _hf_dict(cfg: GemmaConfig) -> dict:
    """The preset expressed through transformers' own config class, as config.json would."""
    import transformers as tf

    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        query_pre_attn_scalar=cfg.query_pre_attn_scalar,
    )
    if cfg.family == "gemma":
        common.pop("query_pre_attn_scalar")
        return tf.GemmaConfig(**common).to_dict()
    if cfg.family == "gemma2":
        return tf.Gemma2Config(**common, sliding_window=cfg.sliding_window).to_dict()
    if cfg.family == "gemma4":
        common.pop("query_pre_attn_scalar")
        kinds = [{"sliding": "sliding_attention", "global": "full_attention"}[k]
                 for k in cfg.layer_types]  # fmt: skip
        return tf.Gemma4TextConfig(
            **common, sliding_window=cfg.sliding_window, layer_types=kinds,
            global_head_dim=cfg.global_head_dim, num_global_key_value_heads=cfg.num_global_kv_heads,
            attention_k_eq_v=cfg.attention_k_eq_v, final_logit_softcapping=30.0,
            hidden_size_per_layer_input=cfg.hidden_size_per_layer_input,
            vocab_size_per_layer_input=262_144, num_kv_shared_layers=cfg.num_kv_shared_layers,
            use_double_wide_mlp=cfg.double_wide_mlp, enable_moe_block=bool(cfg.num_experts),
            num_experts=cfg.num_experts or None, top_k_experts=cfg.top_k_experts or None,
            moe_intermediate_size=cfg.moe_intermediate_size or None,
        ).to_dict()  # fmt: skip
    full = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling != 1.0:
        full = {"rope_type": "linear", "factor": cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    rope = {
        "full_attention": full,
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    cls = tf.Gemma3TextConfig
    return cls(**common, sliding_window=cfg.sliding_window, rope_parameters=rope).to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_from_hf_reproduces_preset(name, tmp_path):
    preset = PRESETS[name]
    (tmp_path / "config.json").write_text(json.dumps(_hf_dict(preset)))
    assert GemmaConfig.from_hf(tmp_path) == preset


def test_legacy_hf_fields():
    """transformers 4.x wrote rope_theta / rope_local_base_freq / rope_scaling / pattern."""
    d = {"model_type": "gemma3", "text_config": {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 2560,
        "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 1024, "sliding_window_pattern": 6, "rope_theta": 1e6,
        "rope_local_base_freq": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "max_position_embeddings": 131072}}  # fmt: skip
    assert GemmaConfig.from_hf(d) == PRESETS["gemma3-4b"]


def test_gemma4_e2b_hub_config_gives_the_preset():
    """The text_config of google/gemma-4-E2B-it's config.json, as published."""
    text = {"model_type": "gemma4_text", "hidden_size": 1536, "num_hidden_layers": 35,
            "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256,
            "global_head_dim": 512, "num_global_key_value_heads": None,
            "attention_k_eq_v": False, "sliding_window": 512, "vocab_size": 262144,
            "vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256,
            "num_kv_shared_layers": 20, "use_double_wide_mlp": True, "intermediate_size": 6144,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "final_logit_softcapping": 30.0, "pad_token_id": 0, "bos_token_id": 2,
            "eos_token_id": 1, "tie_word_embeddings": True,
            "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7,
            "rope_parameters": {
                "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1e6,
                                   "rope_type": "proportional"},
                "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}}  # fmt: skip
    d = {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
         "text_config": text, "eos_token_id": [1, 106]}  # fmt: skip
    assert GemmaConfig.from_hf(d) == PRESETS["gemma4-e2b"]


def test_known_numbers():
    """Facts that are easy to get wrong (DESIGN.md)."""
    assert PRESETS["gemma-2b"].num_kv_heads == 1 and PRESETS["gemma-7b"].num_kv_heads == 16
    assert PRESETS["gemma2-27b"].query_pre_attn_scalar == 144
    assert PRESETS["gemma2-27b"].head_dim == 128
    assert PRESETS["gemma2-9b"].layer_types[:2] == ("sliding", "global")
    g3 = PRESETS["gemma3-1b"]
    assert g3.layer_types[:6] == ("sliding",) * 5 + ("global",)
    assert (g3.sliding_window, g3.rope_theta, g3.rope_local_theta) == (512, 1e6, 1e4)
    assert PRESETS["gemma3-4b"].rope_scaling == 8.0 and PRESETS["gemma3-1b"].rope_scaling == 1.0
    assert PRESETS["gemma3-12b"].sliding_window == 1024
    assert (
        PRESETS["gemma2-2b"].final_logit_softcap == 30
        and PRESETS["gemma2-2b"].attn_logit_softcap == 50
    )


def test_gguf_metadata_of_embedded_model(embedded_path):
    from opengemma.checkpoint.gguf_reader import GGUFFile

    gf = GGUFFile(embedded_path)
    cfg = GemmaConfig.from_gguf_metadata(gf.metadata, gf.tensors["token_embd.weight"].shape[0])
    assert cfg.replace(rms_norm_eps=1e-6) == PRESETS["gemma3-270m"]


def test_round_trip_dict():
    cfg = PRESETS["gemma2-9b"]
    assert GemmaConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"model_type": "gemma"}, "lacks required field"),
    ],
)
def test_bad_hf_config(bad, message):
    with pytest.raises(ConfigError, match=message):
        GemmaConfig.from_hf(bad)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="choose one of"):
        GemmaConfig.from_preset("gemma4-1t")


def test_inconsistent_config():
    with pytest.raises(ConfigError, match="multiple"):
        PRESETS["gemma-2b"].replace(num_kv_heads=3)
