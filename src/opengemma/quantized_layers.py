"""Weight-only block-quantized layers: GGUF Q8_0 blocks, a float16 scale per 32 int8 weights.

Q8Linear and Q8Embedding replace nn.Linear / nn.Embedding after a model is built (or are built
directly from a GGUF file). Their weights are Q8_0 blocks as llama.cpp stores them (34 bytes per
32 weights, scale inline), so a Q8_0 file's matrices are used exactly as stored, and Q4_0/Q5_0
matrices are held exactly as well (small integers times the same scale). Decoding (a few
activation rows) runs the native int8 kernel: activations are quantized per block of 32 too, so
the weights are read at about one byte each (the tied 262k-row output projection of Gemma 3
dominates a decode step). Long inputs (prefill) dequantize one layer at a time and use the BLAS
matrix product, which is compute- rather than memory-bound there: in bfloat16 (with float32
accumulation) where the CPU has bfloat16 instructions, else in float32.

`quantize_q8` / `dequantize_q8` (int8 values with separate float32 scales) are the format of
quantized activations and of QLoRA's frozen int8 base.
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.nn.functional as F
from torch import nn

from opengemma.errors import InvalidRequestError
from opengemma.kernels import native

QK = 32
BLOCK_BYTES = 34  # Q8_0: float16 scale + 32 int8 values
GEMV_MAX_ROWS = 16  # up to this many activation rows use the int8 kernel


def quantize_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float (N, K) -> int8 (N, K) and float32 scales (N, K/32), round half to even."""
    N, K = w.shape
    _check_width(K)
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


