"""Automatic prefix caching: K/V of token prefixes seen before, reused by later requests.

The engine stores a snapshot of a request's cache when its prompt has been read and when it
finishes (prompt + generated tokens). A new request whose prompt begins with a snapshot's tokens
(the previous turn of the same chat, a shared system prompt, the other choices of `n > 1`)
starts from it and computes only the rest.

Sliding-window layers keep a ring of the last `window` positions, so a snapshot of such a layer
holds positions [E - window, E) of its E tokens. Reusing L tokens needs positions
[L - window + 1, L) on every sliding layer (what the query at position L can see): a snapshot
serves a prefix L only when it holds all of them, and never gives a key from the wrong position
or a position the window has dropped. Global layers keep every position, so any L <= E works.

Snapshots are bounded in bytes; the least recently used go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from opengemma.kv_cache import FullLayerCache, KVCache, SlidingLayerCache

MIN_TOKENS = 16  # shorter shared prefixes (<bos><start_of_turn>user...) are not worth a copy


@dataclass
class _LayerSnap:
    k: torch.Tensor  # (1, kv, n, d): the keys of positions lo .. lo + n - 1
    v: torch.Tensor
    lo: int


@dataclass
class Snapshot:
    tokens: torch.Tensor  # (E,) int64: the tokens whose K/V it holds, positions 0 .. E - 1
    layers: list[_LayerSnap | None]
    nbytes: int


class PrefixCache:
    """Snapshots by token prefix, LRU-evicted past `max_bytes`. Used on the engine thread only."""

    def __init__(self, config, max_bytes: int):
        self.window = config.sliding_window
        self.kinds = list(config.layer_types)
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hit_tokens = 0  # prompt tokens served from snapshots, in all
        self._snaps: OrderedDict[tuple[int, ...], Snapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._snaps)

    def store(self, tokens: Sequence[int] | torch.Tensor, cache: KVCache) -> None:
        """Snapshot the first `cache.length` tokens of `cache` (their ids: `tokens`)."""
        n = cache.length
        if n < MIN_TOKENS or self.max_bytes <= 0:
            return
        ids = torch.as_tensor(tokens[:n], dtype=torch.long).clone()
        key = tuple(ids.tolist())
        if key in self._snaps:
            self._snaps.move_to_end(key)
            return
        layers: list[_LayerSnap | None] = []
        size = 0
        for layer in cache.layers:
            if layer is None:
                layers.append(None)
                continue
            if isinstance(layer, SlidingLayerCache):
                lo = max(0, n - self.window)  # a ring may be wider (speculation): the window
                slots = torch.arange(lo, n, device=layer.pos.device) % layer.window
                if not bool((layer.pos[slots] == torch.arange(lo, n, device=slots.device)).all()):
                    return  # the ring does not hold what it should: store nothing
                k, v = layer.k[:, :, slots].clone(), layer.v[:, :, slots].clone()
            else:
                lo = 0
                k, v = layer.k[:, :, :n].clone(), layer.v[:, :, :n].clone()
            layers.append(_LayerSnap(k, v, lo))
            size += k.nbytes + v.nbytes
        if size > self.max_bytes:
            return
        self._snaps[key] = Snapshot(ids, layers, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._snaps.popitem(last=False)
            self.nbytes -= old.nbytes

    def usable(self, snap: Snapshot, prompt: torch.Tensor) -> int:
        """How many leading prompt tokens `snap` can serve (0: none). At least one prompt
        token is always left to compute: its logits give the first generated token."""
        m = min(len(snap.tokens), len(prompt) - 1)
        if m < MIN_TOKENS:
            return 0
        diff = (snap.tokens[:m] != prompt[:m]).nonzero()
        length = int(diff[0]) if len(diff) else m
        if length < MIN_TOKENS:
            return 0
        for kind, layer in zip(self.kinds, snap.layers, strict=True):
            if layer is None:
                continue
            need = max(0, length - self.window + 1) if kind == "sliding" else 0
            if layer.lo > need:
                return 0  # the window has moved past keys the next query needs
        return length

    def restore(self, prompt: Sequence[int], cache: KVCache) -> int:
        """Fill an empty `cache` with the longest usable cached prefix of `prompt`; returns
        its length (0: nothing cached fits)."""
        if not self._snaps or cache.length != 0:
            return 0
        ids = torch.as_tensor(list(prompt), dtype=torch.long)
        best, length = None, 0
        for key, snap in self._snaps.items():
            n = self.usable(snap, ids)
            if n > length:
                best, length = key, n
        if best is None:
            return 0
        self._snaps.move_to_end(best)
        snap = self._snaps[best]
        for kind, dest, src in zip(self.kinds, cache.layers, snap.layers, strict=True):
            if dest is None or src is None:
                continue
            need = max(0, length - self.window + 1) if kind == "sliding" else 0
            k = src.k[:, :, need - src.lo : length - src.lo]
            v = src.v[:, :, need - src.lo : length - src.lo]
            if isinstance(dest, FullLayerCache):
                dest.k[:, :, need:length] = k
                dest.v[:, :, need:length] = v
            else:
                positions = torch.arange(need, length, device=dest.pos.device)
                slots = positions % dest.window
                dest.k[:, :, slots] = k
                dest.v[:, :, slots] = v
                dest.pos[slots] = positions
        cache.length = length
        self.hit_tokens += length
        return length
