"""Writers: HF and GGUF outputs keep the logits, load in transformers, and round-trip.

Tolerances per case, as max |logit difference| over 24 positions of random tiny models:
float32 storage is exact (1e-4 absolute). Quantized cases are relative to the standard deviation
of the reference logits (about 20 on the model used): float16 0.5%, Q8_0 6%, Q6_K 20% (measured
0.1%, 3.2%, 9.5%). Random normal weights through 7 layers are a worst case for block
quantization; the per-tensor error of each type is pinned in test_quantized_layers.py.
"""

from __future__ import annotations

import pytest
import torch

from opengemma.build import build_model
from opengemma.checkpoint import load_checkpoint
from opengemma.checkpoint.convert import convert
from opengemma.cli import main
from tests.tiny import random_ids

FAMILIES = ["gemma", "gemma2", "gemma3"]


def _ours(path) -> torch.nn.Module:
    ckpt = load_checkpoint(path, torch.float32)
    return build_model(ckpt, torch.float32, "cpu")


@torch.no_grad()
def _gap(model, want: torch.Tensor, ids: torch.Tensor) -> float:
    out = model(ids)
    out = out.logits if hasattr(out, "logits") else out
    return (out[0].float() - want).abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_to_gguf_to_hf_keeps_logits(family, reference, tmp_path):
    src, ref = reference(family)
    ids = random_ids(24)  # longer than the tiny sliding window (8)
    with torch.no_grad():
        want = ref(ids).logits[0]
    gguf = convert(src, tmp_path / "m.gguf", "gguf", dtype="f32").path
    assert _gap(_ours(gguf), want, ids) < 1e-4
    back = convert(gguf, tmp_path / "back", "hf", dtype="f32").path
    assert _gap(_ours(back), want, ids) < 1e-4
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(back), attn_implementation="eager").eval()
    assert _gap(hf, want, ids) < 1e-4  # transformers reads our HF output: identical logits
    from opengemma.tokenizer import Tokenizer

    a, b = (
        Tokenizer.from_file(src / "tokenizer.model"),
        Tokenizer.from_file(back / "tokenizer.model"),
    )
    text = "the  cat sat\n on 12 <start_of_turn>mats é"
    assert [a.id_to_piece(i) for i in range(a.vocab_size)] == [
        b.id_to_piece(i) for i in range(b.vocab_size)]  # fmt: skip
    assert a.encode(text) == b.encode(text) and (a.bos_id, a.eos_id) == (b.bos_id, b.eos_id)


@pytest.mark.slow
@pytest.mark.parametrize(("quant", "tol"), [("f16", 0.005), ("q8_0", 0.06), ("q6_k", 0.2)])
def test_gguf_to_hf_to_gguf_keeps_logits(quant, tol, reference, tmp_path):
    # hidden 256 so that K-quant super-blocks (256 values) fit the rows
    src, ref = reference("gemma3", hidden_size=256, intermediate_size=256)
    ids = random_ids(24)
    with torch.no_grad():
        want = ref(ids).logits[0]
    first = tmp_path / "a.gguf"
    q = None if quant == "f16" else quant
    convert(src, first, "gguf", dtype="f32" if q else "f16", quant=q)
    stored = load_checkpoint(first).info["tensor_types"]
    assert stored[quant.upper()] > 0
    assert _gap(_ours(first), want, ids) < tol * want.std().item()
    hf = convert(first, tmp_path / "hf", "hf", dtype="f32").path
    again = convert(hf, tmp_path / "b.gguf", "gguf", dtype="f32").path
    # the second trip is lossless: exactly the first file's values
    assert _gap(_ours(again), _ours(first)(ids)[0], ids) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_transformers_loads_our_gguf(family, reference, tmp_path):
    """transformers' GGUF loader reads our file (config from metadata, vocab from the tokenizer
    arrays, norms w + 1) and matches the source. Its loader ignores rope scaling and
    query_pre_attn_scalar, so the reference uses the values it assumes."""
    over = {"query_pre_attn_scalar": 256}
    if family == "gemma3":
        over["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        }
    src, ref = reference(family, **over)
    ids = random_ids(24)
    with torch.no_grad():
        want = ref(ids).logits[0]
    out = convert(src, tmp_path / "t.gguf", "gguf", dtype="f32").path
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name,
                                              dtype=torch.float32).eval()  # fmt: skip
    assert _gap(hf, want, ids) < 1e-4


def test_convert_cli_refuses_to_clobber_and_writes_atomically(reference, tmp_path, capsys):
    src, _ = reference("gemma")
    dst = tmp_path / "out.gguf"
    dst.write_bytes(b"precious")
    assert main(["convert", str(src), str(dst), "--to", "gguf"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert dst.read_bytes() == b"precious"
    assert main(["convert", str(src), str(tmp_path / "x"), "--to", "hf", "--quant", "q8_0"]) == 1
    assert "GGUF output only" in capsys.readouterr().err
    assert main(["convert", str(src), str(dst), "--to", "gguf", "--quant", "q4_k", "--force"]) == 0
    assert load_checkpoint(dst).info["tensor_types"]  # a complete, readable file replaced it
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]  # no partial files left


def test_gguf_norms_are_stored_plus_one(reference, tmp_path):
    from opengemma.checkpoint.gguf_reader import GGUFFile

    src, ref = reference("gemma2")
    out = convert(src, tmp_path / "n.gguf", "gguf", dtype="f32").path
    stored = GGUFFile(out).dequantize("blk.0.attn_norm.weight")
    want = ref.model.layers[0].input_layernorm.weight.detach().numpy() + 1.0
    assert abs(stored - want).max() < 1e-6
