from __future__ import annotations

import json

import pytest

from opengemma.config import PRESETS, GemmaConfig
from opengemma.errors import ConfigError
from tests.published_configs import PUBLISHED

NAMES = ["gemma-2b", "gemma-7b", "gemma2-2b", "gemma2-9b", "gemma2-27b", "gemma3-270m",
         "gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b", "gemma4-e2b", "gemma4-e4b",
         "gemma4-26b-a4b", "gemma4-31b"]  # fmt: skip


def test_all_presets_present():
    assert sorted(PRESETS) == sorted(NAMES)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_gives_the_preset(name, tmp_path):
    """The model's config.json as published (tests/published_configs.py names the repository)
    reads as the preset, as the file itself and as transformers' own config class loads it."""
    import transformers

    repo, published = PUBLISHED[name]
    (tmp_path / "config.json").write_text(json.dumps(published))
    assert GemmaConfig.from_hf(tmp_path) == PRESETS[name], repo
    fields = {k: v for k, v in published.items() if k != "model_type"}
    via_hf = transformers.AutoConfig.for_model(published["model_type"], **fields).to_dict()
    assert GemmaConfig.from_hf(via_hf) == PRESETS[name], repo


def test_every_preset_has_a_published_source():
    assert set(PUBLISHED) | {"gemma4-e2b"} == set(PRESETS)  # E2B: its hub file, below


def test_transformers_defaults_are_the_models_they_describe():
    """transformers' GemmaConfig() is google/gemma-7b (its docstring says so) and
    Gemma2Config() carries google/gemma-2-2b's numbers: the same presets through their code."""
    import transformers

    assert GemmaConfig.from_hf(transformers.GemmaConfig().to_dict()) == PRESETS["gemma-7b"]
    assert GemmaConfig.from_hf(transformers.Gemma2Config().to_dict()) == PRESETS["gemma2-2b"]


# The config.json of google/gemma-3-4b-pt and -12b-pt as published: the text_config names only
# what differs from transformers' Gemma3TextConfig defaults.
SHORT_FORMS = {
    "gemma3-4b": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                  "num_hidden_layers": 34, "sliding_window": 1024,
                  "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "gemma3-12b": {"hidden_size": 3840, "intermediate_size": 15360, "model_type": "gemma3_text",
                   "num_attention_heads": 16, "num_hidden_layers": 48, "num_key_value_heads": 8,
                   "sliding_window": 1024, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHORT_FORMS))
def test_a_text_config_that_relies_on_transformers_defaults(name):
    """Read as written and as transformers fills it in, the short text_config is the preset."""
    import transformers

    d = {"model_type": "gemma3", "eos_token_id": [1, 106], "text_config": SHORT_FORMS[name]}
    assert GemmaConfig.from_hf(d) == PRESETS[name]
    filled = transformers.Gemma3TextConfig(**SHORT_FORMS[name]).to_dict()
    assert GemmaConfig.from_hf(filled) == PRESETS[name]


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
