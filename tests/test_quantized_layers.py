"""Int8 block layers: the native kernels against exact references (the gguf package's Q8_0
quantizer, exact integer block arithmetic), and the quantized embedded model against float32."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from torch import nn

import opengemma.quantized_layers as quant
from opengemma.build import weight_bytes
from opengemma.quantized_layers import (
    Q8Embedding,
    Q8Linear,
    dequantize_q8,
    dequantize_q8_0,
    q8_0_matmul,
    quantize_q8,
    quantize_q8_0,
    split_q8_0,
)
from tests.native import built_kernels

Q8_0 = GGMLQuantizationType.Q8_0


def exact_block_product(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Reference: int8 activations per 32-block, exact integer dots, float64 accumulation."""
    xq, xs = quantize_q8(x)
    q, s = split_q8_0(blocks)
    R, K = x.shape
    N = q.shape[0]
    xb = xq.double().reshape(R, 1, K // 32, 32)
    wb = q.double().reshape(1, N, K // 32, 32)
    dots = (xb * wb).sum(-1)  # (R, N, blocks): exact integers
    return (dots * xs.double()[:, None, :] * s.double()[None, :, :]).sum(-1)


@pytest.fixture(params=["native", "torch"])
def backend(request, monkeypatch):
    if request.param == "native":
        built_kernels()
    else:
        monkeypatch.setattr(quant, "native", lambda: None)
    return request.param


def test_q8_0_blocks_are_the_gguf_quantizers(backend):
    """Bit for bit the gguf package's (llama.cpp's) Q8_0, ties and zero blocks included."""
    w = torch.randn(64, 256) * 3
    w[0, :32] = 0.0  # an all-zero block
    w[1, :32] = torch.arange(32) - 15.5  # many values exactly halfway after scaling
    w[2, 32:64] = torch.linspace(-1, 1, 32) * 1e-6
    blocks = quantize_q8_0(w)
    assert blocks.dtype == torch.uint8 and blocks.shape == (64, 8 * 34)
    assert np.array_equal(blocks.numpy(), gguf_quantize(w.numpy(), Q8_0))
    deq = dequantize_q8_0(blocks)
    assert np.array_equal(deq.numpy(), gguf_dequantize(blocks.numpy(), Q8_0).reshape(64, 256))
    q, s = split_q8_0(blocks)
    assert int(q.abs().max()) == 127 and s.shape == (64, 8)
    # within half a step, plus the float16 rounding of the scale (127 * 2^-11 of a step);
    # row 2's tiny block has a subnormal float16 scale, as it would in llama.cpp
    err = (deq - w).abs().reshape(64, 8, 32)[3:]
    assert (err <= s[3:, :, None] * (0.5 + 127 / 2048) + 1e-7).all()


def test_activation_quantization_round_trip(backend):
    x = torch.randn(64, 256) * 3
    q, s = quantize_q8(x)
    assert q.dtype == torch.int8 and s.shape == (64, 8)
    assert int(q.abs().max()) == 127
    err = (dequantize_q8(q, s) - x).abs().reshape(64, 8, 32)
    assert (err <= s[..., None] / 2 + 1e-6).all()


def test_native_and_torch_quantization_agree(monkeypatch):
    w = torch.randn(48, 320)
    native = quantize_q8(w), quantize_q8_0(w)
    monkeypatch.setattr(quant, "native", lambda: None)
    fallback = quantize_q8(w), quantize_q8_0(w)
    assert torch.equal(native[0][0], fallback[0][0])
    torch.testing.assert_close(native[0][1], fallback[0][1])
    assert torch.equal(native[1], fallback[1])


@pytest.mark.parametrize("rows", [1, 3, 4, 7, 16])
def test_matmul_equals_exact_block_arithmetic(backend, rows):
    x = torch.randn(rows, 640)
    x[:, 5] = 40.0  # an outlier channel, as Gemma's hidden states have
    blocks = quantize_q8_0(torch.randn(300, 640) * 0.05)
    got = q8_0_matmul(x, blocks).double()
    ref = exact_block_product(x, blocks)
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
    torch.testing.assert_close(qe(ids), dequantize_q8_0(qe.blocks)[ids])
    assert (qe(ids) - emb(ids)).abs().max() < emb.weight.abs().max() / 127
    h = torch.randn(1, 64)
    torch.testing.assert_close(qe.attend(h), q8_0_matmul(h, qe.blocks))


def test_malformed_blocks_are_refused():
    with pytest.raises(ValueError, match="Q8_0 blocks"):
        Q8Linear(torch.zeros(4, 33, dtype=torch.uint8))
    with pytest.raises(ValueError, match="Q8_0 blocks"):
        Q8Linear(torch.zeros(4, 34, dtype=torch.int8))


@pytest.mark.slow
def test_quantized_embedded_model_stays_close(lm):
    """The Q8_0-block model (the default for quantized GGUF files) against the float32
    reference: same greedy choices almost everywhere, and a perplexity within 3%."""
    import opengemma

    fast = opengemma.load()
    assert fast.quant == "q8"
    assert weight_bytes(fast.model) < 0.35 * weight_bytes(lm.model)
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
    blocks = quantize_q8_0(torch.randn(70, 320) * 5)
    got = quant.dequantize_q8_0_bf16(blocks)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, dequantize_q8_0(blocks).to(torch.bfloat16))


@pytest.mark.parametrize("bf16", [True, False])
def test_long_inputs_multiply_the_dequantized_weights(monkeypatch, bf16):
    """Prefill-sized inputs: the exact int8-block weights, in bfloat16 where the CPU has it."""
    monkeypatch.setattr(quant, "bf16_matmul_native", lambda: bf16)
    lin = Q8Linear(quantize_q8_0(torch.randn(96, 256) * 0.1))
    x = torch.randn(3, 40, 256)
    exact = torch.nn.functional.linear(x, dequantize_q8_0(lin.blocks))
    out = lin(x)
    assert out.dtype == torch.float32 and out.shape == (3, 40, 96)
    if bf16:  # bfloat16 inputs (8 significant bits), float32 accumulation
        torch.testing.assert_close(out, exact, atol=0.02 * float(exact.abs().max()), rtol=0)
        assert not torch.equal(out, exact)
    else:
        torch.testing.assert_close(out, exact, atol=1e-5, rtol=1e-5)


def test_without_native_kernels_auto_keeps_float_weights(monkeypatch, embedded_path):
    """No C compiler: the int8 layers would run on PyTorch fallbacks slower than float32, so
    the default keeps the float path; quant='q8' still works when asked for."""
    import opengemma
    import opengemma.kernels

    monkeypatch.setattr(opengemma.kernels, "native", lambda: None)
    lm = opengemma.load(embedded_path, threads=1)
    assert lm.quant == "none" and lm.model.native_decoder is None
    assert lm.model.dtype == torch.float32


@pytest.mark.parametrize("rows", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("width", [640, 672, 96])  # blocks per row: 20, 21 (a tail), 3
def test_a_row_gives_the_same_bits_alone_or_in_a_batch(rows, width):
    """Batched decoding runs another kernel than one row does; the server relies on a
    sequence decoding to the same bits whatever else is in its batch."""
    x = torch.randn(rows, width)
    blocks = quantize_q8_0(torch.randn(300, width) * 0.05)
    batched = q8_0_matmul(x, blocks)
    alone = torch.cat([q8_0_matmul(x[i : i + 1], blocks) for i in range(rows)])
    assert torch.equal(batched, alone)
