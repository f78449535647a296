"""The native GGUF block kernels (kernels/gguf_blocks.c) decode every type they claim exactly as
the `gguf` package's reference, and convert to opengemma's in-memory Q8_0 blocks: Q8_0 as the
stored bytes themselves, Q4_0/Q5_0 without changing a value, other types exactly as the gguf
package's Q8_0 quantizer on the decoded floats; the numpy fallback agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize

import opengemma.checkpoint.gguf_reader as gguf_reader
from opengemma.checkpoint.errors import CheckpointError
from opengemma.checkpoint.gguf_reader import GGUFFile
from opengemma.quantized_layers import dequantize_q8_0
from tests.native import built_kernels

Q = GGMLQuantizationType
# native types -> byte offsets of the float16 fields (scales, mins) inside a block
F16_FIELDS = {Q.F32: (), Q.F16: (), Q.BF16: (), Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,),
              Q.Q5_1: (0, 2), Q.Q8_0: (0,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2),
              Q.Q6_K: (208,)}  # fmt: skip
NATIVE = list(F16_FIELDS)
ROWS, COLS = 5, 768  # three K-quant super-blocks per row


def _finite_halves(rng, shape, exponent_mask: int) -> np.ndarray:
    """Random 16-bit float patterns over the whole finite range (subnormals included)."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    special = (bits & exponent_mask) == exponent_mask  # inf / NaN: step the exponent down once
    bits[special] ^= exponent_mask & -exponent_mask
    return bits


