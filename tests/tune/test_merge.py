"""`opengemma merge`: the exported model equals the base with the adapter applied."""

from __future__ import annotations

import subprocess
import sys

import torch

import opengemma
from opengemma.lora import LoRAConfig, apply_lora, lora_modules, save_adapter
from tests.tiny import random_ids


def test_merge_exports_the_adapted_model(tiny_dir, tmp_path):
    model = opengemma.load(tiny_dir).model
    cfg = LoRAConfig(r=4, alpha=8, dropout=0.0)
    apply_lora(model, cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, m in lora_modules(model):
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.05)
    save_adapter(model, cfg, tmp_path / "adapter")
    ids = random_ids(16)
    with torch.no_grad():
        expected = model(ids)[0]
    out = tmp_path / "merged"
    cmd = [sys.executable, "-m", "opengemma.cli", "merge", str(tiny_dir), str(tmp_path / "adapter"),
           str(out), "--dtype", "f32"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    merged = opengemma.load(out, dtype="float32")
    with torch.no_grad():
        got = merged.model(ids)[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (out / "tokenizer.model").is_file()
    bad = subprocess.run(cmd[:4] + [str(tiny_dir), str(tmp_path / "nope"), str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
