"""Block-quantized int8 layers: the native kernels against exact references, and the quantized
embedded model against the float32 one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import opengemma.quant as quant
from opengemma.quant import Q8Embedding, Q8Linear, dequantize_q8, q8_matmul, quantize_q8


def exact_block_product(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Reference: int8 activations per 32-block, exact integer dots, float64 accumulation."""
    xq, xs = quantize_q8(x)
    R, K = x.shape
    N = q.shape[0]
    xb = xq.double().reshape(R, 1, K // 32, 32)
    wb = q.double().reshape(1, N, K // 32, 32)
    dots = (xb * wb).sum(-1)  # (R, N, blocks): exact integers
    return (dots * xs.double()[:, None, :] * s.double()[None, :, :]).sum(-1)


@pytest.fixture(params=["native", "torch"])
def backend(request, monkeypatch):
    if request.param == "native":
        assert quant.native() is not None, "the C kernels should build on this machine"
    else:
        monkeypatch.setattr(quant, "native", lambda: None)
    return request.param


def test_quantize_round_trip_error_is_bounded(backend):
    w = torch.randn(64, 256) * 3
    q, s = quantize_q8(w)
    assert q.dtype == torch.int8 and s.shape == (64, 8)
    assert int(q.abs().max()) == 127
    err = (dequantize_q8(q, s) - w).abs().reshape(64, 8, 32)
    assert (err <= s[..., None] / 2 + 1e-6).all()  # within half a step of each block's scale


def test_native_and_torch_quantization_agree(monkeypatch):
    w = torch.randn(48, 320)
    native = quantize_q8(w)
    monkeypatch.setattr(quant, "native", lambda: None)
    fallback = quantize_q8(w)
    assert torch.equal(native[0], fallback[0])
    torch.testing.assert_close(native[1], fallback[1])


@pytest.mark.parametrize("rows", [1, 3, 4, 7, 16])
def test_matmul_equals_exact_block_arithmetic(backend, rows):
    x = torch.randn(rows, 640)
    x[:, 5] = 40.0  # an outlier channel, as Gemma's hidden states have
    q, s = quantize_q8(torch.randn(300, 640) * 0.05)
    got = q8_matmul(x, q, s).double()
    ref = exact_block_product(x, q, s)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_linear_and_embedding_track_float(backend):
    lin = nn.Linear(256, 96, bias=False)
    x = torch.randn(2, 5, 256)
    q = Q8Linear.from_linear(lin)
    ref = lin(x)
    for inp in (x[:, :1], x):  # decode-sized input (int8 kernel) and prefill-sized (dequant)
        out = q(inp)
        assert out.shape == ref[:, : inp.shape[1]].shape
        rel = (out - lin(inp)).norm() / lin(inp).norm()
        assert rel < 0.02
    emb = nn.Embedding(50, 64)
    qe = Q8Embedding.from_embedding(emb)
    ids = torch.tensor([[3, 0, 49]])
    torch.testing.assert_close(qe(ids), dequantize_q8(qe.qweight, qe.scales)[ids])
    assert (qe(ids) - emb(ids)).abs().max() < emb.weight.abs().max() / 127
    h = torch.randn(1, 64)
    torch.testing.assert_close(qe.attend(h), q8_matmul(h, qe.qweight, qe.scales))


@pytest.mark.slow
def test_quantized_embedded_model_stays_close(lm):
    """The q8 model (the default for GGUF files) against the float32 reference: same greedy
    choices almost everywhere, and a perplexity within 3%."""
    import opengemma

    fast = opengemma.load()
    assert fast.quant == "q8"
    assert quant.weight_bytes(fast.model) < 0.35 * quant.weight_bytes(lm.model)
    text = (
        "The history of astronomy is long. Ancient people watched the sky to keep calendars, "
        "to navigate the seas and to tell stories about the gods. Later, telescopes revealed "
        "moons around Jupiter, the phases of Venus and countless faint stars in the Milky Way."
    )
    ids = lm.tokenizer.encode(text)

    def nll(model_lm):
        logits = model_lm.logits(ids)[:-1]
        return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])))

    ref_ppl, q8_ppl = math.exp(nll(lm)), math.exp(nll(fast))
    assert q8_ppl / ref_ppl < 1.03, (ref_ppl, q8_ppl)
    agree = (lm.logits(ids).argmax(-1) == fast.logits(ids).argmax(-1)).float().mean()
    assert agree > 0.9
    # decode path (int8 activations) too
    prompt = "The three primary colors are"
    assert fast.generate(prompt, max_tokens=8) == lm.generate(prompt, max_tokens=8)


def test_bfloat16_dequantization_rounds_like_torch(backend):
    q, s = quantize_q8(torch.randn(70, 320) * 5)
    got = quant.dequantize_q8_bf16(q, s)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, dequantize_q8(q, s).to(torch.bfloat16))


@pytest.mark.parametrize("bf16", [True, False])
def test_long_inputs_multiply_the_dequantized_weights(monkeypatch, bf16):
    """Prefill-sized inputs: the exact int8-block weights, in bfloat16 where the CPU has it."""
    monkeypatch.setattr(quant, "bf16_matmul_native", lambda: bf16)
    lin = Q8Linear(*quantize_q8(torch.randn(96, 256) * 0.1))
    x = torch.randn(3, 40, 256)
    exact = torch.nn.functional.linear(x, dequantize_q8(lin.qweight, lin.scales))
    out = lin(x)
    assert out.dtype == torch.float32 and out.shape == (3, 40, 96)
    if bf16:  # bfloat16 inputs (8 significant bits), float32 accumulation
        torch.testing.assert_close(out, exact, atol=0.02 * float(exact.abs().max()), rtol=0)
        assert not torch.equal(out, exact)
    else:
        torch.testing.assert_close(out, exact, atol=1e-5, rtol=1e-5)
