"""Exact and near-duplicate removal (MinHash with locality-sensitive hashing).

State grows with the number of distinct records kept, not with their size: 8 bytes per record
for exact duplicates and `bands` 8-byte band keys per record for near duplicates (about 1 KB of
Python objects per kept record with the defaults). The first occurrence is kept.
"""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = (1 << 61) - 1  # Mersenne prime: the universal hash family's modulus


def normalize(text: str) -> str:
    """Lower case, whitespace collapsed: exact duplicates ignore case and spacing."""
    return " ".join(text.lower().split())


class Deduplicator:
    """`check(text)` -> None (new), "duplicate" or "near_duplicate"; remembers what it saw.

    Near duplicates: word `shingle`-grams, `bands` x `rows` MinHash permutations; two texts
    collide in some band with probability 1 - (1 - s**rows)**bands at Jaccard similarity s
    (about 0.5 at s = 0.8 and 0.96 at s = 0.9 with the defaults 10 x 12).
    """

    def __init__(self, near: bool = True, shingle: int = 5, bands: int = 10, rows: int = 12,
                 seed: int = 1) -> None:  # fmt: skip
        self.near, self.shingle, self.bands, self.rows = near, shingle, bands, rows
        rng = np.random.default_rng(seed)
        n = bands * rows
        self._a = rng.integers(1, _PRIME, size=n, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, size=n, dtype=np.uint64)
        self._exact: set[bytes] = set()
        self._buckets: list[set[bytes]] = [set() for _ in range(bands)]

    def check(self, text: str) -> str | None:
        norm = normalize(text)
        key = hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest()
        if key in self._exact:
            return "duplicate"
        self._exact.add(key)
        if not self.near:
            return None
        bands = self.band_keys(norm)
        hit = any(k in bucket for k, bucket in zip(bands, self._buckets, strict=True))
        for k, bucket in zip(bands, self._buckets, strict=True):
            bucket.add(k)
        return "near_duplicate" if hit else None

    def signature(self, norm: str) -> np.ndarray:
        """MinHash signature (bands*rows uint64) of a normalized text's word shingles."""
        words = _WORD.findall(norm)
        k = min(self.shingle, max(1, len(words)))
        grams = {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}
        x = np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), dtype=np.uint64)
        # (a * x + b) mod p with x < 2**32 and a < 2**61 would overflow 64 bits: split a.
        a_hi, a_lo = self._a >> np.uint64(32), self._a & np.uint64(0xFFFFFFFF)
        hi = (a_hi[:, None] * x[None, :]) % _PRIME
        prod = ((hi << np.uint64(32)) % _PRIME + a_lo[:, None] * x[None, :]) % _PRIME
        return ((prod + self._b[:, None]) % _PRIME).min(axis=1)

    def band_keys(self, norm: str) -> list[bytes]:
        sig = self.signature(norm).reshape(self.bands, self.rows)
        return [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in sig]
