"""A strict, bounds-checked GGUF parser over a memory map.

Every count, length, dimension and offset read from the file is checked against the bytes that
remain before it is used, so a crafted header (huge `n_kv`, huge string lengths, overflowing
dimensions, tensors pointing past the end or overlapping) is refused with a ModelLoadError
instead of allocating or reading out of bounds. Tensor data stays in the memory map until a
tensor is asked for. Layout (GGUF v2/v3, little-endian): magic, version, tensor count, kv
count, the key/values, the tensor infos, padding to `general.alignment`, then the data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opengemma.errors import ModelLoadError

_SCALARS = {  # GGUF value type -> struct format (without byte order)
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "u1",
          10: "u8", 11: "i8", 12: "f8"}  # fmt: skip
MAX_KV = 1 << 20  # far above any real model (a few dozen keys)
MAX_TENSORS = 1 << 20
MAX_DIMS = 4


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # row-major (numpy / PyTorch) order: GGUF's dims reversed
    qtype: int  # ggml type id
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.qtype).name


class GGUFFile:
    """Parsed header of a GGUF file: `metadata` (key -> value) and `tensors` (name -> info)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {self.path}: {exc}") from None
        self._buf = memoryview(self._map)
        self._pos = 0
        self.byteorder = "<"  # ">" for the rare big-endian files (metadata only)
        self.metadata: dict[str, Any] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._parse()

    # ------------------------------------------------------------------ primitive reads
    def _fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path} is not a valid GGUF file: {what} (at byte {self._pos})")

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._buf):
            raise self._fail(f"needs {n} more bytes but the file ends first")
        view = self._buf[self._pos : self._pos + n]
        self._pos += n
        return view

    def _scalar(self, code: str) -> Any:
        fmt = self.byteorder + code
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        n = self._scalar("Q")
        try:
            return str(self._take(n), "utf-8")
        except UnicodeDecodeError:
            raise self._fail("a string is not valid UTF-8") from None

    def _value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self._scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY and depth == 0:
            etype, count = self._scalar("I"), self._scalar("Q")
            return self._array(etype, count)
        raise self._fail(f"unknown value type {vtype}")

    def _array(self, etype: int, count: int) -> Any:
        if etype in _NUMPY:
            dtype = np.dtype(self.byteorder + _NUMPY[etype])
            if count > (len(self._buf) - self._pos) // dtype.itemsize:
                raise self._fail(f"an array of {count} items runs past the end of the file")
            arr = np.frombuffer(self._take(count * dtype.itemsize), dtype=dtype)
            return arr.astype(bool).tolist() if etype == 7 else arr.tolist()
        if etype == _STRING:
            if count > (len(self._buf) - self._pos) // 8:  # each string needs its 8-byte length
                raise self._fail(f"an array of {count} strings runs past the end of the file")
            return [self._string() for _ in range(count)]
        raise self._fail(f"unsupported array element type {etype}")

    # ------------------------------------------------------------------ structure
    def _parse(self) -> None:
        if bytes(self._take(4)) != b"GGUF":
            raise ModelLoadError(f"{self.path} is not a GGUF file (bad magic)")
        version = self._scalar("I")
        if version & 0xFFFF == 0 and version:  # written big-endian (GGUF for s390x)
            self.byteorder = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in (2, 3):
            raise self._fail(f"unsupported GGUF version {version} (2 and 3 are read)")
        n_tensors, n_kv = self._scalar("Q"), self._scalar("Q")
        if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
            raise self._fail(f"implausible counts: {n_kv} key/values, {n_tensors} tensors")
        for _ in range(n_kv):
            key = self._string()
            if key in self.metadata:
                raise self._fail(f"duplicate key {key!r}")
            self.metadata[key] = self._value(self._scalar("I"))
        raw = [self._tensor_info() for _ in range(n_tensors)]
        align = self.metadata.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise self._fail(f"general.alignment must be a power of two, got {align!r}")
        data_start = -(-self._pos // align) * align
        self._place(raw, data_start, align)

    def _tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self._string()
        n_dims = self._scalar("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self._fail(f"tensor {name!r} has {n_dims} dimensions")
        dims = tuple(self._scalar("Q") for _ in range(n_dims))
        qtype, offset = self._scalar("I"), self._scalar("Q")
        return name, dims, qtype, offset

    def _place(self, raw, data_start: int, align: int) -> None:
        import gguf

        spans = []
        for name, dims, qtype, rel in raw:
            if name in self.tensors:
                raise self._fail(f"duplicate tensor name {name!r}")
            try:
                block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
            except (ValueError, KeyError):
                raise self._fail(f"tensor {name!r} has unknown type {qtype}") from None
            count = 1
            for d in dims:
                if d == 0 or d > len(self._buf) * block:
                    raise self._fail(f"tensor {name!r} has dimension {d}")
                count *= d
            if dims[0] % block or count // block * type_size > len(self._buf):
                raise self._fail(f"tensor {name!r} of shape {dims} does not fit the file")
            nbytes = count // block * type_size
            start = data_start + rel
            if rel % align or start + nbytes > len(self._buf):
                raise self._fail(f"tensor {name!r} lies outside the data section")
            spans.append((start, start + nbytes, name))
            self.tensors[name] = TensorInfo(name, tuple(reversed(dims)), qtype, start, nbytes)
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise self._fail(f"tensors {a!r} and {b!r} overlap")

    # ------------------------------------------------------------------ data
    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of a tensor (a view of the memory map), shape (rows, bytes/row)."""
        info = self.tensors[name]
        arr = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return arr.reshape(*info.shape[:-1], -1)

    def dequantize(self, name: str) -> np.ndarray:
        """float32 array of the tensor's values in row-major order, whatever its stored type."""
        import gguf
        from gguf.quants import dequantize

        info = self.tensors[name]
        qtype = gguf.GGMLQuantizationType(info.qtype)
        if self.byteorder != "<":
            raise ModelLoadError(f"{self.path} is big-endian; its tensor data cannot be read here")
        try:
            out = dequantize(self.raw(name), qtype)
        except NotImplementedError:
            raise ModelLoadError(
                f"tensor {name} has type {qtype.name}, which cannot be dequantized; "
                "re-quantize the file with a common type (Q8_0, Q4_K, ...)"
            ) from None
        return np.asarray(out, dtype=np.float32).reshape(info.shape)

    def close(self) -> None:
        self._buf.release()
        self._map.close()
