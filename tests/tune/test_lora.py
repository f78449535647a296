"""LoRA wrapping, merge/unmerge, the PEFT file format, and parity with `peft` itself."""

from __future__ import annotations

import json

import pytest
import torch

import opengemma
from opengemma.lora import (
    AdapterError,
    LoRAConfig,
    adapter_state,
    apply_lora,
    load_adapter,
    lora_modules,
    merge,
    parse_targets,
    save_adapter,
    unload,
    unmerge,
)
from tests.tiny import random_ids

WEIGHTS = "adapter_model.safetensors"


def _randomize_adapters(model, seed: int = 1, scale: float = 0.05) -> None:
    """Give B (zero at init) random values so the adapter changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * scale)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids)[0]


def test_fresh_adapter_changes_nothing_and_trained_one_is_base_plus_update(tiny_dir):
    model = opengemma.load(tiny_dir).model
    ids = random_ids(20)
    base = _logits(model, ids)
    q = model.layers[2].self_attn.q_proj
    w = q.weight.clone()
    wrapped = apply_lora(
        model, LoRAConfig(r=4, alpha=8, dropout=0.0, targets=("q_proj", "down_proj"))
    )
    assert len(wrapped) == 2 * len(model.layers)
    assert torch.equal(_logits(model, ids), base)  # B == 0: exactly the base model
    assert [n for n, p in model.named_parameters() if p.requires_grad][0].endswith("lora_A.weight")
    _randomize_adapters(model)
    lora = model.layers[2].self_attn.q_proj
    x = torch.randn(3, w.shape[1])
    expected = x @ w.T + (x @ lora.lora_A.weight.T @ lora.lora_B.weight.T) * (8 / 4)
    torch.testing.assert_close(lora(x), expected, rtol=1e-5, atol=1e-5)
    adapted = _logits(model, ids)
    assert (adapted - base).abs().max() > 1e-2
    merge(model)
    torch.testing.assert_close(_logits(model, ids), adapted, rtol=1e-4, atol=1e-4)
    unmerge(model)
    torch.testing.assert_close(lora.base_layer.weight, w, rtol=0, atol=1e-6)
    unload(model)
    assert model.layers[2].self_attn.q_proj is q
    torch.testing.assert_close(_logits(model, ids), base, rtol=1e-4, atol=1e-4)


def test_save_load_roundtrip_uses_peft_keys(tiny_dir, tmp_path):
    model = opengemma.load(tiny_dir).model
    cfg = LoRAConfig(r=4, alpha=16, dropout=0.1, targets=parse_targets("q,v,gate"))
    apply_lora(model, cfg)
    _randomize_adapters(model)
    save_adapter(model, cfg, tmp_path, base_model="tiny")
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.6.mlp.gate_proj.lora_B.weight" in keys
    assert len(keys) == 2 * 3 * len(model.layers)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 16)
    assert config["target_modules"] == ["q_proj", "v_proj", "gate_proj"]

    fresh = opengemma.load(tiny_dir).model
    load_adapter(fresh, tmp_path)
    ids = random_ids(24, seed=3)
    model.eval()
    torch.testing.assert_close(_logits(fresh, ids), _logits(model, ids), rtol=0, atol=0)
    merged = opengemma.load(tiny_dir).model
    load_adapter(merged, tmp_path, merge_weights=True)
    torch.testing.assert_close(_logits(merged, ids), _logits(model, ids), rtol=1e-4, atol=1e-4)
    unload(merged, keep_merged=True)  # a plain GemmaModel with the adapted weights
    assert not list(lora_modules(merged))
    assert set(merged.state_dict()) == set(opengemma.load(tiny_dir).model.state_dict())
    torch.testing.assert_close(_logits(merged, ids), _logits(model, ids), rtol=1e-4, atol=1e-4)


def test_bad_adapters_are_clear_errors(tiny_dir, tmp_path):
    model = opengemma.load(tiny_dir).model
    with pytest.raises(AdapterError, match="adapter_config.json not found"):
        load_adapter(model, tmp_path)
    other = opengemma.load(tiny_dir).model
    cfg = LoRAConfig(r=4, targets=("q_proj",))
    apply_lora(other, cfg)
    save_adapter(other, cfg, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(dict(config, r=8)))
    with pytest.raises(AdapterError, match="has shape .* another model size"):
        load_adapter(opengemma.load(tiny_dir).model, tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps(dict(config, use_dora=True)))
    with pytest.raises(AdapterError, match="use_dora"):
        load_adapter(model, tmp_path)
    (tmp_path / "adapter_config.json").write_text(
        json.dumps(dict(config, target_modules=["k_proj"]))
    )
    with pytest.raises(AdapterError, match="missing .*k_proj"):
        load_adapter(opengemma.load(tiny_dir).model, tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        load_adapter(opengemma.load(tiny_dir).model, tmp_path)
    with pytest.raises(AdapterError, match="unknown LoRA targets"):
        parse_targets("q,lm_head")


def test_peft_loads_our_adapter_and_we_load_peft_s(tiny_dir, tmp_path):
    """Same base weights on both sides: our adapter under PeftModel gives our logits, and an
    adapter made and saved by peft gives peft's logits on our model."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    ids = random_ids(40, seed=5)  # longer than the sliding window (8)
    ours = opengemma.load(tiny_dir).model
    cfg = LoRAConfig(r=4, alpha=12, dropout=0.0)
    apply_lora(ours, cfg)
    _randomize_adapters(ours, scale=0.1)
    save_adapter(ours, cfg, tmp_path / "ours")
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    peft_model = PeftModel.from_pretrained(ref, str(tmp_path / "ours")).eval()
    with torch.no_grad():
        theirs = peft_model(ids).logits[0]
        base = peft_model.get_base_model()
        with peft_model.disable_adapter():
            plain = base(ids).logits[0]
    assert (theirs - plain).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(_logits(ours, ids), theirs, rtol=1e-4, atol=1e-4)

    ref2 = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager")
    pcfg = PeftLoraConfig(r=2, lora_alpha=5, target_modules=["k_proj", "up_proj"], lora_dropout=0.0)
    made = get_peft_model(ref2, pcfg)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in made.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    made.save_pretrained(str(tmp_path / "theirs"))
    with torch.no_grad():
        expected = made.eval()(ids).logits[0]
    ours2 = opengemma.load(tiny_dir).model
    loaded = load_adapter(ours2, tmp_path / "theirs")
    assert loaded.targets == ("k_proj", "up_proj") and loaded.scaling == 2.5
    torch.testing.assert_close(_logits(ours2, ids), expected, rtol=1e-4, atol=1e-4)
    from safetensors.torch import load_file

    assert set(adapter_state(ours2)) == set(load_file(tmp_path / "theirs" / WEIGHTS))


def test_load_with_adapter_merges_it(tiny_dir, tmp_path):
    """opengemma.load(..., adapter=DIR) gives the adapted model's logits, as plain linears."""
    model = opengemma.load(tiny_dir).model
    cfg = LoRAConfig(r=4, alpha=8, dropout=0.0)
    apply_lora(model, cfg)
    _randomize_adapters(model)
    save_adapter(model, cfg, tmp_path / "adapter")
    ids = random_ids(16)
    expected = _logits(model, ids)
    loaded = opengemma.load(tiny_dir, adapter=tmp_path / "adapter").model
    assert not list(lora_modules(loaded))
    torch.testing.assert_close(_logits(loaded, ids), expected, atol=1e-4, rtol=0)
    with pytest.raises(AdapterError):
        opengemma.load(tiny_dir, adapter=tmp_path / "missing")
