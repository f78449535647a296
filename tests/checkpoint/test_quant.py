"""Every GGML type a Gemma GGUF is published in decodes exactly as the `gguf` package's
reference, through our bounds-checked reader (offsets, shapes, chunked dequantization); our
Q4_K / Q6_K quantizers produce bytes the reference decodes within half a quantization step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize

from opengemma.checkpoint.gguf_quantize import quantize
from opengemma.checkpoint.gguf_reader import GGUFFile

Q = GGMLQuantizationType
READ_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K,
              Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ1_S,
              Q.IQ1_M, Q.IQ4_NL, Q.IQ4_XS, Q.TQ1_0, Q.TQ2_0]  # fmt: skip


def _random_blocks(qtype: GGMLQuantizationType, rows: int, cols: int, rng) -> np.ndarray:
    """Random stored bytes of a (rows, cols) tensor with finite float16 scales."""
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype in (Q.F32, Q.F16):
        return rng.normal(size=(rows, cols)).astype(np.float32 if qtype == Q.F32 else np.float16)
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    if qtype not in (Q.BF16, Q.TQ1_0, Q.TQ2_0):
        # keep f16 scale fields finite: clear the top exponent bit of every byte pair's high byte
        raw[..., 1::2] &= 0xBF
    return raw.reshape(rows, -1)


def test_every_type_matches_the_reference(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "types.gguf"
    w = GGUFWriter(path, "gemma3")
    data = {}
    for qtype in READ_TYPES:
        arr = _random_blocks(qtype, 6, 512, rng)
        data[qtype.name] = arr
        w.add_tensor(f"t.{qtype.name}", arr, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours, ref = GGUFFile(path), GGUFReader(path)
    for t in ref.tensors:
        qtype = Q(t.tensor_type)
        want = dequantize(t.data, qtype).reshape(6, 512)
        got = ours.dequantize(t.name)
        np.testing.assert_array_equal(got, want, err_msg=qtype.name)
        chunked = ours.load(t.name, torch.float32).numpy()
        np.testing.assert_array_equal(chunked, want, err_msg=qtype.name)


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K])
def test_k_quant_error_within_half_a_step(qtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(16, 1024)) * rng.uniform(0.01, 3, size=(16, 1))).astype(np.float32)
    back = dequantize(quantize(x, qtype), qtype)
    blocks = x.reshape(-1, 256)
    # a step is at most the super-block's range over the level count (Q4_K: 16 levels from an
    # offset <= 0; Q6_K: symmetric, [-31, 31]); the margin covers 6/8-bit scale rounding
    if qtype == Q.Q4_K:
        step = (blocks.max(1) - np.minimum(blocks.min(1), 0)) / 15
    else:
        step = np.abs(blocks).max(1) / 31
    err = np.abs(back - x).reshape(-1, 256).max(1)
    assert np.all(err <= 0.75 * step + 1e-6), (err / step).max()
    rel = np.sqrt(((back - x) ** 2).mean()) / x.std()
    assert rel < {Q.Q4_K: 0.1, Q.Q6_K: 0.025}[qtype]


def test_reference_quantizers_are_used_bit_exact():
    import gguf.quants

    x = np.random.default_rng(2).normal(size=(4, 256)).astype(np.float32)
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_1):
        assert np.array_equal(quantize(x, qtype), gguf.quants.quantize(x, qtype))
