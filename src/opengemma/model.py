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
from opengemma.errors import InvalidRequestError
from opengemma.kv_cache import KVCache, attention_mask
from opengemma.quantized_layers import token_ids


class RMSNorm(nn.Module):
    """x / rms(x) * (offset + w), computed in float32. Gemma 1-3 store w as an offset from 1
    (offset 1), Gemma 4 stores the scale itself (offset 0); `scale=False`: no weight at all."""

    def __init__(self, dim: int, eps: float, offset: float = 1.0, scale: bool = True):
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim)) if scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # the reduction as the reference implementations write it (F.rms_norm sums in another
        # order: 1e-3 apart after Gemma 2's large activations)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        out = xf if self.weight is None else xf * (self.offset + self.weight.float())
        return out if out.dtype == x.dtype else out.to(x.dtype)


def _norm(cfg: GemmaConfig, dim: int, present: bool = True, scale: bool = True) -> nn.Module:
    if not present:
        return nn.Identity()
    return RMSNorm(dim, cfg.rms_norm_eps, cfg.norm_offset, scale)


def rope_inv_freq(head_dim: int, theta: float, scaling: float, partial: float = 1.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:  # fmt: skip
    """(head_dim/2,) RoPE frequencies. `partial` < 1 ("proportional" RoPE, Gemma 4 global
    layers) rotates only the first `partial` share of the pairs, at the frequencies they have
    in a full head; the other pairs get frequency 0 and pass through unchanged."""
    rotated = int(partial * head_dim // 2)
    exponents = torch.arange(0, 2 * rotated, 2, dtype=torch.float32, device=device) / head_dim
    inv_freq = 1.0 / (theta**exponents) / scaling
    still = torch.zeros(head_dim // 2 - rotated, dtype=torch.float32, device=device)
    return torch.cat([inv_freq, still]) if still.numel() else inv_freq


def rope_tables(
    pos: torch.Tensor, head_dim: int, theta: float, scaling: float, dtype: torch.dtype,
    partial: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """cos, sin of shape (T, head_dim) for absolute positions `pos` (rotate-half layout)."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling, partial, pos.device)
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
    """Self-attention of layer `i`. Its shape comes from the config's per-layer fields: Gemma 4
    global layers have their own head width and KV heads and may take values from the key
    projection; a KV-shared layer has no key/value weights and attends over the keys/values
    that the last earlier layer of its kind left in `shared`."""

    def __init__(self, cfg: GemmaConfig, i: int):
        super().__init__()
        self.kind = cfg.layer_types[i]
        self.n_heads, self.n_kv = cfg.num_heads, cfg.layer_kv_heads(i)
        self.head_dim = hd = cfg.layer_head_dim(i)
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.softcap = cfg.attn_logit_softcap
        self.window = cfg.sliding_window if self.kind == "sliding" else None
        self.bidirectional = cfg.use_bidirectional_attention
        self.shares_kv = cfg.kv_source(i) != i
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.q_norm = _norm(cfg, hd, cfg.qk_norm)
        if not self.shares_kv:
            self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
            self.v_proj = None if cfg.layer_k_eq_v(i) else nn.Linear(d, self.n_kv * hd, bias=False)
            self.k_norm = _norm(cfg, hd, cfg.qk_norm)
            self.v_norm = _norm(cfg, hd, cfg.v_norm, scale=False)

    def forward(self, x, rope, pos, layer_cache=None, masks=None, shared=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim))
        cos, sin = rope
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B, H, T, D)
        batched = isinstance(layer_cache, list) or (
            self.shares_kv and isinstance(shared[self.kind], list))  # fmt: skip
        if self.shares_kv:
            kv = shared[self.kind]  # the producer's (k, v, k_pos), per row when batched
        else:
            k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
            v = k if self.v_proj is None else self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
            k = apply_rope(self.k_norm(k).transpose(1, 2), cos, sin)  # (B, KV, T, D)
            v = self.v_norm(v).transpose(1, 2)  # (B, KV, T, D)
            if batched:  # batched decode: one cache and position per row
                kv = [self._store(k[b : b + 1], v[b : b + 1], pos[b : b + 1], c)
                      for b, c in enumerate(layer_cache)]  # fmt: skip
            else:
                kv = self._store(k, v, pos, layer_cache)
            if shared is not None:
                shared[self.kind] = kv
        if batched:
            rows = [self._masked(q[b : b + 1], *kv[b], pos[b : b + 1], masks, b)
                    for b in range(B)]  # fmt: skip
            out = torch.cat(rows, dim=0)
        else:
            out = self._masked(q, *kv, pos, masks)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    @staticmethod
    def _store(k, v, pos, layer_cache):
        """(keys, values, key positions) to attend over, after writing the cache if any."""
        if layer_cache is not None:
            return layer_cache.update(k, v, pos)  # (B, KV, S, D) twice, (S,)
        return k, v, pos

    def _masked(self, q, k, v, k_pos, pos, masks=None, row=None) -> torch.Tensor:
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

    def __init__(self, d: int, width: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, width, bias=False)
        self.up_proj = nn.Linear(d, width, bias=False)
        self.down_proj = nn.Linear(width, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Block(nn.Module):
    """One decoder layer: attention and MLP with their norms; for Gemma 4 also the
    mixture-of-experts branch (`router`, `experts`), the per-layer-embedding gate and the
    layer's output scalar. Absent parts are None and cost nothing."""

    def __init__(self, cfg: GemmaConfig, i: int):
        super().__init__()
        d, sandwich = cfg.hidden_size, cfg.sandwich_norm
        self.kind = cfg.layer_types[i]
        self.input_layernorm = _norm(cfg, d)
        self.self_attn = Attention(cfg, i)
        self.post_attention_layernorm = _norm(cfg, d, sandwich)
        self.pre_feedforward_layernorm = _norm(cfg, d)
        self.mlp = MLP(d, cfg.layer_intermediate(i))
        self.post_feedforward_layernorm = _norm(cfg, d, sandwich)
        self.router = self.experts = None
        if cfg.num_experts:
            self.router = Router(cfg)
            self.experts = Experts(cfg)
            self.post_feedforward_layernorm_1 = _norm(cfg, d)
            self.post_feedforward_layernorm_2 = _norm(cfg, d)
            self.pre_feedforward_layernorm_2 = _norm(cfg, d)
        self.per_layer_input_gate = None
        if cfg.hidden_size_per_layer_input:
            ple = cfg.hidden_size_per_layer_input
            self.per_layer_input_gate = nn.Linear(d, ple, bias=False)
            self.per_layer_projection = nn.Linear(ple, d, bias=False)
            self.post_per_layer_input_norm = _norm(cfg, d)
        if cfg.layer_scalar:
            self.register_buffer("layer_scalar", torch.ones(1))
        else:
            self.layer_scalar = None

    def forward(self, x, rope, pos, layer_cache=None, masks=None, shared=None, ple=None):
        h = self.self_attn(self.input_layernorm(x), rope, pos, layer_cache, masks, shared)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        if self.experts is not None:  # routed on the residual stream, beside the dense MLP
            flat = x.reshape(-1, x.shape[-1])  # (B*T, d)
            moe = self.experts(self.pre_feedforward_layernorm_2(flat), *self.router(flat))
            h = self.post_feedforward_layernorm_1(h) + self.post_feedforward_layernorm_2(
                moe.reshape(x.shape))  # fmt: skip
        x = x + self.post_feedforward_layernorm(h)
        if self.per_layer_input_gate is not None:  # ple: this layer's (B, T, ple) slice
            g = F.gelu(self.per_layer_input_gate(x), approximate="tanh") * ple
            x = x + self.post_per_layer_input_norm(self.per_layer_projection(g))
        return x if self.layer_scalar is None else x * self.layer_scalar


class Router(nn.Module):
    """Top-k expert choice per token: softmax in float32 over scaled, normed inputs, the k
    best renormalised to sum 1, then multiplied by each expert's own scale. Its projection
    stays in float when the rest is quantized: an int8 router would flip near-tied choices."""

    keep_float = True

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        d, self.k = cfg.hidden_size, cfg.top_k_experts
        self.norm = RMSNorm(d, cfg.rms_norm_eps, scale=False)
        self.proj = nn.Linear(d, cfg.num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(d))
        self.per_expert_scale = nn.Parameter(torch.ones(cfg.num_experts))
        self.root = d**-0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> expert weights (N, k) and expert ids (N, k)."""
        scores = self.proj(self.norm(x) * self.scale * self.root)  # (N, E)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        weights, ids = torch.topk(probs, self.k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[ids], ids


class Experts(nn.Module):
    """`num_experts` GeGLU MLPs stored as 3-D tensors (transformers' layout: gate and up
    stacked in `gate_up_proj`); each token runs through its routed experts only. Quantized
    (opengemma.quantized_layers), the two tensors become int8 blocks read one routed expert at a
    time."""

    stacked_weights = ("gate_up_proj", "down_proj")

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        E, d, w = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * w, d))
        self.down_proj = nn.Parameter(torch.empty(E, d, w))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x (N, d), weights/ids (N, k) -> (N, d): the weighted sum of the chosen experts."""
        out = torch.zeros_like(x)
        for e in torch.unique(ids).tolist():  # only the experts some token was routed to
            token, slot = torch.where(ids == e)
            gate, up = self._linear(x[token], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = self._linear(F.gelu(gate, approximate="tanh") * up, self.down_proj[e])
            out.index_add_(0, token, (y * weights[token, slot, None]).to(out.dtype))
        return out

    @staticmethod
    def _linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dtype != torch.uint8:
            return F.linear(x, w)
        from opengemma.quantized_layers import q8_linear  # int8 blocks of one expert

        return q8_linear(x, w).to(x.dtype)


class GemmaModel(nn.Module):
    """The decoder: embedding (tied to the output projection), blocks, final norm."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.config = cfg
        weight = torch.empty(cfg.vocab_size, cfg.hidden_size)
        if weight.device.type != "meta":  # on meta (shapes only), skip the initializer: its
            nn.init.normal_(weight)  # meta version imports the whole compiler stack (~1.5 s)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, _weight=weight)
        if cfg.hidden_size_per_layer_input:  # Gemma 4 PLE: one packed table for all layers
            width = cfg.num_layers * cfg.hidden_size_per_layer_input
            table = torch.empty(cfg.vocab_size_per_layer_input, width)
            if table.device.type != "meta":
                nn.init.normal_(table)
            self.embed_tokens_per_layer = nn.Embedding(*table.shape, _weight=table)
            self.per_layer_model_projection = nn.Linear(cfg.hidden_size, width, bias=False)
            self.per_layer_projection_norm = _norm(cfg, cfg.hidden_size_per_layer_input)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = _norm(cfg, cfg.hidden_size)
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
        ids = token_ids(ids, cfg.vocab_size)  # the same error on every path, never a bad read
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
        ple = self.per_layer_inputs(ids, x) if cfg.hidden_size_per_layer_input else None
        ropes = self._ropes(pos, x.dtype, batched=isinstance(cache, list))
        masks: dict = {"key_mask": key_mask}
        shared: dict = {}  # kind -> keys/values of the last layer of that kind (KV sharing)
        for i, layer in enumerate(self.layers):
            if isinstance(cache, list):
                layer_cache = [c.layers[i] for c in cache]
            else:
                layer_cache = cache.layers[i] if cache is not None else None
            x = layer(x, ropes[layer.kind], pos, layer_cache, masks, shared,
                      None if ple is None else ple[:, :, i])  # fmt: skip
        for c in cache if isinstance(cache, list) else [cache] if cache is not None else []:
            c.advance(1 if isinstance(cache, list) else T)
        x = self.norm(x[:, -1:] if last_only else x)
        return x if hidden else self.output(x)

    def _ropes(self, pos: torch.Tensor, dtype: torch.dtype, batched: bool) -> dict:
        """cos/sin tables per layer kind this model has (Gemma 1 has no sliding layers); global
        layers rotate with their own head width and share of rotated pairs."""
        cfg = self.config
        ropes = {}
        for kind in set(cfg.layer_types):
            i = cfg.layer_types.index(kind)
            args = ((cfg.rope_theta, cfg.rope_scaling, dtype, cfg.rope_partial_factor)
                    if kind == "global" else (cfg.rope_local_theta, 1.0, dtype))  # fmt: skip
            cos, sin = rope_tables(pos, cfg.layer_head_dim(i), *args)
            # batched decode: (B, D) -> (B, 1, 1, D), one position per row
            ropes[kind] = (cos[:, None, None], sin[:, None, None]) if batched else (cos, sin)
        return ropes

    def per_layer_inputs(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gemma 4 per-layer embeddings (B, T, layers, ple): the token's own row of the packed
        table (scaled by sqrt(ple)) plus a normed projection of the scaled main embedding `x`
        (scaled by hidden^-1/2), the sum scaled by 2^-1/2."""
        cfg = self.config
        shape = (*ids.shape, cfg.num_layers, cfg.hidden_size_per_layer_input)
        if int(ids.max()) >= cfg.vocab_size_per_layer_input:
            raise InvalidRequestError(
                f"token id {int(ids.max())} has no per-layer embedding (the table has "
                f"{cfg.vocab_size_per_layer_input} rows)"
            )
        own = self.embed_tokens_per_layer(ids)
        own = own * torch.tensor(math.sqrt(cfg.hidden_size_per_layer_input), dtype=own.dtype)
        ctx = self.per_layer_model_projection(x) * cfg.hidden_size**-0.5
        ctx = self.per_layer_projection_norm(ctx.reshape(shape))
        return (ctx + own.reshape(shape)) * 2.0**-0.5

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.config, max_len, batch, dtype=self.dtype, device=self.device)
