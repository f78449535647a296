"""Decode steps in one native call (kernels/decode.c) for models with int8 block weights.

A decode step of a small model is memory-bound in theory and overhead-bound in practice: the
PyTorch path runs several hundred tiny operations per token. `NativeDecoder` binds a quantized
GemmaModel's weights (pointers into its own tensors, no copies) once, and `GemmaModel.forward`
hands it every one-token step whose caches it can drive: float32 caches of one sequence each,
on the CPU. Everything else (prefill, float models, bfloat16, GPUs) stays on the PyTorch path.
"""

from __future__ import annotations

import ctypes
import math
from ctypes import POINTER, c_float, c_long, c_void_p

import torch
from torch import nn

from opengemma.kernels import native
from opengemma.kv_cache import KVCache, SlidingLayerCache
from opengemma.quantized_layers import Q8Embedding, Q8Linear, token_ids
from opengemma.stored_layers import StoredEmbedding, StoredLinear

_Q8_0 = 8  # ggml type id of Q8Linear's / Q8Embedding's blocks; StoredLinear has its own


class _QW(ctypes.Structure):
    _fields_ = [("w", c_void_p), ("n", c_long), ("k", c_long), ("type", c_long)]


_PROJ = ("wq", "wk", "wv", "wo", "wgate", "wup", "wdown")
_NORMS = ("in_norm", "post_attn_norm", "pre_ffn_norm", "post_ffn_norm", "q_norm", "k_norm")


class _DLayer(ctypes.Structure):
    _fields_ = [*((n, _QW) for n in _PROJ), *((n, c_void_p) for n in _NORMS),
                ("inv_freq", c_void_p), ("window", c_long)]  # fmt: skip


class _DModel(ctypes.Structure):
    _fields_ = [*((n, c_long) for n in ("n_layers", "d", "n_heads", "n_kv", "head_dim", "ffn",
                                         "vocab")),
                *((n, c_float) for n in ("eps", "attn_scale", "attn_softcap", "final_softcap",
                                          "embed_scale")),
                ("embed", _QW), ("final_norm", c_void_p), ("layers", POINTER(_DLayer))]  # fmt: skip


class _DCache(ctypes.Structure):
    _fields_ = [("k", c_void_p), ("v", c_void_p), ("pos", c_void_p), ("cap", c_long)]


