"""Export quantization: float tensors -> GGUF tensor bytes of a chosen ggml type.

Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and BF16 use the `gguf` package's reference quantizers (bit-exact
with llama.cpp's). Q4_K and Q6_K, which that package only dequantizes, are quantized here with
the straightforward min/max scheme (no importance matrix, no search): each value is within half
a quantization step of the original, and the bytes decode with the reference dequantizer.
Tensors whose rows do not divide into the type's blocks fall back to Q8_0, then F16; 1-D
tensors (norms) are always stored as F32, as llama.cpp's converter does.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from opengemma.checkpoint.errors import CheckpointError

Q = GGMLQuantizationType
EXPORT_TYPES: dict[str, GGMLQuantizationType] = {
    "f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1,
    "q5_0": Q.Q5_0, "q5_1": Q.Q5_1, "q4_k": Q.Q4_K, "q6_k": Q.Q6_K,
}  # fmt: skip
# llama.cpp's `general.file_type` (LLAMA_FTYPE_*) for a file whose 2-D tensors are of one type
FILE_TYPE = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q4_1: 3, Q.Q8_0: 7, Q.Q5_0: 8, Q.Q5_1: 9,
             Q.Q4_K: 15, Q.Q6_K: 18, Q.BF16: 32}  # fmt: skip


def parse_type(name: str) -> GGMLQuantizationType:
    """The ggml type for a user-facing name such as "q8_0" (case-insensitive)."""
    try:
        return EXPORT_TYPES[name.lower()]
    except KeyError:
        raise CheckpointError(
            f"unknown GGUF export type {name!r}; choose one of {', '.join(EXPORT_TYPES)}"
        ) from None


def storage_type(shape: tuple[int, ...], wanted: GGMLQuantizationType) -> GGMLQuantizationType:
    """The type a tensor of `shape` is stored in: `wanted`, or a fallback its rows allow."""
    if len(shape) < 2:
        return Q.F32
    for qtype in (wanted, Q.Q8_0, Q.F16):
        if qtype in (Q.F32, Q.F16, Q.BF16) or shape[-1] % GGML_QUANT_SIZES[qtype][0] == 0:
            return qtype
    return Q.F16


def quantize(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32 array (..., n) -> stored bytes: F32/F16 as numbers, others uint8 (..., bytes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if qtype == Q.F32:
        return x
    if qtype == Q.F16:
        return x.astype(np.float16)
    if qtype in (Q.Q4_K, Q.Q6_K):
        block, size = GGML_QUANT_SIZES[qtype]
        blocks = x.reshape(-1, block)
        out = _q4_k(blocks) if qtype == Q.Q4_K else _q6_k(blocks)
        return out.reshape(*x.shape[:-1], x.shape[-1] // block * size)
    import gguf.quants

    return gguf.quants.quantize(x, qtype)


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (as C's roundf, which llama.cpp uses)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 210) uint8: ql[128], qh[64], int8 scales[16], f16 d."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 16, 16)
    scale = np.abs(sub).max(axis=-1) / 31.0  # symmetric: values map into [-31, 31]
    iscale = _safe_div(np.float32(127.0), scale.max(axis=-1, keepdims=True))  # (n, 1)
    sc = np.clip(_round(iscale * scale), 0, 127)
    d = _safe_div(np.float32(1.0), iscale).astype(np.float16)  # (n, 1)
    step = d.astype(np.float32) * sc  # (n, 16)
    q = np.clip(_round(_safe_div(sub, step[..., None])), -32, 31).astype(np.int16) + 32
    q = q.reshape(n, 2, 128).astype(np.uint8)  # two halves of 128 values
    low, high = q & 0x0F, q >> 4
    ql = low[:, :, :64] | (low[:, :, 64:] << 4)  # (n, 2, 64)
    hh = high.reshape(n, 2, 4, 32)
    qh = hh[:, :, 0] | (hh[:, :, 1] << 2) | (hh[:, :, 2] << 4) | (hh[:, :, 3] << 6)
    return np.concatenate(
        [
            ql.reshape(n, 128),
            qh.reshape(n, 64),
            sc.astype(np.int8).view(np.uint8),
            d.view(np.uint8),
        ],
        axis=1,
    )


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 144) uint8: f16 d, f16 dmin, 6-bit scales/mins[12], qs[128]."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 8, 32)
    lo = np.minimum(sub.min(axis=-1), 0.0)  # value = scale * q - offset, offset >= 0
    scale = (sub.max(axis=-1) - lo) / 15.0
    offset = -lo
    d = (scale.max(axis=-1, keepdims=True) / 63.0).astype(np.float16)
    dmin = (offset.max(axis=-1, keepdims=True) / 63.0).astype(np.float16)
    sc = np.clip(_round(_safe_div(scale, d.astype(np.float32))), 0, 63).astype(np.uint8)
    mn = np.clip(_round(_safe_div(offset, dmin.astype(np.float32))), 0, 63).astype(np.uint8)
    step = d.astype(np.float32) * sc  # (n, 8)
    shift = dmin.astype(np.float32) * mn
    q = np.clip(_round(_safe_div(sub + shift[..., None], step[..., None])), 0, 15)
    q = q.astype(np.uint8).reshape(n, 4, 2, 32)
    qs = q[:, :, 0] | (q[:, :, 1] << 4)  # sub-blocks 2g (low nibble) and 2g+1 (high nibble)
    packed = np.empty((n, 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return np.concatenate([d.view(np.uint8), dmin.view(np.uint8), packed,
                           qs.reshape(n, 128)], axis=1)  # fmt: skip
