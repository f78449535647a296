"""Linear layers on GGUF blocks kept exactly as the file stores them (Q4_K/Q5_K/Q6_K, Q5_0/Q4_0).

A Q4_K_M file's matrices are mostly Q4_K (4.5 bits a weight) and Q6_K (6.6 bits), with Q5_0
(5.5 bits) where a row is not a multiple of 256 long. Widened to Q8_0 blocks (8.5 bits) they
would take up to twice the memory, and a decode step, which reads every weight once, up to
twice the bytes. `StoredLinear` keeps the file's bytes (a view of the memory-mapped file when
loaded from one: no copy) and multiplies them natively: K-quants in kernels/kquant.c with the
activations quantized to int8 per 256 values, Q5_0 / Q4_0 in kernels/q8.c per 32 (with the
bits of the Q8_0 product on their exact widening). Long inputs (prefill) dequantize one layer
at a time and use the BLAS matrix product, as `opengemma.quantized_layers.Q8Linear` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from opengemma.kernels import native
from opengemma.quantized_layers import _scratch  # the per-thread activation buffer

QK_K = 256
# ggml type id -> (name, weights per block, bytes per block)
STORED_TYPES = {12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
                6: ("Q5_0", 32, 22), 2: ("Q4_0", 32, 18)}  # fmt: skip
GEMV_MAX_ROWS = 16  # up to this many activation rows use the integer kernel (as Q8Linear)


@dataclass(frozen=True)
class StoredBlocks:
    """A matrix as a GGUF file stores it: `data` uint8 (N, K / 256 * bytes per super-block)."""

    qtype: int
    data: torch.Tensor
    in_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return stored_shape(self.qtype, self.data, self.in_features)


def stored_shape(qtype: int, data: torch.Tensor, K: int) -> tuple[int, int]:
    """(N, K) after checking that `data` holds N rows of K weights of ggml type `qtype`."""
    if qtype not in STORED_TYPES:
        names = ", ".join(t[0] for t in STORED_TYPES.values())
        raise ValueError(f"ggml type {qtype} is not kept as stored here; one of {names}")
    name, size, nbytes = STORED_TYPES[qtype]
    if K <= 0 or K % size:
        raise ValueError(f"{name} rows hold a multiple of {size} weights; got a width of {K}")
    if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != K // size * nbytes:
        raise ValueError(
            f"{name} blocks of width {K} are uint8 (N, {K // size * nbytes}); got "
            f"{data.dtype} {tuple(data.shape)}"
        )
    if data.device.type != "cpu":
        raise ValueError(f"the {name} kernels run on the CPU; got a tensor on {data.device}")
    return data.shape[0], K


def dequantize_stored(qtype: int, data: torch.Tensor, K: int) -> torch.Tensor:
    """The float32 (N, K) weights, as the gguf package's dequantizer gives them (bit for bit)."""
    N, K = stored_shape(qtype, data, K)
    data = data.contiguous()
    out = torch.empty(N, K, dtype=torch.float32)
    lib = native()
    if lib is not None and not lib.gguf_dequantize(qtype, data.data_ptr(), N, K, out.data_ptr(),
                                                   torch.get_num_threads()):  # fmt: skip
        return out
    import gguf

    values = gguf.quants.dequantize(data.numpy(), gguf.GGMLQuantizationType(qtype))
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(N, K))