def _inv_freq(head_dim: int, theta: float, scaling: float) -> torch.Tensor:
    """The RoPE frequencies exactly as opengemma.model.rope_tables computes them."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    return (1.0 / (theta**exponents) / scaling).contiguous()


def native_unsupported(cfg) -> list[str]:
    """The model features kernels/decode.c does not implement (empty: the native step can run
    this config); such models decode on the PyTorch path, which `opengemma bench` reports."""
    lacking = {
        "Gemma 4 norm scales": cfg.norm_offset != 1.0,
        "value norm": cfg.v_norm,
        "per-layer embeddings": bool(cfg.hidden_size_per_layer_input),
        "KV sharing": bool(cfg.num_kv_shared_layers),
        "mixture of experts": bool(cfg.num_experts),
        "global head shape": cfg.global_head_dim not in (None, cfg.head_dim)
        or cfg.num_global_kv_heads not in (None, cfg.num_kv_heads),
        "keys as values": cfg.attention_k_eq_v,
        "partial RoPE": cfg.rope_partial_factor != 1.0,
        "layer scalars": cfg.layer_scalar,
        "bidirectional attention": cfg.use_bidirectional_attention,
    }
    return [name for name, missing in lacking.items() if missing]


def _c_floats(k: torch.Tensor, v: torch.Tensor, shape: tuple) -> bool:
    """Whether a layer's keys and values are the contiguous float32 arrays decode.c indexes as
    [n_kv, cap, head_dim] (None in `shape`: any length)."""
    return all(
        t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
        and t.dim() == len(shape) and t.shape == k.shape
        and all(want is None or got == want for got, want in zip(t.shape, shape, strict=True))
        for t in (k, v)
    )  # fmt: skip


class NativeDecoder:
    """One-token decode steps of a quantized GemmaModel through kernels/decode.c."""

    def __init__(self, model: nn.Module, lib: ctypes.CDLL):
        cfg = model.config
        self.lib, self.cfg = lib, cfg
        self._keep: list[torch.Tensor] = []  # tensors whose memory the C structs point into
        self._watch: list[tuple[nn.Module, str, torch.Tensor, int]] = []
        self._layers = (_DLayer * cfg.num_layers)()
        freqs = {
            "global": _inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling),
            "sliding": _inv_freq(cfg.head_dim, cfg.rope_local_theta, 1.0),
        }
        self._keep += freqs.values()
        for i, block in enumerate(model.layers):
            att, mlp, dl = block.self_attn, block.mlp, self._layers[i]
            mods = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj,
                    mlp.down_proj)  # fmt: skip
            for field, mod in zip(_PROJ, mods, strict=True):
                setattr(dl, field, self._qw(mod))
            norms = (block.input_layernorm, block.post_attention_layernorm,
                     block.pre_feedforward_layernorm, block.post_feedforward_layernorm,
                     att.q_norm, att.k_norm)  # fmt: skip
            for field, norm in zip(_NORMS, norms, strict=True):
                setattr(dl, field, self._norm(norm))
            dl.inv_freq = freqs[block.kind].data_ptr()
            dl.window = cfg.sliding_window if block.kind == "sliding" else 0
        self._model = _DModel(
            n_layers=cfg.num_layers, d=cfg.hidden_size, n_heads=cfg.num_heads,
            n_kv=cfg.num_kv_heads, head_dim=cfg.head_dim, ffn=cfg.intermediate_size,
            vocab=cfg.vocab_size, eps=cfg.rms_norm_eps,
            attn_scale=cfg.query_pre_attn_scalar**-0.5, attn_softcap=cfg.attn_logit_softcap or 0.0,
            final_softcap=cfg.final_logit_softcap or 0.0,
            embed_scale=float(torch.tensor(math.sqrt(cfg.hidden_size), dtype=torch.float32)),
            embed=self._qw(model.embed_tokens), final_norm=self._norm(model.norm),
            layers=self._layers,
        )  # fmt: skip

    @classmethod
    def create(cls, model: nn.Module) -> NativeDecoder | None:
        """A decoder for `model`, or None when its layers are not all int8 block layers on the
        CPU in float32, or the native kernels are unavailable."""
        if native_unsupported(model.config):
            return None
        lib = native()
        if lib is None or model.dtype != torch.float32 or model.device.type != "cpu":
            return None
        if not isinstance(model.embed_tokens, (Q8Embedding, StoredEmbedding)):
            return None
        for block in model.layers:
            att, mlp = block.self_attn, block.mlp
            projections = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj,
                           mlp.up_proj, mlp.down_proj)  # fmt: skip
            if not all(isinstance(p, (Q8Linear, StoredLinear)) for p in projections):
                return None
        return cls(model, lib)

    def _qw(self, mod: Q8Linear | StoredLinear | Q8Embedding | StoredEmbedding) -> _QW:
        self._watch.append((mod, "blocks", mod.blocks, mod.blocks._version))
        qtype = getattr(mod, "qtype", _Q8_0)  # the stored layers' own block type
        if isinstance(mod, (Q8Embedding, StoredEmbedding)):
            return _QW(mod.blocks.data_ptr(), mod.num_embeddings, mod.embedding_dim, qtype)
        return _QW(mod.blocks.data_ptr(), mod.out_features, mod.in_features, qtype)

    def _norm(self, norm: nn.Module) -> int | None:
        if isinstance(norm, nn.Identity):
            return None
        self._watch.append((norm, "weight", norm.weight, norm.weight._version))
        mult = (1.0 + norm.weight.detach().float()).contiguous()  # Gemma's (1 + w)
        self._keep.append(mult)
        return mult.data_ptr()

    def current(self) -> bool:
        """Whether the bound tensors are still the model's, unchanged since binding."""
        return all(getattr(m, name) is t and t._version == v for m, name, t, v in self._watch)

    def _rows(self, cache: KVCache) -> ctypes.Array | None:
        """The C view of a one-sequence float32 cache (built once per cache)."""
        rows = getattr(cache, "_native_rows", None)
        if rows is not None:
            return rows
        layers = cache.layers
        if len(layers) != self.cfg.num_layers:
            return None
        rows = (_DCache * len(layers))()
        hd, kv = self.cfg.head_dim, self.cfg.num_kv_heads
        for r, lc in zip(rows, layers, strict=True):
            if lc is None or lc.k.shape[0] != 1 or not _c_floats(lc.k, lc.v, (1, kv, None, hd)):
                return None
            ring = isinstance(lc, SlidingLayerCache)
            if ring and (lc.pos.dtype != torch.int64 or lc.pos.shape != (lc.k.shape[2],)
                         or not lc.pos.is_contiguous()):  # fmt: skip
                return None
            r.k, r.v, r.cap = lc.k.data_ptr(), lc.v.data_ptr(), lc.k.shape[2]
            r.pos = lc.pos.data_ptr() if isinstance(lc, SlidingLayerCache) else None
        cache._native_rows = rows
        return rows

    def step(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor | None:
        """Logits (B, 1, vocab) for one new token per cache, advancing each cache; None when
        these caches cannot be driven natively (the caller then takes the PyTorch path)."""
        rows = [self._rows(c) for c in caches]  # None: a cache decode.c cannot drive
        if any(r is None for r in rows) or ids.device.type != "cpu" or not self.current():
            return None
        B = len(caches)
        if tuple(ids.shape) != (B, 1):
            raise ValueError(f"a decode step takes ids of shape ({B}, 1); got {tuple(ids.shape)}")
        flat = token_ids(ids, self.cfg.vocab_size).reshape(B).contiguous()
        pos = torch.cat([c.positions(1) for c in caches])  # checks the room left in each cache
        logits = self._run(flat, pos, rows).view(B, 1, -1)
        for c in caches:
            c.advance(1)
        return logits

    def step_chunk(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor | None:
        """Logits (T, vocab) for T consecutive tokens of one sequence, in one call that reads
        the weights once: row t attends to the cache and rows 0..t, and holds the same bits as
        the t-th of T one-token `step`s (speculative decoding verifies drafts with it). Ring
        layers need T - 1 slots beyond their window. None when the cache cannot be driven."""
        rows = self._rows(cache)
        if rows is None or ids.device.type != "cpu" or not self.current():
            return None
        flat = token_ids(ids, self.cfg.vocab_size).reshape(-1).contiguous()
        T = flat.numel()
        need = self.cfg.sliding_window + T - 1
        for lc in cache.layers:
            if isinstance(lc, SlidingLayerCache) and lc.k.shape[2] < need:
                raise ValueError(
                    f"a ring of {lc.k.shape[2]} slots cannot verify {T} tokens at once: it needs "
                    f"{need} (the window plus T - 1)"
                )
        pos = cache.positions(T)
        logits = self._run(flat, pos, [rows] * T)
        cache.advance(T)
        return logits

    def _run(self, flat: torch.Tensor, pos: torch.Tensor, rows: list) -> torch.Tensor:
        B = len(rows)
        table = (POINTER(_DCache) * B)(*(ctypes.cast(r, POINTER(_DCache)) for r in rows))
        logits = torch.empty(B, self.cfg.vocab_size, dtype=torch.float32)
        status = self.lib.decode_step(ctypes.byref(self._model), flat.data_ptr(),
                                      pos.data_ptr(), B, table, logits.data_ptr(),
                                      torch.get_num_threads())  # fmt: skip
        if status != 0:
            raise MemoryError("decode_step could not allocate its scratch memory")
        return logits