def dequantize_q8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 (N, K) and float32 scales (N, K/32) -> float32 (N, K)."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(f"int8 values are int8 (N, K); got {q.dtype} {tuple(q.shape)}")
    N, K = q.shape
    _check_width(K)
    if scales.dtype != torch.float32 or tuple(scales.shape) != (N, K // QK):
        raise ValueError(f"scales of ({N}, {K}) int8 values are float32 ({N}, {K // QK}); "
                         f"got {scales.dtype} {tuple(scales.shape)}")  # fmt: skip
    q, scales = _on_cpu(q).contiguous(), _on_cpu(scales).contiguous()
    lib = native()
    if lib is None:
        return (q.float().reshape(N, K // QK, QK) * scales[..., None]).reshape(N, K)
    out = torch.empty(N, K, dtype=torch.float32)
    lib.q8_dequantize(q.data_ptr(), scales.data_ptr(), out.data_ptr(), N, K,
                      torch.get_num_threads())  # fmt: skip
    return out


def _check_width(K: int) -> None:
    if K % QK:
        raise InvalidRequestError(
            f"width {K} is not a multiple of the block size {QK}: int8 blocks cannot hold this "
            f"matrix; keep the model in float (quant='none'; on the command line --quant none), "
            f"or pad its rows to a multiple of {QK}"
        )


def _on_cpu(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "cpu":
        raise ValueError(f"the int8 block kernels run on the CPU; got a tensor on {t.device}")
    return t


def token_ids(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """`ids` as int64 after checking that each names one of `vocab` embedding rows: the same
    InvalidRequestError on the float, int8 and native paths (never an out-of-bounds read)."""
    dtype = getattr(ids, "dtype", None)
    if dtype is None or dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise InvalidRequestError(
            f"token ids must be an integer tensor; got {dtype or type(ids).__name__}"
        )
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise InvalidRequestError(
                f"token id {lo if lo < 0 else hi} is outside the vocabulary (0..{vocab - 1}); "
                "pass ids from this model's tokenizer"
            )
    return ids.long()


def quantize_q8_0(w: torch.Tensor) -> torch.Tensor:
    """float (N, K) -> Q8_0 blocks, uint8 (N, K/32*34): bit-identical to the gguf package's
    (and llama.cpp's) Q8_0 quantizer: d = amax/127, q = round-half-away(w / d), d as float16."""
    N, K = w.shape
    _check_width(K)
    src = w.detach().float().contiguous()
    lib = native()
    if lib is not None:
        out = torch.empty(N, K // QK * BLOCK_BYTES, dtype=torch.uint8)
        lib.q8_0_quantize(src.data_ptr(), out.data_ptr(), N, K)
        return out
    blocks = src.reshape(N, K // QK, QK)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
    v = blocks * inv
    a = v.abs()
    floored = a.floor()
    q = (torch.sign(v) * (floored + (2 * (a - floored)).floor())).to(torch.int8)
    scale_bytes = d.half().view(torch.uint8)  # (N, K/32, 2), little-endian
    return torch.cat([scale_bytes, q.view(torch.uint8)], -1).reshape(N, -1)


def split_q8_0(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 blocks (N, K/32*34) -> int8 values (N, K) and float32 scales (N, K/32)."""
    N = blocks.shape[0]
    parts = blocks.reshape(N, -1, BLOCK_BYTES)
    scales = parts[..., :2].contiguous().view(torch.float16).reshape(N, -1).float()
    q = parts[..., 2:].contiguous().view(torch.int8).reshape(N, -1)
    return q, scales


def dequantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0 blocks (N, K/32*34) -> float32 (N, K)."""
    N, K = block_shape(blocks)
    blocks = _on_cpu(blocks).contiguous()
    lib = native()
    if lib is None:
        return dequantize_q8(*split_q8_0(blocks))
    out = torch.empty(N, K, dtype=torch.float32)
    lib.gguf_dequantize(8, blocks.data_ptr(), N, K, out.data_ptr(), torch.get_num_threads())
    return out


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


def dequantize_q8_0_bf16(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0 blocks -> bfloat16 (N, K), rounded to nearest even."""
    N, K = block_shape(blocks)
    blocks = _on_cpu(blocks).contiguous()
    lib = native()
    if lib is None:
        return dequantize_q8_0(blocks).to(torch.bfloat16)
    out = torch.empty(N, K, dtype=torch.bfloat16)
    lib.q8_0_dequantize_bf16(blocks.data_ptr(), out.data_ptr(), N, K, torch.get_num_threads())
    return out


def q8_0_matmul(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x (R, K) float -> (R, N) float32 = x @ W.T for Q8_0 weights, int8 activations per block."""
    if x.dim() != 2:
        raise ValueError(f"activations are (rows, K); got shape {tuple(x.shape)}")
    R, K = x.shape
    N, Kw = block_shape(blocks)
    if K != Kw:
        raise ValueError(f"activations of width {K} against weights of width {Kw}")
    blocks = _on_cpu(blocks).contiguous()
    lib = native()
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    _on_cpu(x)
    if lib is None:
        return F.linear(dequantize_q8(*quantize_q8(x)), dequantize_q8_0(blocks))
    scratch = _scratch(R * K + 4 * R * (K // QK))  # int8 activations, then their scales
    out = torch.empty(R, N, dtype=torch.float32)
    base = scratch.data_ptr()
    lib.q8_0_linear(x.data_ptr(), base, base + R * K, blocks.data_ptr(), out.data_ptr(), R, N,
                    K, torch.get_num_threads())  # fmt: skip
    return out


_local = threading.local()


def _scratch(nbytes: int) -> torch.Tensor:
    """A per-thread reusable byte buffer (grown on demand) for quantized activations."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.numel() < nbytes:
        buf = _local.buf = torch.empty(nbytes, dtype=torch.uint8)
    return buf


def block_shape(blocks: torch.Tensor) -> tuple[int, ...]:
    """The (N, K) weight shape Q8_0 blocks hold ((E, N, K) for stacked experts)."""
    if blocks.dtype != torch.uint8 or blocks.dim() not in (2, 3) or blocks.shape[-1] % BLOCK_BYTES:
        shape = tuple(blocks.shape)
        raise ValueError(
            f"Q8_0 blocks are uint8 (N, K/32*{BLOCK_BYTES}); got {blocks.dtype} {shape}"
        )
    return (*blocks.shape[:-1], blocks.shape[-1] // BLOCK_BYTES * QK)


def q8_linear(rows: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """rows (R, K) @ W.T for Q8_0 blocks (N, K/32*34): int8 activations for a few rows (decode),
    the dequantized weights for many (prefill: compute-bound, bfloat16 where the CPU has it)."""
    if rows.shape[0] <= GEMV_MAX_ROWS:
        return q8_0_matmul(rows, blocks)
    if bf16_matmul_native():  # long inputs: compute-bound, bfloat16 runs at 2-3x
        return F.linear(rows.bfloat16(), dequantize_q8_0_bf16(blocks))
    return F.linear(rows.float(), dequantize_q8_0(blocks))


class Q8Linear(nn.Module):
    """A bias-free linear layer with Q8_0 block weights (`blocks`: uint8 (N, K/32*34))."""

    def __init__(self, blocks: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = block_shape(blocks)
        self.register_buffer("blocks", blocks.contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Q8Linear:
        if linear.bias is not None:
            raise ValueError("Q8Linear has no bias; Gemma's projections have none")
        return cls(quantize_q8_0(linear.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input of width {x.shape[-1]} to a layer {self.in_features} wide")
        out = q8_linear(x.reshape(-1, self.in_features), self.blocks)
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


class Q8Embedding(nn.Module):
    """Q8_0 block embedding table that also serves as the tied output projection."""

    def __init__(self, blocks: torch.Tensor, dtype=torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = block_shape(blocks)
        self.dtype = dtype
        self.register_buffer("blocks", blocks.contiguous())

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> Q8Embedding:
        return cls(quantize_q8_0(emb.weight), dtype=emb.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = _on_cpu(token_ids(ids, self.num_embeddings)).reshape(-1).contiguous()
        lib = native()
        if lib is None:
            rows = dequantize_q8_0(self.blocks[flat])
        else:
            rows = torch.empty(flat.numel(), self.embedding_dim, dtype=torch.float32)
            lib.q8_0_gather(self.blocks.data_ptr(), flat.data_ptr(), rows.data_ptr(),
                            flat.numel(), self.embedding_dim)  # fmt: skip
        return rows.to(self.dtype).reshape(*ids.shape, self.embedding_dim)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: x (..., d) against every row, float32 (the tied output projection)."""
        rows = x.reshape(-1, self.embedding_dim)
        out = q8_0_matmul(rows, self.blocks)
        return out.reshape(*x.shape[:-1], self.num_embeddings)


def quantize_model(
    model: nn.Module,
    weights: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Swap every nn.Linear and the embedding for their Q8 versions, in place, freeing the
    float weights as it goes.

    `weights` (module name + ".weight" -> Q8_0 blocks) supplies weights already quantized, e.g.
    read straight from a GGUF file; the model may then be a `meta` skeleton.
    """
    for prefix, module in list(model.named_modules()):
        if getattr(module, "keep_float", False):  # e.g. the MoE router: exact routing
            continue
        for name in getattr(module, "stacked_weights", ()):  # 3-D expert weights
            key = f"{prefix}.{name}" if prefix else name
            given = weights.get(key) if weights is not None else None
            w = getattr(module, name)
            blocks = given if given is not None else quantize_q8_0(
                w.reshape(-1, w.shape[-1])).reshape(*w.shape[:-1], -1)  # fmt: skip
            delattr(module, name)
            module.register_buffer(name, blocks)
        for child_name, child in list(module.named_children()):
            key = f"{prefix}.{child_name}.weight" if prefix else f"{child_name}.weight"
            given = weights.get(key) if weights is not None else None
            if isinstance(child, nn.Linear):
                new = Q8Linear(given) if given is not None else Q8Linear.from_linear(child)
            elif isinstance(child, nn.Embedding) and given is not None:
                new = Q8Embedding(given, dtype=dtype)
            elif isinstance(child, nn.Embedding):
                new = Q8Embedding.from_embedding(child)
            else:
                continue
            setattr(module, child_name, new)
    return model