def quantize_q8k(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations (R, K) float32 -> int8 (R, K), float32 scales (R, K/256) and int16 sums of
    every 16 int8 values (R, K/16): the activation format of the K-quant kernels (d = amax/127,
    q = round-half-even(x / d)), computed in PyTorch (the kernels do the same in C)."""
    R, K = x.shape
    v = x.float().reshape(R, K // QK_K, QK_K)
    d = v.abs().amax(-1) / 127.0
    inv = torch.where(d > 0, 1.0 / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
    q = torch.round(v * inv[..., None]).to(torch.int8).reshape(R, K)
    sums = q.reshape(R, K // 16, 16).sum(-1, dtype=torch.int32).to(torch.int16)
    return q, d, sums


def kq_matmul(x: torch.Tensor, qtype: int, data: torch.Tensor, K: int) -> torch.Tensor:
    """x (R, K) float -> (R, N) float32 = x @ W.T for stored weights, the activations quantized
    to int8 per 256 values (K-quants) or per 32 (Q5_0, Q4_0): exact integer block products."""
    N, K = stored_shape(qtype, data, K)
    if x.dim() != 2 or x.shape[1] != K:
        raise ValueError(f"activations of shape {tuple(x.shape)} against weights of width {K}")
    if x.device.type != "cpu":
        raise ValueError(f"the K-quant kernels run on the CPU; got activations on {x.device}")
    x = x.float().contiguous()
    data = data.contiguous()
    R = x.shape[0]
    lib = native()
    if STORED_TYPES[qtype][1] != QK_K:
        return _matmul_32(lib, x, qtype, data, N)
    if lib is None:  # the same arithmetic in PyTorch (slow: for machines without a compiler)
        q, d, _ = quantize_q8k(x)
        xf = (q.float().reshape(R, -1, QK_K) * d[..., None]).reshape(R, K)
        return F.linear(xf, dequantize_stored(qtype, data, K))
    scratch = _scratch(R * K + 4 * R * (K // QK_K) + 2 * R * (K // 16))
    xq = scratch.data_ptr()  # int8 (R, K), then float32 scales (R, K/256), int16 sums (R, K/16)
    xd = xq + R * K
    out = torch.empty(R, N, dtype=torch.float32)
    status = lib.kq_linear(qtype, x.data_ptr(), xq, xd, xd + 4 * R * (K // QK_K), data.data_ptr(),
                           out.data_ptr(), R, N, K, torch.get_num_threads())  # fmt: skip
    if status != 0:
        raise ValueError(f"the native kernels do not multiply ggml type {qtype}")
    return out


def _matmul_32(lib, x: torch.Tensor, qtype: int, data: torch.Tensor, N: int) -> torch.Tensor:
    """kq_matmul for blocks of 32 (Q5_0, Q4_0): activations int8 per 32, as for Q8_0."""
    from opengemma.quantized_layers import dequantize_q8, quantize_q8

    R, K = x.shape
    if lib is None:
        return F.linear(dequantize_q8(*quantize_q8(x)), dequantize_stored(qtype, data, K))
    scratch = _scratch(R * K + 4 * R * (K // 32))  # int8 (R, K), then float32 scales (R, K/32)
    xq = scratch.data_ptr()
    out = torch.empty(R, N, dtype=torch.float32)
    status = lib.qb_linear(qtype, x.data_ptr(), xq, xq + R * K, data.data_ptr(), out.data_ptr(),
                           R, N, K, torch.get_num_threads())  # fmt: skip
    if status != 0:
        raise ValueError(f"the native kernels do not multiply ggml type {qtype}")
    return out


class StoredLinear(nn.Module):
    """A bias-free linear layer whose weight stays in its GGUF blocks (`blocks`: uint8
    (N, K / block size * bytes per block), `qtype`: the ggml type id)."""

    def __init__(self, blocks: torch.Tensor, qtype: int, in_features: int):
        super().__init__()
        self.out_features, self.in_features = stored_shape(qtype, blocks, in_features)
        self.qtype = qtype
        self.register_buffer("blocks", blocks.contiguous())

    @classmethod
    def from_stored(cls, stored: StoredBlocks) -> StoredLinear:
        return cls(stored.data, stored.qtype, stored.in_features)

    @property
    def type_name(self) -> str:
        return STORED_TYPES[self.qtype][0]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.type_name}"

    def dequantize(self) -> torch.Tensor:
        return dequantize_stored(self.qtype, self.blocks, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input of width {x.shape[-1]} to a layer {self.in_features} wide")
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= GEMV_MAX_ROWS:
            out = kq_matmul(rows, self.qtype, self.blocks, self.in_features)
        else:  # prefill: compute-bound, one layer's float weights at a time
            from opengemma.quantized_layers import bf16_matmul_native

            w = self.dequantize()
            out = (F.linear(rows.bfloat16(), w.bfloat16()) if bf16_matmul_native()
                   else F.linear(rows.float(), w))  # fmt: skip
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


class StoredEmbedding(nn.Module):
    """An embedding table in its GGUF blocks (Q6_K in the Q4_K_M files of wide models), that
    also serves as the tied output projection: rows are decoded as looked up, logits come from
    the integer kernel (the table is never held in float)."""

    def __init__(self, blocks: torch.Tensor, qtype: int, embedding_dim: int,
                 dtype: torch.dtype = torch.float32):  # fmt: skip
        super().__init__()
        self.num_embeddings, self.embedding_dim = stored_shape(qtype, blocks, embedding_dim)
        self.qtype, self.dtype = qtype, dtype
        self.register_buffer("blocks", blocks.contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from opengemma.quantized_layers import token_ids

        if ids.device.type != "cpu":
            raise ValueError(f"stored embeddings are looked up on the CPU; got ids on {ids.device}")
        flat = token_ids(ids, self.num_embeddings).reshape(-1).contiguous()
        K = self.embedding_dim
        rows = torch.empty(flat.numel(), K, dtype=torch.float32)
        lib = native()
        if lib is None or lib.gguf_gather(self.qtype, self.blocks.data_ptr(), flat.data_ptr(),
                                          rows.data_ptr(), flat.numel(), K):  # fmt: skip
            rows = dequantize_stored(self.qtype, self.blocks[flat], K)
        return rows.to(self.dtype).reshape(*ids.shape, K)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: x (..., d) against every row, float32 (the tied output projection)."""
        rows = x.reshape(-1, self.embedding_dim)
        out = kq_matmul(rows, self.qtype, self.blocks, self.embedding_dim)
        return out.reshape(*x.shape[:-1], self.num_embeddings)


def adopt_stored(model: nn.Module, weights: dict[str, StoredBlocks],
                 dtype: torch.dtype = torch.float32) -> int:  # fmt: skip
    """Replace each nn.Linear / nn.Embedding whose weight `weights` names (module name +
    ".weight") by a StoredLinear / StoredEmbedding over those blocks, in place; returns how
    many were replaced."""
    n = 0
    for prefix, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            key = f"{prefix}.{child_name}.weight" if prefix else f"{child_name}.weight"
            stored = weights.get(key)
            if stored is None or not isinstance(child, (nn.Linear, nn.Embedding)):
                continue
            if tuple(child.weight.shape) != stored.shape:
                raise ValueError(f"{key}: stored blocks of shape {stored.shape} for a layer of "
                                 f"{tuple(child.weight.shape)}")  # fmt: skip
            new = (StoredLinear.from_stored(stored) if isinstance(child, nn.Linear) else
                   StoredEmbedding(stored.data, stored.qtype, stored.in_features, dtype))
            setattr(module, child_name, new)
            n += 1
    return n
