"""Key/value caches for decoding, and the attention masks they imply.

A global-attention layer keeps every key (a fixed-size buffer of `max_len` slots). A sliding
layer only ever needs the last `window` keys, so it keeps a ring of `window` slots: memory stays
flat however long the conversation grows. Each cache returns, with its keys, the absolute
position of every key slot (-1 for an empty slot); the mask follows from positions alone.

Shapes: keys and values are (B, n_kv_heads, S, head_dim); positions are 1-D int64.
"""

from __future__ import annotations

import torch

from opengemma.config import GemmaConfig
from opengemma.errors import InvalidRequestError


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None, bidirectional: bool = False
) -> torch.Tensor:
    """Boolean (T, S) mask: True where query at q_pos[t] may attend to the key at k_pos[s].

    Causal, empty slots (-1) excluded, and for a sliding layer only the last `window`
    positions, the query's own included (key > query - window).

    Bidirectional (EmbeddingGemma): every key, and for a sliding layer the keys at most
    `window // 2` positions away on either side (transformers keeps `|q - k| < window // 2 + 1`,
    llama.cpp's symmetric window `|q - k| <= window // 2`: the same set).
    """
    q = q_pos[:, None]
    k = k_pos[None, :]
    if bidirectional:
        allowed = (k >= 0) & (q >= 0)
        if window is not None:
            allowed &= (k - q).abs() <= window // 2
        return allowed
    allowed = (k >= 0) & (k <= q)
    if window is not None:
        allowed &= k > q - window
    return allowed


class FullLayerCache:
    """Every key since position 0, in a preallocated (B, n_kv, max_len, head_dim) buffer."""

    def __init__(self, batch: int, n_kv: int, max_len: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, n_kv, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.max_len = max_len
        self.all_pos = torch.arange(max_len, device=device)

    def update(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        end = int(pos[-1]) + 1
        if end > self.max_len:
            raise InvalidRequestError(
                f"sequence reached {end} tokens but the cache holds {self.max_len}; "
                "allocate a longer cache or shorten the prompt"
            )
        start = int(pos[0])
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end], self.all_pos[:end]


class SlidingLayerCache:
    """The last `window` keys in a ring of `window` slots; slot = position % window."""

    def __init__(self, batch: int, n_kv: int, window: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, n_kv, window, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((window,), -1, dtype=torch.long, device=device)
        self.window = window

    def update(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Attend over the ring as it was plus the new keys; only then overwrite the ring, since
        # early queries of a long chunk still need keys the chunk's tail will evict.
        if pos.numel() == 1:
            # decode: write first (the evicted slot holds position p - window, outside the
            # window of p), then attend over the ring alone: no concatenation per token.
            slot = int(pos[0]) % self.window
            self.k[:, :, slot] = k[:, :, 0]
            self.v[:, :, slot] = v[:, :, 0]
            self.pos[slot] = pos[0]
            return self.k, self.v, self.pos
        keys = torch.cat([self.k, k], dim=2)
        values = torch.cat([self.v, v], dim=2)
        k_pos = torch.cat([self.pos, pos])
        keep = min(pos.numel(), self.window)
        tail = pos[-keep:]
        slots = tail % self.window
        self.k.index_copy_(2, slots, k[:, :, -keep:])
        self.v.index_copy_(2, slots, v[:, :, -keep:])
        self.pos.index_copy_(0, slots, tail)
        return keys, values, k_pos


class KVCache:
    """One cache per layer plus the number of positions already filled."""

    def __init__(
        self,
        config: GemmaConfig,
        max_len: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.max_len = max_len
        self.length = 0
        # None for a KV-shared layer (Gemma 4): it attends over another layer's cache
        self.layers: list[FullLayerCache | SlidingLayerCache | None] = []
        for i, kind in enumerate(config.layer_types):
            if config.kv_source(i) != i:
                self.layers.append(None)
                continue
            args = (batch, config.layer_kv_heads(i))
            head_dim = config.layer_head_dim(i)
            if kind == "sliding" and config.sliding_window < max_len:
                cache = SlidingLayerCache(*args, config.sliding_window, head_dim, dtype, device)
            else:
                cache = FullLayerCache(*args, max_len, head_dim, dtype, device)
            self.layers.append(cache)

    def positions(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Absolute positions of the next `n` tokens."""
        if self.length + n > self.max_len:
            raise InvalidRequestError(
                f"{self.length + n} tokens do not fit in a cache of {self.max_len}; "
                "shorten the prompt or lower max_tokens"
            )
        return torch.arange(self.length, self.length + n, device=device)

    def advance(self, n: int) -> None:
        self.length += n
