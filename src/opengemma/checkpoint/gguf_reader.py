"""A strict, bounds-checked GGUF parser over a memory map.

Every count, length, dimension and offset read from the file is checked against the bytes that
remain before it is used, so a crafted header (huge `n_kv`, huge string lengths, overflowing
dimensions, tensors pointing past the end, overlapping or leaving gaps) is refused with a
CheckpointError before anything is allocated or read out of bounds. Tensor data stays in the
memory map until a tensor is asked for. Layout (GGUF v2/v3, little-endian): magic, version,
tensor count, kv count, the key/values, the tensor infos, padding to `general.alignment`, then
the data, each tensor at an aligned offset directly after the previous one.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from opengemma.checkpoint import gguf_keys
from opengemma.checkpoint.errors import CheckpointError
from opengemma.kernels import native

_SCALARS = {  # GGUF value type -> struct format (without byte order)
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_NUMPY = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "u1",
          10: "u8", 11: "i8", 12: "f8"}  # fmt: skip
MAX_KV = 1 << 16  # far above any real model (a few dozen keys)
MAX_TENSORS = 1 << 16  # Gemma 3 27B has ~800
MAX_DIMS = 4
MAX_NAME = 256  # bytes in a tensor name (llama.cpp allows 64)
MAX_KEY = 1 << 16  # bytes in a metadata key
MAX_ARRAY = 1 << 24  # items in a metadata array (vocabularies have ~256k)
MAX_ALIGN = 1 << 16
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, one key byte, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset
_CHUNK_ELEMENTS = 1 << 22  # dequantize at most this many values at once (16 MB of float32)
QK = 32  # values per block of opengemma's weight format (opengemma.quantized_layers.QK)
_Q8_0 = 8  # ggml type id
_Q8_0_BYTES = 34
_INTEGER_BLOCKS = {2: 18, 6: 22}  # Q4_0, Q5_0 (bytes per block): integers times a float16 scale


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
            raise CheckpointError(f"cannot read {self.path}: {exc}") from None
        self._buf = memoryview(self._map)
        self._pos = 0
        self.byteorder = "<"  # ">" for the rare big-endian files (metadata only)
        self.version = 0
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, int] = {}  # key -> GGUF value type
        self.array_types: dict[str, int] = {}  # array key -> GGUF type of its items
        self.tensors: dict[str, TensorInfo] = {}
        self.data_start = 0
        self._parse()

    # ------------------------------------------------------------------ primitive reads
    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path} is not a valid GGUF file: {what} (at byte {self._pos}); the file is "
            "damaged or was not written by a GGUF writer"
        )

    def _remaining(self) -> int:
        return len(self._buf) - self._pos

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > self._remaining():
            raise self._fail(f"needs {n} more bytes but the file ends first")
        view = self._buf[self._pos : self._pos + n]
        self._pos += n
        return view

    def _scalar(self, code: str) -> Any:
        fmt = self.byteorder + code
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _string(self, limit: int | None = None, what: str = "a string") -> str:
        n = self._scalar("Q")
        if limit is not None and n > limit:
            raise self._fail(f"{what} is {n} bytes long (at most {limit} allowed)")
        try:
            return str(self._take(n), "utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"{what} is not valid UTF-8") from None

    def _strings(self, count: int) -> list[str]:
        """`count` length-prefixed strings: `_string` inlined (vocabularies have ~256k)."""
        buf, pos, end = self._buf, self._pos, len(self._buf)
        length = struct.Struct(self.byteorder + "Q").unpack_from
        out = []
        append = out.append
        try:
            for _ in range(count):
                if pos + 8 > end:
                    raise self._fail("needs 8 more bytes but the file ends first")
                n = length(buf, pos)[0]
                pos += 8
                if n > end - pos:
                    raise self._fail(f"needs {n} more bytes but the file ends first")
                append(str(buf[pos : pos + n], "utf-8"))
                pos += n
        except UnicodeDecodeError:
            raise self._fail("a string is not valid UTF-8") from None
        finally:
            self._pos = pos
        return out

    def _value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self._scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            etype, count = self._scalar("I"), self._scalar("Q")
            return self._array(etype, count)
        raise self._fail(f"unknown value type {vtype}")

    def _array(self, etype: int, count: int) -> Any:
        if count > MAX_ARRAY:
            raise self._fail(f"an array of {count} items is implausibly long")
        if etype in _NUMPY:
            dtype = np.dtype(self.byteorder + _NUMPY[etype])
            if count > self._remaining() // dtype.itemsize:
                raise self._fail(f"an array of {count} items runs past the end of the file")
            arr = np.frombuffer(self._take(count * dtype.itemsize), dtype=dtype)
            return arr.astype(bool).tolist() if etype == 7 else arr.tolist()
        if etype == _STRING:
            if count > self._remaining() // 8:  # each string needs its 8-byte length
                raise self._fail(f"an array of {count} strings runs past the end of the file")
            return self._strings(count)
        raise self._fail(f"unsupported array element type {etype}")

    # ------------------------------------------------------------------ structure
    def _parse(self) -> None:
        if len(self._buf) < 4 or bytes(self._buf[:4]) != b"GGUF":
            raise CheckpointError(f"{self.path} is not a GGUF file (bad magic)")
        self._pos = 4
        version = self._scalar("I")
        if version & 0xFFFF == 0 and version:  # written big-endian (GGUF for s390x)
            self.byteorder = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in (2, 3):
            raise self._fail(f"unsupported GGUF version {version} (2 and 3 are read)")
        self.version = version
        n_tensors, n_kv = self._scalar("Q"), self._scalar("Q")
        if n_kv > MAX_KV or n_kv > self._remaining() // _MIN_KV_BYTES:
            raise self._fail(f"implausible key/value count {n_kv}")
        if n_tensors > MAX_TENSORS or n_tensors > self._remaining() // _MIN_TENSOR_INFO_BYTES:
            raise self._fail(f"implausible tensor count {n_tensors}")
        for _ in range(n_kv):
            key = self._string(MAX_KEY, "a metadata key")
            if not key:
                raise self._fail("a metadata key is empty")
            if key in self.metadata:
                raise self._fail(f"duplicate key {key!r}")
            vtype = self._scalar("I")
            if vtype == _ARRAY:
                etype, count = self._scalar("I"), self._scalar("Q")
                self.metadata[key] = self._array(etype, count)
                self.array_types[key] = etype
            else:
                self.metadata[key] = self._value(vtype)
            self.value_types[key] = vtype
        self._check_known_keys()
        raw = [self._tensor_info() for _ in range(n_tensors)]
        align = self.metadata.get("general.alignment", 32)
        if align <= 0 or align & (align - 1) or align > MAX_ALIGN:
            raise self._fail(
                f"general.alignment must be a power of two <= {MAX_ALIGN}, got {align}"
            )
        self.data_start = -(-self._pos // align) * align
        if self.data_start > len(self._buf) and raw:
            raise self._fail("the tensor data section starts past the end of the file")
        self._place(raw, align)

    def _check_known_keys(self) -> None:
        """Keys opengemma knows have the value types it expects; vocabulary arrays align."""
        arch = self.metadata.get("general.architecture")
        arch = arch if isinstance(arch, str) and arch in gguf_keys.ARCHS else None
        for pattern, allowed in gguf_keys.SCALARS.items():
            key = pattern.replace("{arch}", arch) if "{arch}" in pattern and arch else pattern
            if "{arch}" in key or key not in self.metadata:
                continue
            if self.value_types[key] not in allowed:
                raise self._key_error(key, self.value_types[key], allowed)
        for key, allowed in gguf_keys.ARRAYS.items():
            if key not in self.metadata:
                continue
            if self.value_types[key] != _ARRAY:
                raise self._key_error(key, self.value_types[key], {_ARRAY})
            if self.array_types[key] not in allowed:
                raise CheckpointError(
                    f"{self.path}: GGUF metadata {key} is an array of "
                    f"{gguf_keys.type_name(self.array_types[key])}, expected an array of "
                    f"{' or '.join(sorted(gguf_keys.type_name(t) for t in allowed))}; the file "
                    "is damaged or was not written for this key"
                )
        lengths = {k: len(self.metadata[k]) for k in gguf_keys.ALIGNED if k in self.metadata}
        if len(set(lengths.values())) > 1:
            first = next(iter(lengths))
            odd = next(k for k, n in lengths.items() if n != lengths[first])
            raise CheckpointError(
                f"{self.path}: GGUF metadata {odd} has {lengths[odd]} entries but {first} has "
                f"{lengths[first]}; the vocabulary arrays must describe the same tokens one for "
                "one. The file is damaged"
            )

    def _key_error(self, key: str, got: int, allowed: set[int] | frozenset[int]):
        names = " or ".join(sorted(gguf_keys.type_name(t) for t in allowed))
        return CheckpointError(
            f"{self.path}: GGUF metadata {key} has type {gguf_keys.type_name(got)}, expected "
            f"{names}; the file is damaged or was not written for this key"
        )

    def _tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self._string(MAX_NAME, "a tensor name")
        if not name:
            raise self._fail("a tensor name is empty")
        n_dims = self._scalar("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self._fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = tuple(self._scalar("Q") for _ in range(n_dims))
        qtype, offset = self._scalar("I"), self._scalar("Q")
        return name, dims, qtype, offset

    def _tensor_bytes(self, name: str, dims: tuple[int, ...], qtype: int) -> int:
        import gguf

        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            raise self._fail(f"tensor {name!r} has unknown type {qtype}") from None
        limit = len(self._buf) * block  # no tensor can hold more values than this file
        count = 1
        for d in dims:
            if d == 0 or d > limit:
                raise self._fail(f"tensor {name!r} has dimension {d}")
            count *= d
            if count > limit:
                raise self._fail(f"tensor {name!r} of shape {dims} is larger than the file")
        if dims[0] % block:
            raise self._fail(f"tensor {name!r}: row length {dims[0]} is not a multiple of {block}")
        return count // block * type_size

    def _place(self, raw: list[tuple[str, tuple[int, ...], int, int]], align: int) -> None:
        spans = []
        for name, dims, qtype, rel in raw:
            if name in self.tensors:
                raise self._fail(f"duplicate tensor name {name!r}")
            nbytes = self._tensor_bytes(name, dims, qtype)
            start = self.data_start + rel
            if rel % align:
                raise self._fail(f"tensor {name!r} has offset {rel}, not a multiple of {align}")
            if start + nbytes > len(self._buf):
                raise self._fail(f"tensor {name!r} lies outside the file")
            spans.append((rel, rel + nbytes, name))
            self.tensors[name] = TensorInfo(name, tuple(reversed(dims)), qtype, start, nbytes)
        spans.sort()
        expected = 0
        for start, end, name in spans:
            if start < expected:
                raise self._fail(f"tensor {name!r} overlaps the tensor before it")
            if start > expected:
                raise self._fail(f"a gap of {start - expected} bytes lies before tensor {name!r}")
            expected = -(-end // align) * align
        trailing = len(self._buf) - self.data_start - (spans[-1][1] if spans else 0)
        if spans and trailing > align:
            raise self._fail(f"{trailing} unexplained bytes follow the last tensor")

    # ------------------------------------------------------------------ data
    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of a tensor (a view of the memory map), shape (rows, bytes/row)."""
        info = self.tensors[name]
        arr = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return arr.reshape(*info.shape[:-1], -1)

    def _dequantize_rows(
        self, data: np.ndarray, info: TensorInfo, out: np.ndarray | None = None
    ) -> np.ndarray:
        """float32 (rows, K) values of whole stored rows of a tensor, written into `out` if given.

        The native kernels decode the common types (bit-identical to `gguf.quants`, much
        faster); the others, or every type without a C compiler, use the `gguf` package.
        """
        import gguf
        from gguf.quants import dequantize

        self._check_byteorder()
        K = info.shape[-1]
        data = np.ascontiguousarray(data).reshape(-1, info.nbytes // _rows(info.shape))
        if out is None:
            out = np.empty((data.shape[0], K), dtype=np.float32)
        lib = native()
        if lib is not None and not lib.gguf_dequantize(
            info.qtype, data.ctypes.data, data.shape[0], K, out.ctypes.data, torch.get_num_threads()
        ):
            return out
        qtype = gguf.GGMLQuantizationType(info.qtype)
        try:
            np.copyto(out, dequantize(data, qtype).reshape(out.shape))
        except NotImplementedError:
            raise CheckpointError(
                f"{self.path}: tensor {info.name} has type {qtype.name}, which cannot be "
                "dequantized; re-quantize the file with a common type (Q8_0, Q4_K, ...)"
            ) from None
        return out

    def _check_byteorder(self) -> None:
        if self.byteorder != "<":
            raise CheckpointError(f"{self.path} is big-endian; its tensor data cannot be read here")

    def dequantize(self, name: str) -> np.ndarray:
        """float32 array of the tensor's values in row-major order, whatever its stored type."""
        info = self.tensors[name]
        return self._dequantize_rows(self.raw(name), info).reshape(info.shape)

    def load(
        self,
        name: str,
        dtype: torch.dtype,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The tensor as a new `dtype` tensor, dequantized a few rows at a time.

        `transform` maps each float32 chunk before the cast (e.g. the norm offset). The file's
        pages are dropped from memory once copied, so peak memory is the output plus one chunk
        (float32 without a transform: the output only, decoded into it in one call).
        """
        info = self.tensors[name]
        data = self.raw(name).reshape(-1, info.nbytes // _rows(info.shape))
        out = torch.empty(info.shape, dtype=dtype)
        flat = out.view(-1, info.shape[-1])
        if dtype == torch.float32 and transform is None:
            self._dequantize_rows(data, info, flat.numpy())
        else:
            step = max(1, _CHUNK_ELEMENTS // info.shape[-1])
            for r0 in range(0, flat.shape[0], step):
                chunk = torch.from_numpy(self._dequantize_rows(data[r0 : r0 + step], info))
                flat[r0 : r0 + step] = transform(chunk) if transform else chunk
        self.release(info.offset, info.nbytes)
        return out

    def load_q8_0(self, name: str) -> torch.Tensor:
        """A 2-D tensor as Q8_0 blocks, opengemma's in-memory format for int8 layers
        (opengemma.quantized_layers): uint8 (N, K/32*34); a 3-D one (stacked experts) as
        (E, N, K/32*34).

        Q8_0 is taken over as stored, Q4_0 and Q5_0 exactly (their small integers times the
        same float16 scale); other types are decoded and quantized as the gguf package's Q8_0
        quantizer does, a chunk of rows at a time, never holding a float copy of the tensor.
        """
        info = self.tensors[name]
        if len(info.shape) not in (2, 3) or info.shape[-1] % QK:
            raise CheckpointError(
                f"{self.path}: tensor {name} of shape {info.shape} cannot be held as int8 blocks: "
                f"it must be 2-D or 3-D with rows a multiple of {QK} long; keep the model in "
                "float (quant='none'; on the command line --quant none)"
            )
        self._check_byteorder()
        *lead, K = info.shape
        N = int(np.prod(lead))
        data = self.raw(name)
        out = torch.empty(N, K // QK * _Q8_0_BYTES, dtype=torch.uint8)
        lib, row_bytes, step = native(), info.nbytes // N, max(1, _CHUNK_ELEMENTS // K)
        for r0 in range(0, N, step):
            rows = min(step, N - r0)
            if lib is None or lib.gguf_to_q8_0(
                info.qtype,
                data[r0:].ctypes.data,
                rows,
                K,
                out[r0].data_ptr(),
                torch.get_num_threads(),
            ):
                self._q8_0_rows(data[r0 : r0 + rows], info, out[r0 : r0 + rows])
            # drop the chunk's file pages: the file's copy of a large matrix (the embedding)
            # is never resident beside the whole in-memory copy
            self.release(info.offset + r0 * row_bytes, rows * row_bytes)
        return out.reshape(*lead, -1)

    def load_stored(self, name: str):
        """A 2-D Q4_K / Q6_K matrix as the file stores it (opengemma.stored_layers.StoredBlocks):
        a read-only view of the memory map, no copy; its pages are read when first used."""
        import warnings

        from opengemma.stored_layers import StoredBlocks, stored_shape

        info = self.tensors[name]
        self._check_byteorder()
        data = self.raw(name)
        with warnings.catch_warnings():  # the map is read-only; the layers never write to it
            warnings.simplefilter("ignore", UserWarning)
            blocks = torch.from_numpy(data)
        try:
            stored_shape(info.qtype, blocks, info.shape[-1])
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: tensor {name}: {exc}") from None
        return StoredBlocks(info.qtype, blocks, info.shape[-1])

    def _q8_0_rows(self, data: np.ndarray, info: TensorInfo, out: torch.Tensor) -> None:
        """load_q8_0 of a few rows without the native kernel (numpy / PyTorch)."""
        from opengemma.quantized_layers import quantize_q8_0

        target = out.numpy()
        if info.qtype == _Q8_0:
            target[...] = data.reshape(target.shape)
            return
        values = self._dequantize_rows(data, info)  # (rows, K) float32
        if info.qtype in _INTEGER_BLOCKS:  # scale bytes first in every block: kept exactly
            ts = _INTEGER_BLOCKS[info.qtype]
            scale_bytes = np.ascontiguousarray(data.reshape(-1, ts)[:, :2])
            d = scale_bytes.view("<f2").astype(np.float32)  # (blocks, 1)
            blocks = values.reshape(-1, QK)
            with np.errstate(divide="ignore", invalid="ignore"):
                # a zero scale: -1 where the zero's sign says the integer was negative
                negative = np.signbit(blocks) != np.signbit(d)
                q = np.where(d != 0, blocks / d, -negative.astype(np.float32)).astype(np.int8)
            packed = np.concatenate([scale_bytes, q.view(np.uint8)], axis=1)
            target[...] = packed.reshape(target.shape)
            return
        out.copy_(quantize_q8_0(torch.from_numpy(values)))

    def release(self, offset: int, nbytes: int) -> None:
        """Drop the file pages of a byte range from this process's memory (they stay on disk)."""
        start = offset - offset % mmap.PAGESIZE
        if hasattr(self._map, "madvise") and nbytes:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, start, offset + nbytes - start)
            except (OSError, ValueError):
                pass  # advisory only: memory stays higher, nothing is wrong

    def close(self) -> None:
        self._buf.release()
        self._map.close()


def _rows(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[:-1]:
        n *= d
    return n
