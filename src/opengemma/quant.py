"""Weight-only block-quantized layers: int8 weights with one float scale per 32 values.

Q8Linear and Q8Embedding replace nn.Linear / nn.Embedding after a model is built. Decoding
(a few activation rows) runs the native int8 kernel: activations are quantized per block of 32
as well, so the weights are read at one byte each (the tied 262k-row output projection of
Gemma 3 dominates a decode step). Long inputs (prefill) dequantize one layer at a time and use
the BLAS matrix product, which is compute- rather than memory-bound there: in bfloat16 (with
float32 accumulation) where the CPU has bfloat16 instructions, else in float32.

Quantizing a GGUF's Q4/Q5/Q6 weights to 8 bits per 32-block keeps them to within a fraction of
their own quantization step; Q8_0 weights are taken over exactly.
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.nn.functional as F
from torch import nn

from opengemma.kernels import native

QK = 32
GEMV_MAX_ROWS = 16  # up to this many activation rows use the int8 kernel


def quantize_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float weights (N, K) -> int8 (N, K) and float32 scales (N, K/32), round to nearest."""
    N, K = w.shape
    if K % QK:
        raise ValueError(f"input width {K} is not a multiple of {QK}")
    lib = native()
    if lib is not None:
        src = w.detach().float().contiguous()
        q = torch.empty(N, K, dtype=torch.int8)
        scales = torch.empty(N, K // QK, dtype=torch.float32)
        lib.q8_quantize(src.data_ptr(), q.data_ptr(), scales.data_ptr(), N, K)
        return q, scales
    blocks = w.detach().float().reshape(N, K // QK, QK)
    scales = blocks.abs().amax(-1) / 127.0
    inv = torch.where(scales > 0, 1.0 / scales, torch.zeros_like(scales))
    q = torch.round(blocks * inv[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(N, K), scales


@functools.cache
def bf16_matmul_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX), where a
    bfloat16 product runs 2-3x faster than a float32 one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def dequantize_q8_bf16(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 blocks -> bfloat16 (N, K), rounded to nearest even."""
    lib = native()
    if lib is None:
        return dequantize_q8(q, scales).to(torch.bfloat16)
    N, K = q.shape
    out = torch.empty(N, K, dtype=torch.bfloat16)
    lib.q8_dequantize_bf16(q.data_ptr(), scales.data_ptr(), out.data_ptr(), N, K,
                           torch.get_num_threads())  # fmt: skip
    return out


def dequantize_q8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    N, K = q.shape
    lib = native()
    if lib is None:
        return (q.float().reshape(N, K // QK, QK) * scales[..., None]).reshape(N, K)
    out = torch.empty(N, K, dtype=torch.float32)
    lib.q8_dequantize(q.data_ptr(), scales.data_ptr(), out.data_ptr(), N, K,
                      torch.get_num_threads())  # fmt: skip
    return out


def q8_matmul(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (R, K) float -> (R, N) float32 = x @ dequant(q).T, with int8 activations per block."""
    R, K = x.shape
    N = q.shape[0]
    lib = native()
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    if lib is None:
        xq, xs = quantize_q8(x)
        return F.linear(dequantize_q8(xq, xs), dequantize_q8(q, scales))
    scratch = _scratch(R * K + 4 * R * (K // QK))  # int8 activations, then their scales
    out = torch.empty(R, N, dtype=torch.float32)
    base = scratch.data_ptr()
    lib.q8_linear(x.data_ptr(), base, base + R * K, q.data_ptr(), scales.data_ptr(),
                  out.data_ptr(), R, N, K, torch.get_num_threads())  # fmt: skip
    return out


_local = threading.local()


def _scratch(nbytes: int) -> torch.Tensor:
    """A per-thread reusable byte buffer (grown on demand) for quantized activations."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.numel() < nbytes:
        buf = _local.buf = torch.empty(nbytes, dtype=torch.uint8)
    return buf


class Q8Linear(nn.Module):
    """A bias-free linear layer with block-quantized int8 weights."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.float().contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Q8Linear:
        if linear.bias is not None:
            raise ValueError("Q8Linear has no bias; Gemma's projections have none")
        return cls(*quantize_q8(linear.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= GEMV_MAX_ROWS:
            out = q8_matmul(rows, self.qweight, self.scales)
        elif bf16_matmul_native():  # long inputs: compute-bound, bfloat16 runs at 2-3x
            out = F.linear(rows.bfloat16(), dequantize_q8_bf16(self.qweight, self.scales))
        else:
            out = F.linear(rows.float(), dequantize_q8(self.qweight, self.scales))
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


class Q8Embedding(nn.Module):
    """Block-quantized embedding table that also serves as the tied output projection."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, dtype=torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.dtype = dtype
        self.register_buffer("qweight", qweight.contiguous())
        self.register_buffer("scales", scales.float().contiguous())

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Q8Embedding:
        return cls(*quantize_q8(emb.weight), dtype=emb.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).contiguous()
        lib = native()
        if lib is None:
            rows = dequantize_q8(self.qweight[flat], self.scales[flat])
        else:
            rows = torch.empty(flat.numel(), self.embedding_dim, dtype=torch.float32)
            lib.q8_gather(self.qweight.data_ptr(), self.scales.data_ptr(), flat.data_ptr(),
                          rows.data_ptr(), flat.numel(), self.embedding_dim)  # fmt: skip
        return rows.to(self.dtype).reshape(*ids.shape, self.embedding_dim)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: x (..., d) against every row, float32 (the tied output projection)."""
        rows = x.reshape(-1, self.embedding_dim)
        out = q8_matmul(rows, self.qweight, self.scales)
        return out.reshape(*x.shape[:-1], self.num_embeddings)


def quantize_model(
    model: nn.Module,
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Swap every nn.Linear and the embedding for their Q8 versions, in place, freeing the
    float weights as it goes.

    `weights` (module name + ".weight" -> int8 values and scales) supplies weights already in
    int8 blocks, e.g. read straight from a GGUF file; the model may then be a `meta` skeleton.
    """
    for prefix, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            key = f"{prefix}.{child_name}.weight" if prefix else f"{child_name}.weight"
            given = weights.get(key) if weights is not None else None
            if isinstance(child, nn.Linear):
                new = Q8Linear(*given) if given else Q8Linear.from_linear(child)
            elif isinstance(child, nn.Embedding) and given:
                new = Q8Embedding(*given, dtype=dtype)
            elif isinstance(child, nn.Embedding):
                new = Q8Embedding.from_embedding(child)
            else:
                continue
            setattr(module, child_name, new)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as held in memory."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