def _random_blocks(qtype: GGMLQuantizationType, rng) -> np.ndarray:
    """Random stored bytes of a (ROWS, COLS) tensor: every bit random, float16 fields finite."""
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype == Q.F32:
        return rng.normal(size=(ROWS, COLS)).astype(np.float32) * np.float32(1e3)
    if qtype in (Q.F16, Q.BF16):
        mask = 0x7C00 if qtype == Q.F16 else 0x7F80
        bits = _finite_halves(rng, (ROWS, COLS), mask)
        return bits.view(np.float16) if qtype == Q.F16 else bits.view(np.uint8)
    raw = rng.integers(0, 256, size=(ROWS, COLS // block, size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        halves = _finite_halves(rng, (ROWS, COLS // block), 0x7C00)
        raw[..., at : at + 2] = halves[..., None].view(np.uint8)
    return raw.reshape(ROWS, -1)


@pytest.fixture(scope="module")
def blocks_file(tmp_path_factory):
    """A GGUF with one random (ROWS, COLS) tensor per native type, its stored bytes by name."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("native") / "blocks.gguf"
    w = GGUFWriter(path, "gemma3")
    stored = {}
    for qtype in NATIVE:
        arr = _random_blocks(qtype, rng)
        stored[qtype.name] = arr
        w.add_tensor(qtype.name, arr, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    w.add_tensor("vector", rng.normal(size=COLS).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, stored


def _reference(gf: GGUFFile, name: str) -> np.ndarray:
    raw = gf.raw(name).copy()
    return dequantize(raw.view(np.uint8), Q[name]).reshape(ROWS, COLS)


def test_the_kernels_are_built():
    built_kernels()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("qtype", NATIVE, ids=lambda t: t.name)
def test_native_dequantize_is_bit_exact(blocks_file, qtype, threads):
    lib = built_kernels()
    gf = GGUFFile(blocks_file[0])
    want = _reference(gf, qtype.name)
    out = np.full((ROWS, COLS), np.nan, dtype=np.float32)
    raw = gf.raw(qtype.name)
    assert (
        lib.gguf_dequantize(int(qtype), raw.ctypes.data, ROWS, COLS, out.ctypes.data, threads) == 0
    )
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32), err_msg=qtype.name)
    np.testing.assert_array_equal(gf.dequantize(qtype.name), want)
    np.testing.assert_array_equal(gf.load(qtype.name, torch.float32).numpy(), want)
    chunk = gf.load(qtype.name, torch.float32, transform=lambda t: t * 0.5).numpy()
    np.testing.assert_array_equal(chunk, want * np.float32(0.5))


def test_unsupported_types_are_refused_by_the_kernels():
    lib = built_kernels()
    src = np.zeros(1024, dtype=np.uint8)
    out = np.empty(256, dtype=np.float32)
    blocks = np.empty(8 * 34, dtype=np.uint8)
    for qtype in (Q.Q2_K, Q.Q3_K, Q.IQ4_NL, Q.TQ1_0):
        assert lib.gguf_dequantize(int(qtype), src.ctypes.data, 1, 256, out.ctypes.data, 1) == -1
        assert lib.gguf_to_q8_0(int(qtype), src.ctypes.data, 1, 256, blocks.ctypes.data, 1) == -1


EXACT_IN_Q8_0 = (Q.Q8_0, Q.Q4_0, Q.Q5_0)  # small integers times a float16 scale


def _check_q8_0(blocks: np.ndarray, qtype: GGMLQuantizationType, stored: np.ndarray,
                floats: np.ndarray) -> None:  # fmt: skip
    rows, cols = floats.shape
    assert blocks.dtype == np.uint8 and blocks.shape == (rows, cols // 32 * 34)
    if qtype in EXACT_IN_Q8_0:  # the very values, with the stored scales
        got = dequantize_q8_0(torch.from_numpy(blocks)).numpy()
        np.testing.assert_array_equal(got.view(np.uint32), floats.view(np.uint32), qtype.name)
        size = GGML_QUANT_SIZES[qtype][1]
        want_scales = stored.reshape(rows, -1, size)[..., :2]
        np.testing.assert_array_equal(blocks.reshape(rows, -1, 34)[..., :2], want_scales)
        if qtype == Q.Q8_0:
            np.testing.assert_array_equal(blocks, stored.reshape(rows, -1))
    else:
        np.testing.assert_array_equal(blocks, quantize(floats, Q.Q8_0), qtype.name)


@pytest.mark.parametrize("qtype", NATIVE, ids=lambda t: t.name)
def test_load_q8_0_matches_the_reference(blocks_file, qtype):
    path, stored = blocks_file
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            gf = GGUFFile(path)
            blocks = gf.load_q8_0(qtype.name).numpy()
            _check_q8_0(blocks, qtype, stored[qtype.name], _reference(gf, qtype.name))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("qtype", NATIVE, ids=lambda t: t.name)
def test_fallback_without_kernels_agrees(blocks_file, qtype, monkeypatch):
    built_kernels()  # the first read runs the kernels, the second the numpy fallback
    path, stored = blocks_file
    gf = GGUFFile(path)
    fast = gf.load(qtype.name, torch.float32), gf.load_q8_0(qtype.name)
    monkeypatch.setattr(gguf_reader, "native", lambda: None)
    gf = GGUFFile(path)
    slow = gf.load(qtype.name, torch.float32), gf.load_q8_0(qtype.name)
    np.testing.assert_array_equal(slow[0].numpy(), _reference(gf, qtype.name))
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b), qtype.name


def test_load_q8_0_refuses_what_it_cannot_hold(blocks_file, tmp_path):
    gf = GGUFFile(blocks_file[0])
    with pytest.raises(CheckpointError, match="must be 2-D"):
        gf.load_q8_0("vector")
    path = tmp_path / "narrow.gguf"
    w = GGUFWriter(path, "gemma3")
    w.add_tensor("narrow", np.ones((4, 48), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="multiple of 32"):
        GGUFFile(path).load_q8_0("narrow")


def test_edge_values_quantize_like_the_reference(tmp_path):
    """Zero blocks, blocks whose scale is subnormal in float16 or float32, and the largest
    floats give the gguf package's Q8_0 bytes."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 32, 32)).astype(np.float32)
    x[2, 5] = 0.0
    x[3] *= np.float32(1e-39)  # amax subnormal: 1 / d overflows
    x[4] *= np.float32(1e-36)
    x[6] *= np.float32(1e-6)  # float16 scale subnormal
    x[5, :, 0] = np.float32(3e38)
    x = x.reshape(8, 1024)
    path = tmp_path / "edges.gguf"
    w = GGUFWriter(path, "gemma3")
    w.add_tensor("x", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with np.errstate(all="ignore"):  # the reference overflows on the largest block, as we do
        want = quantize(x, Q.Q8_0)
    np.testing.assert_array_equal(GGUFFile(path).load_q8_0("x").numpy(), want)


def test_f16_specials_keep_their_bits(tmp_path):
    """Signed zeros, subnormals, infinities and NaN payloads (signalling ones too) convert as
    numpy converts them, in the vector body and in the scalar tail of a row alike."""
    specials = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7C01, 0xFD55,
                0x7E00, 0x7FFF]  # fmt: skip
    bits = np.resize(np.array(specials, dtype=np.uint16), (3, 40))
    path = tmp_path / "f16.gguf"
    w = GGUFWriter(path, "gemma3")
    w.add_tensor("h", bits.view(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = GGUFFile(path).dequantize("h")
    np.testing.assert_array_equal(
        got.view(np.uint32), bits.view(np.float16).astype(np.float32).view(np.uint32)
    )


@pytest.mark.parametrize("qtype", [Q.Q6_K, Q.Q5_0, Q.F16], ids=lambda t: t.name)
def test_threads_split_large_tensors_identically(qtype):
    """Tensors large enough to be decoded by several threads give the reference's values."""
    lib = built_kernels()
    rows, cols = 2048, 1280  # 2.6 M values: above the kernels' threading threshold
    block, size = GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(5).integers(
        0, 256, size=(rows, cols // block, size), dtype=np.uint8
    )
    for at in F16_FIELDS[qtype] or (0,):
        raw[..., at + 1] &= 0xBF  # finite float16 fields (F16: every value)
    raw = raw.reshape(rows, -1)
    want = dequantize(raw, qtype).reshape(rows, cols)
    out = np.empty((rows, cols), dtype=np.float32)
    blocks = np.empty((rows, cols // 32 * 34), dtype=np.uint8)
    src = raw.ctypes.data
    assert lib.gguf_dequantize(int(qtype), src, rows, cols, out.ctypes.data, 2) == 0
    assert lib.gguf_to_q8_0(int(qtype), src, rows, cols, blocks.ctypes.data, 2) == 0
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    _check_q8_0(blocks, qtype, raw, want)
