"""Every GGML type a Gemma GGUF is published in decodes exactly as the `gguf` package's
reference, through our bounds-checked reader (offsets, shapes, chunked dequantization); our
Q4_K / Q6_K quantizers produce bytes the reference decodes within half a quantization step;
every other type a GGUF export writes is, on disk, byte for byte the gguf package's quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize

from opengemma.checkpoint.gguf_quantize import EXPORT_TYPES, quantize
from opengemma.checkpoint.gguf_reader import GGUFFile
from opengemma.checkpoint.gguf_writer import write_gguf
from opengemma.checkpoint.keymap import ours_to_gguf
from opengemma.config import PRESETS

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


def _within_half_a_step(x: np.ndarray, back: np.ndarray, qtype: GGMLQuantizationType) -> None:
    """`back` (the reference's decoding of our K-quant bytes) is within half a step of `x`."""
    blocks = x.reshape(-1, 256)
    # a step is at most the super-block's range over the level count (Q4_K: 16 levels from an
    # offset <= 0; Q6_K: symmetric, [-31, 31]); the margin covers 6/8-bit scale rounding
    if qtype == Q.Q4_K:
        step = (blocks.max(1) - np.minimum(blocks.min(1), 0)) / 15
    else:
        step = np.abs(blocks).max(1) / 31
    err = np.abs(back.reshape(x.shape) - x).reshape(-1, 256).max(1)
    assert np.all(err <= 0.75 * step + 1e-6), (err / np.maximum(step, 1e-30)).max()


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K])
def test_k_quant_error_within_half_a_step(qtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(16, 1024)) * rng.uniform(0.01, 3, size=(16, 1))).astype(np.float32)
    back = dequantize(quantize(x, qtype), qtype)
    _within_half_a_step(x, back, qtype)
    rel = np.sqrt(((back - x) ** 2).mean()) / x.std()
    assert rel < {Q.Q4_K: 0.1, Q.Q6_K: 0.025}[qtype]


def _extreme_rows(rows: int, cols: int, rng) -> np.ndarray:
    """Rows of the values quantizers get wrong: zeros, ties, one huge value in a block,
    float16 range edges (65504, subnormals), a negative maximum, constant blocks."""
    x = (rng.normal(size=(rows, cols)) * rng.uniform(1e-3, 5, size=(rows, 1))).astype(np.float32)
    x[0] = 0.0  # all-zero blocks: scale 0
    x[1, :32] = np.arange(32) - 15.5  # with 127 below: Q8_0's step is 1, so every value a tie
    x[1, 0] = 127.0
    x[2, 3] = 6.0e4  # one value near float16's largest, the rest tiny
    x[2, 32:64] = 1e-7  # below float16's smallest normal: subnormal scales
    x[3, :32] = -7.25  # a constant negative block (max |x| is negative)
    x[3, 40] = -1e3  # a block whose extreme is negative
    x[4, 64:] = 65504.0  # float16's largest finite value, constant blocks
    return x


@pytest.mark.parametrize("qtype", list(EXPORT_TYPES.values()), ids=lambda t: t.name)
def test_written_blocks_equal_the_gguf_quantizer(qtype, tmp_path):
    """What write_gguf stores for each tensor, read back with gguf's own reader, is byte for byte
    gguf.quants.quantize (llama.cpp's reference) of the source values: odd row counts, widths of
    one block and of many, norms stored as w + 1, rows the type cannot divide (Q8_0, then F16).
    Q4_K and Q6_K, which gguf only decodes, decode within half a step of the source."""
    import gguf.quants

    rng = np.random.default_rng(3)
    cfg = PRESETS["gemma3-270m"].replace(vocab_size=7, hidden_size=64, intermediate_size=96,
                                         num_layers=1, layer_types=("sliding",))  # fmt: skip
    tensors = {  # (rows, width): odd and prime row counts; 288 = 9 blocks of 32; 64; 96; 512
        "embed_tokens.weight": _extreme_rows(7, 288, rng),
        "layers.0.self_attn.q_proj.weight": _extreme_rows(13, 64, rng),
        "layers.0.mlp.down_proj.weight": _extreme_rows(5, 96, rng),
        "layers.0.mlp.up_proj.weight": _extreme_rows(9, 512, rng),
        "layers.0.self_attn.o_proj.weight": rng.normal(size=(1, 40)).astype(np.float32),
        "layers.0.input_layernorm.weight": rng.normal(size=33).astype(np.float32),
    }
    path = tmp_path / "q.gguf"
    stored = write_gguf(cfg, {n: torch.from_numpy(t) for n, t in tensors.items()}, path, qtype)
    read = {t.name: t for t in GGUFReader(path).tensors}
    for name, x in tensors.items():
        t = read[ours_to_gguf(name)]
        if x.ndim == 1:  # a norm: float32, llama.cpp's w + 1
            want_type, x = Q.F32, x + np.float32(1.0)
        else:  # the type asked for, else the documented fallbacks Q8_0 then F16
            want_type = next(q for q in (qtype, Q.Q8_0, Q.F16)
                             if x.shape[-1] % GGML_QUANT_SIZES[q][0] == 0)  # fmt: skip
        assert Q(t.tensor_type) == want_type and stored[name] == want_type.name, name
        got = np.asarray(t.data).view(np.uint8).reshape(*x.shape[:-1], -1)
        if want_type in (Q.Q4_K, Q.Q6_K):
            _within_half_a_step(x, dequantize(got, want_type), want_type)
            continue
        want = x.astype(np.float16) if want_type == Q.F16 else gguf.quants.quantize(x, want_type)
        want = want.view(np.uint8).reshape(got.shape)
        assert np.array_equal(got, want), f"{name} as {want_type.name}"
