"""A strict safetensors reader: the header is validated in full before any tensor is read.

Rules (from the format's specification): an 8-byte little-endian header length, a header of at
most 100 MB that is a UTF-8 JSON object starting with `{`, no duplicate keys, each entry naming a
known dtype, a shape of non-negative integers and `data_offsets` whose length is exactly
elements x dtype size, and offsets that are contiguous, non-overlapping and cover the data
section exactly. Tensors are copied out of a memory map a slice at a time, dropping the file's
pages as they are copied, so loading costs the output tensors plus one slice.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint.errors import CheckpointError

MAX_HEADER = 100_000_000  # bytes, as the reference implementation
MAX_DIMS = 8
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_CHUNK_BYTES = 1 << 26  # copy at most 64 MB of the file at once


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json `object_pairs_hook` that refuses a key given twice (a JSON parser keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


class SafetensorsFile:
    """A validated safetensors file: `entries` (name -> Entry) and `metadata` (str -> str)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                head = f.read(8)
                if len(head) < 8:
                    raise self._fail(f"the file is {size} bytes, too short for a header length")
                n = int.from_bytes(head, "little")
                if n > MAX_HEADER or n > size - 8:
                    raise self._fail(f"header length {n} exceeds the limit or the file")
                raw = f.read(n)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.path}: {exc}") from None
        self.data_start = 8 + n
        self.size = size
        self.metadata: dict[str, str] = {}
        self.entries: dict[str, Entry] = {}
        self._parse(raw)

    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path} is not a valid safetensors file: {what}; the file is damaged or was "
            "not written by a safetensors writer"
        )

    def _parse(self, raw: bytes) -> None:
        if not raw.startswith(b"{"):
            raise self._fail("the header is not a JSON object starting with '{'")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self._fail(f"the header is not valid UTF-8 JSON ({str(exc)[:80]})") from None
        if not isinstance(header, dict):
            raise self._fail("the header is not a JSON object")
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise self._fail("__metadata__ must map strings to strings")
        self.metadata = meta
        for name, spec in header.items():
            self.entries[name] = self._entry(name, spec)
        self._check_layout()

    def _entry(self, name: str, spec: Any) -> Entry:
        if not name:
            raise self._fail("a tensor name is empty")
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise self._fail(f"tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if dtype not in DTYPES:
            raise self._fail(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not _int_list(shape) or len(shape) > MAX_DIMS:
            raise self._fail(f"tensor {name!r} has an invalid shape {str(shape)[:80]}")
        if not _int_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise self._fail(f"tensor {name!r} has invalid data_offsets {str(offsets)[:80]}")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise self._fail(
                f"tensor {name!r}: shape {tuple(shape)} x {dtype} is {nbytes} bytes but its "
                f"data_offsets span {offsets[1] - offsets[0]}"
            )
        start, end = self.data_start + offsets[0], self.data_start + offsets[1]
        return Entry(name, dtype, tuple(shape), start, end)

    def _check_layout(self) -> None:
        expected = self.data_start
        for e in sorted(self.entries.values(), key=lambda e: (e.start, e.end)):
            if e.start < expected:
                raise self._fail(f"tensor {e.name!r} overlaps the tensor before it")
            if e.start > expected:
                raise self._fail(f"a gap of {e.start - expected} bytes lies before {e.name!r}")
            expected = e.end
        if expected != self.size:
            raise self._fail(
                f"the tensors cover {expected - self.data_start} data bytes but the file holds "
                f"{self.size - self.data_start}"
            )

    def load(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A new `dtype` tensor with the stored values, copied a slice at a time."""
        e = self.entries[name]
        out = torch.empty(e.shape, dtype=dtype)
        if e.end == e.start:
            return out
        src = torch.frombuffer(self._map, dtype=torch.uint8, count=e.end - e.start,
                               offset=e.start).view(DTYPES[e.dtype])  # fmt: skip
        src_flat, out_flat = src.view(-1), out.view(-1)
        step = max(1, _CHUNK_BYTES // DTYPES[e.dtype].itemsize)
        for i in range(0, src_flat.numel(), step):
            out_flat[i : i + step].copy_(src_flat[i : i + step])
            self._release(e.start + i * DTYPES[e.dtype].itemsize, step * DTYPES[e.dtype].itemsize)
        return out

    def _release(self, offset: int, nbytes: int) -> None:
        start = offset - offset % mmap.PAGESIZE
        try:
            self._map.madvise(mmap.MADV_DONTNEED, start, min(offset + nbytes, self.size) - start)
        except (OSError, ValueError, AttributeError):
            pass  # advisory only: memory stays higher, nothing is wrong

    def close(self) -> None:
        if self._map is not None:
            self._map.close()


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )
