"""One Gemma decoder for every generation, driven by GemmaConfig fields alone.

ids (B, T) + optional KV cache in, float32 logits (B, T, vocab) out. Module names equal the
Hugging Face checkpoint names (`layers.3.self_attn.q_proj`), so the HF key map is nearly the
identity. An absent norm is `nn.Identity`; the model never asks which family it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from opengemma.config import GemmaConfig
from opengemma.kv_cache import KVCache, attention_mask


class RMSNorm(nn.Module):
    """x / rms(x) * (1 + w), computed in float32 (Gemma stores w as an offset from 1)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # the reduction as the reference implementations write it (F.rms_norm sums in another
        # order: 1e-3 apart after Gemma 2's large activations)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        out = xf * (1.0 + self.weight.float())
        return out if out.dtype == x.dtype else out.to(x.dtype)


def _norm_or_identity(present: bool, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if present else nn.Identity()


def rope_tables(
    pos: torch.Tensor, head_dim: int, theta: float, scaling: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, head_dim) for absolute positions `pos` (rotate-half layout)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=pos.device) / head_dim
    inv_freq = 1.0 / (theta**exponents) / scaling
    angles = pos.float()[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position; the two halves of D form the complex pairs."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else torch.tanh(x / cap) * cap


class Attention(nn.Module):
    def __init__(self, cfg: GemmaConfig, sliding: bool):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.softcap = cfg.attn_logit_softcap
        self.window = cfg.sliding_window if sliding else None
        self.bidirectional = cfg.use_bidirectional_attention
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = _norm_or_identity(cfg.qk_norm, self.head_dim, cfg.rms_norm_eps)
        self.k_norm = _norm_or_identity(cfg.qk_norm, self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, rope, pos, layer_cache=None, masks=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv, self.head_dim))
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
        cos, sin = rope
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B, H, T, D)
        k = apply_rope(k.transpose(1, 2), cos, sin)  # (B, KV, T, D)
        v = v.transpose(1, 2)  # (B, KV, T, D)
        if isinstance(layer_cache, list):  # batched decode: one cache and position per row
            rows = [self._cached(q[b : b + 1], k[b : b + 1], v[b : b + 1], pos[b : b + 1], c,
                                 masks, b) for b, c in enumerate(layer_cache)]  # fmt: skip
            out = torch.cat(rows, dim=0)
        else:
            out = self._cached(q, k, v, pos, layer_cache, masks)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    def _cached(self, q, k, v, pos, layer_cache, masks=None, row=None) -> torch.Tensor:
        if layer_cache is not None:
            k, v, k_pos = layer_cache.update(k, v, pos)  # (B, KV, S, D), (S,)
        else:
            k_pos = pos
        # every layer of one kind sees the same key positions: build its mask once per forward
        key = (self.window, row, k_pos.shape[0])
        mask = masks.get(key) if masks is not None else None
        if mask is None:
            mask = attention_mask(pos, k_pos, self.window, self.bidirectional)
            pad = masks.get("key_mask") if masks is not None else None
            if pad is not None:  # (B, S) real tokens -> (B, 1, T, S); padding queries see
                # every key, so that no row is all -inf (NaN would reach real rows via values)
                mask = (mask & pad[:, None, None, :]) | ~pad[:, None, -mask.shape[0] :, None]
            if masks is not None:
                masks[key] = mask
        return self._attend(q, k, v, mask)

    def _attend(self, q, k, v, mask) -> torch.Tensor:
        # Group the query heads that share a key head: (B, KV, G*T, D) against (B, KV, S, D),
        # so multi-query and grouped-query attention never copy keys.
        B, H, T, D = q.shape
        G = H // self.n_kv
        qg = q.reshape(B, self.n_kv, G * T, D)
        scores = torch.matmul(qg, k.transpose(-1, -2)) * self.scale  # (B, KV, G*T, S)
        scores = softcap(scores, self.softcap)
        mask = mask.repeat(G, 1) if mask.dim() == 2 else mask.repeat(1, 1, G, 1)
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        return torch.matmul(probs, v).reshape(B, H, T, D)


class MLP(nn.Module):
    """GeGLU with the tanh approximation of GeLU."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GemmaConfig, kind: str):
        super().__init__()
        d, eps, sandwich = cfg.hidden_size, cfg.rms_norm_eps, cfg.sandwich_norm
        self.kind = kind
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = Attention(cfg, sliding=kind == "sliding")
        self.post_attention_layernorm = _norm_or_identity(sandwich, d, eps)
        self.pre_feedforward_layernorm = RMSNorm(d, eps)
        self.mlp = MLP(cfg)
        self.post_feedforward_layernorm = _norm_or_identity(sandwich, d, eps)

    def forward(self, x, rope, pos, layer_cache=None, masks=None) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), rope, pos, layer_cache, masks)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h)


class GemmaModel(nn.Module):
    """The decoder: embedding (tied to the output projection), blocks, final norm."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.config = cfg
        weight = torch.empty(cfg.vocab_size, cfg.hidden_size)
        if weight.device.type != "meta":  # on meta (shapes only), skip the initializer: its
            nn.init.normal_(weight)  # meta version imports the whole compiler stack (~1.5 s)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, _weight=weight)
        self.layers = nn.ModuleList(Block(cfg, kind) for kind in cfg.layer_types)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # set by opengemma.load() for int8 block weights: one-token steps in one native call
        self.native_decoder = None

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits from final hidden states through the tied embedding."""
        attend = getattr(self.embed_tokens, "attend", None)  # quantized embeddings bring their own
        logits = attend(x) if attend is not None else F.linear(x, self.embed_tokens.weight)
        return softcap(logits.float(), self.config.final_logit_softcap)

    def forward(
        self,
        ids: torch.Tensor,
        cache: KVCache | list[KVCache] | None = None,
        last_only: bool = False,
        key_mask: torch.Tensor | None = None,
        hidden: bool = False,
    ) -> torch.Tensor:
        """ids (B, T) -> float32 logits (B, T, vocab), or (B, 1, vocab) with `last_only`.

        `key_mask` (B, T) bool, without a cache: False marks padding no query may attend to.
        `hidden`: return the final-norm hidden states (B, T, d) instead of logits.

        With a cache, the tokens continue the cached sequence and the cache advances by T.
        With a list of B caches (batched decode, T == 1), row b continues its own sequence at
        its own position: the weights are read once for all rows.
        """
        cfg = self.config
        B, T = ids.shape
        device = ids.device
        if T == 1 and cache is not None and self.native_decoder is not None:
            logits = self.native_decoder.step(ids, cache if isinstance(cache, list) else [cache])
            if logits is not None:
                return logits
        if isinstance(cache, list):
            if T != 1 or len(cache) != B:
                raise ValueError("batched decode takes one token per row and one cache per row")
            pos = torch.cat([c.positions(1, device) for c in cache])  # (B,)
        elif cache is not None:
            pos = cache.positions(T, device)
        else:
            pos = torch.arange(T, device=device)
        x = self.embed_tokens(ids)
        x = x * torch.tensor(math.sqrt(cfg.hidden_size), dtype=x.dtype)  # (B, T, d)
        bases = {
            "global": (cfg.rope_theta, cfg.rope_scaling),
            "sliding": (cfg.rope_local_theta, 1.0),
        }
        ropes = {  # only the kinds this model has (Gemma 1 has no sliding layers)
            kind: rope_tables(pos, cfg.head_dim, *bases[kind], x.dtype)
            for kind in set(cfg.layer_types)
        }
        if isinstance(cache, list):  # (B, D) -> (B, 1, 1, D): one position per row
            ropes = {k: (c[:, None, None], s[:, None, None]) for k, (c, s) in ropes.items()}
        masks: dict = {"key_mask": key_mask}
        for i, layer in enumerate(self.layers):
            if isinstance(cache, list):
                layer_cache = [c.layers[i] for c in cache]
            else:
                layer_cache = cache.layers[i] if cache is not None else None
            x = layer(x, ropes[layer.kind], pos, layer_cache, masks)
        for c in cache if isinstance(cache, list) else [cache] if cache is not None else []:
            c.advance(1 if isinstance(cache, list) else T)
        x = self.norm(x[:, -1:] if last_only else x)
        return x if hidden else self.output(x)

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.config, max_len, batch, dtype=self.dtype, device=self.device)
