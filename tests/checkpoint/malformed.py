"""A corpus of malformed checkpoint files, generated from a valid tiny Gemma 3 model.

Each case is (name, builder): the builder writes one bad file or directory under a folder and
returns its path. Every case must be refused with a CheckpointError. The GGUF bytes are packed
here by hand (not with the writer under test), so any header field can be made hostile.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10
HIDDEN, FFN, LAYERS, HEADS, KV, HEAD_DIM, VOCAB = 32, 64, 1, 2, 1, 16, 64


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, value) -> bytes:
    """One key/value: key string, value type, packed value."""
    if vtype == STR:
        body = s(value)
    elif vtype == ARR:
        etype, items = value
        code = {STR: None, F32: "<f", I32: "<i"}.get(etype, "<I")
        packed = b"".join(s(v) if code is None else struct.pack(code, v) for v in items)
        body = struct.pack("<IQ", etype, len(items)) + packed
    elif isinstance(value, bytes):
        body = value
    else:
        body = struct.pack({U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}[vtype], value)
    return s(key) + struct.pack("<I", vtype) + body


def model_tensors() -> dict[str, tuple[int, ...]]:
    """GGUF name -> row-major shape for a 1-layer Gemma 3 with the sizes above."""
    t = {"token_embd.weight": (VOCAB, HIDDEN), "output_norm.weight": (HIDDEN,)}
    b = "blk.0."
    q, kv_ = HEADS * HEAD_DIM, KV * HEAD_DIM
    t.update({
        b + "attn_norm.weight": (HIDDEN,), b + "attn_q.weight": (q, HIDDEN),
        b + "attn_k.weight": (kv_, HIDDEN), b + "attn_v.weight": (kv_, HIDDEN),
        b + "attn_output.weight": (HIDDEN, q), b + "attn_q_norm.weight": (HEAD_DIM,),
        b + "attn_k_norm.weight": (HEAD_DIM,), b + "post_attention_norm.weight": (HIDDEN,),
        b + "ffn_norm.weight": (HIDDEN,), b + "ffn_gate.weight": (FFN, HIDDEN),
        b + "ffn_up.weight": (FFN, HIDDEN), b + "ffn_down.weight": (HIDDEN, FFN),
        b + "post_ffw_norm.weight": (HIDDEN,),
    })  # fmt: skip
    return t


def base_kvs() -> list[bytes]:
    a = "gemma3."
    return [kv("general.architecture", STR, "gemma3"), kv(a + "block_count", U32, LAYERS),
            kv(a + "embedding_length", U32, HIDDEN), kv(a + "feed_forward_length", U32, FFN),
            kv(a + "attention.head_count", U32, HEADS), kv(a + "attention.head_count_kv", U32, KV),
            kv(a + "attention.key_length", U32, HEAD_DIM), kv(a + "context_length", U32, 128),
            kv(a + "attention.sliding_window", U32, 8), kv(a + "rope.freq_base", F32, 1e6),
            kv(a + "attention.layer_norm_rms_epsilon", F32, 1e-6)]  # fmt: skip


@dataclass
class GGUFSpec:
    """Every part of a GGUF file, each overridable to make it hostile."""

    magic: bytes = b"GGUF"
    version: int = 3
    kvs: list[bytes] = field(default_factory=base_kvs)
    # (name, GGUF dims = reversed shape, ggml type, relative offset); None offsets = packed
    tensors: list[tuple[str | bytes, tuple[int, ...], int, int | None]] = field(
        default_factory=list
    )
    align: int = 32
    n_kv: int | None = None
    n_tensors: int | None = None
    cut: int = 0  # bytes removed from the end
    keep: int | None = None  # keep only this many leading bytes
    extra_data: int = 0  # bytes of data beyond the tensors

    def build(self) -> bytes:
        tensors = self.tensors or [(n, tuple(reversed(sh)), 0, None)
                                   for n, sh in model_tensors().items()]  # fmt: skip
        infos, data = b"", b""
        rng = np.random.default_rng(0)
        for name, dims, qtype, off in tensors:
            count = int(np.prod(dims))
            nbytes = count * 4 if qtype == 0 else count  # F32, or a byte-per-value stand-in
            pos = len(data) if off is None else off
            payload = rng.normal(0, 0.1, max(count, 1)).astype(np.float32).tobytes()[:nbytes]
            if off is None:
                data += payload + b"\0" * (-(len(data) + nbytes) % self.align)
            infos += s(name) + struct.pack("<I", len(dims)) + b"".join(
                struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", qtype, pos)  # fmt: skip
        if all(off is not None for *_, off in tensors):
            data = b"\0" * (packed_offset(None) + 64)
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        n_t = len(tensors) if self.n_tensors is None else self.n_tensors
        head = self.magic + struct.pack("<IQQ", self.version, n_t, n_kv) + b"".join(self.kvs)
        head += infos
        align = self.align if self.align > 0 and not self.align & (self.align - 1) else 32
        head += b"\0" * (-len(head) % align)
        out = head + data + b"\0" * self.extra_data
        out = out[: len(out) - self.cut] if self.cut else out
        return out if self.keep is None else out[: self.keep]


def with_tensors(edit: Callable[[list], list]) -> GGUFSpec:
    base = [(n, tuple(reversed(sh)), 0, None) for n, sh in model_tensors().items()]
    return GGUFSpec(tensors=edit(base))


def packed_offset(name: str | None) -> int:
    """Where `name` starts when every tensor is packed in order (None: the end of the data)."""
    pos = 0
    for n, sh in model_tensors().items():
        if n == name:
            return pos
        nbytes = int(np.prod(sh)) * 4
        pos += nbytes + (-nbytes % 32)
    return pos


def placed(offsets: dict[str, int]) -> GGUFSpec:
    """All tensors at explicit offsets (packed order), with some overridden."""
    base, pos = [], 0
    for n, sh in model_tensors().items():
        nbytes = int(np.prod(sh)) * 4
        base.append((n, tuple(reversed(sh)), 0, offsets.get(n, pos)))
        pos += nbytes + (-nbytes % 32)
    return GGUFSpec(tensors=base)


def _set(i: int, **change):
    def edit(ts):
        name, dims, qtype, off = ts[i]
        vals = {"name": name, "dims": dims, "qtype": qtype, "off": off} | change
        ts[i] = (vals["name"], vals["dims"], vals["qtype"], vals["off"])
        return ts

    return edit


GGUF_CASES: dict[str, GGUFSpec] = {
    "bad_magic": GGUFSpec(magic=b"GGUG"),
    "version_1": GGUFSpec(version=1),
    "version_huge": GGUFSpec(version=99),
    "truncated_header": GGUFSpec(keep=10),
    "truncated_kv": GGUFSpec(cut=0, kvs=base_kvs()[:-1] + [base_kvs()[-1][:-3]]),
    "truncated_data": GGUFSpec(cut=100),
    "n_kv_huge": GGUFSpec(n_kv=2**63),
    "n_tensors_huge": GGUFSpec(n_tensors=2**40),
    "n_tensors_more_than_listed": GGUFSpec(n_tensors=len(model_tensors()) + 5),
    "string_length_huge": GGUFSpec(kvs=[struct.pack("<Q", 2**62) + b"general.x"] + base_kvs()),
    "array_count_huge": GGUFSpec(
        kvs=base_kvs() + [s("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARR, STR, 2**40)]
    ),  # fmt: skip
    "array_of_arrays": GGUFSpec(kvs=base_kvs() + [s("x.y") + struct.pack("<IIQ", ARR, ARR, 1)]),
    "empty_key": GGUFSpec(kvs=base_kvs() + [kv("", U32, 1)]),
    "duplicate_key": GGUFSpec(kvs=base_kvs() + [kv("gemma3.block_count", U32, 1)]),
    "key_not_utf8": GGUFSpec(kvs=base_kvs() + [kv(b"\xff\xfe", U32, 1)]),
    "unknown_value_type": GGUFSpec(kvs=base_kvs() + [s("x.y") + struct.pack("<II", 99, 0)]),
    "alignment_zero": GGUFSpec(kvs=base_kvs() + [kv("general.alignment", U32, 0)]),
    "alignment_not_power_of_two": GGUFSpec(kvs=base_kvs() + [kv("general.alignment", U32, 48)]),
    "alignment_huge": GGUFSpec(kvs=base_kvs() + [kv("general.alignment", U32, 2**30)]),
    "alignment_wrong_type": GGUFSpec(kvs=base_kvs() + [kv("general.alignment", STR, "32")]),
    **{name: GGUFSpec(kvs=base_kvs() + [kv(key, vtype, value)])
       for name, (key, vtype, value) in {  # known keys with the wrong value type
           "alignment_uint64": ("general.alignment", U64, 32),  # gguf demands UINT32
           "alignment_int32": ("general.alignment", I32, 32),
           "alignment_float": ("general.alignment", F32, 32.0),
           "architecture_not_string": ("general.architecture", U32, 3),
           "rope_base_string": ("gemma3.rope.freq_base", STR, "1e6"),
           "bos_id_float": ("tokenizer.ggml.bos_token_id", F32, 2.0),
           "add_bos_not_bool": ("tokenizer.ggml.add_bos_token", U32, 1),
           "tokens_not_array": ("tokenizer.ggml.tokens", STR, "<pad>"),
           "tokens_array_of_numbers": ("tokenizer.ggml.tokens", ARR, (U32, [1, 2])),
           "scores_array_of_strings": ("tokenizer.ggml.scores", ARR, (STR, ["0.0"])),
       }.items()},  # fmt: skip
    "vocab_arrays_misaligned": GGUFSpec(kvs=base_kvs() + [
        kv("tokenizer.ggml.tokens", ARR, (STR, ["<pad>", "<eos>", "<bos>"])),
        kv("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0])),
        kv("tokenizer.ggml.token_type", ARR, (I32, [3, 3])),
    ]),  # fmt: skip
    "empty_tensor_name": with_tensors(_set(0, name="")),
    "duplicate_tensor_name": with_tensors(_set(1, name="token_embd.weight")),
    "unknown_tensor_type": with_tensors(_set(1, qtype=200)),
    "zero_dims": with_tensors(_set(1, dims=())),
    "five_dims": with_tensors(_set(1, dims=(1, 1, 1, 1, 32))),
    "dimension_zero": with_tensors(_set(1, dims=(0,))),
    "dimension_overflow": with_tensors(_set(0, dims=(2**63, 2**63))),
    "byte_size_overflow": with_tensors(_set(0, dims=(2**31, 2**31, 2**31))),
    "row_not_block_multiple": with_tensors(_set(0, dims=(33, VOCAB), qtype=8)),
    "offset_outside_file": placed({"blk.0.ffn_up.weight": 2**40}),
    "offset_misaligned": placed({"blk.0.ffn_up.weight": 4}),
    "overlapping_tensors": placed({"output_norm.weight": 0}),
    "gap_between_tensors": placed(
        {"blk.0.post_ffw_norm.weight": packed_offset("blk.0.post_ffw_norm.weight") + 32}
    ),
    "trailing_garbage": GGUFSpec(extra_data=4096),
    "shape_does_not_fit_config": with_tensors(_set(4, dims=(KV * HEAD_DIM, HIDDEN))),
    "missing_tensor": with_tensors(lambda ts: ts[:-1]),
    "unknown_tensor": with_tensors(lambda ts: ts + [("blk.0.lora_a.weight", (HIDDEN,), 0, None)]),
    "block_count_absurd": GGUFSpec(
        kvs=[kv("gemma3.block_count", U32, 10**9)] + base_kvs()[2:] + base_kvs()[:1]
    ),  # fmt: skip
    "block_count_wrong_type": GGUFSpec(
        kvs=[kv("gemma3.block_count", STR, "1")] + base_kvs()[2:] + base_kvs()[:1]
    ),  # fmt: skip
    "not_gemma_architecture": GGUFSpec(
        kvs=[kv("general.architecture", STR, "llama")] + base_kvs()[1:]
    ),  # fmt: skip
    "heads_not_multiple_of_kv": GGUFSpec(
        kvs=base_kvs()[:5] + [kv("gemma3.attention.head_count_kv", U32, 3)] + base_kvs()[6:]
    ),  # fmt: skip
}


def write_gguf_case(name: str, folder: Path) -> Path:
    path = folder / f"{name}.gguf"
    path.write_bytes(GGUF_CASES[name].build())
    return path


# ---------------------------------------------------------------------------------- safetensors


def st_bytes(header: dict | bytes, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _ok_header() -> dict:
    return {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}  # fmt: skip


def _hdr(**entries) -> dict:
    h = _ok_header()
    for k, v in entries.items():
        h[k] = v
    return h


ST_CASES: dict[str, bytes] = {
    "too_short": b"\x01\x02",
    "header_longer_than_file": st_bytes(_ok_header(), b"\0" * 24, length=10**6),
    "header_over_100mb": st_bytes(_ok_header(), b"\0" * 24, length=200_000_000),
    "header_not_json": st_bytes(b"{not json", b""),
    "header_not_object": st_bytes(b"[1, 2]", b""),
    "header_not_utf8": st_bytes(b'{"\xff": 1}', b""),
    "duplicate_json_key": st_bytes(
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        b"\0" * 4,
    ),  # fmt: skip
    "deeply_nested_json": st_bytes(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
    "unknown_dtype": st_bytes(
        _hdr(a={"dtype": "F33", "shape": [2, 2], "data_offsets": [0, 16]}), b"\0" * 24
    ),  # fmt: skip
    "negative_shape": st_bytes(
        _hdr(a={"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}), b"\0" * 24
    ),  # fmt: skip
    "offsets_reversed": st_bytes(
        _hdr(a={"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}), b"\0" * 24
    ),  # fmt: skip
    "shape_times_dtype_not_bytes": st_bytes(
        _hdr(a={"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}), b"\0" * 24
    ),  # fmt: skip
    "overlapping_offsets": st_bytes(
        _hdr(b={"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}), b"\0" * 24
    ),  # fmt: skip
    "gap_in_offsets": st_bytes(
        _hdr(b={"dtype": "F16", "shape": [4], "data_offsets": [20, 28]}), b"\0" * 28
    ),  # fmt: skip
    "data_not_covered": st_bytes(_ok_header(), b"\0" * 40),
    "data_truncated": st_bytes(_ok_header(), b"\0" * 20),
    "extra_entry_field": st_bytes(
        _hdr(a={"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16], "x": 1}), b"\0" * 24
    ),  # fmt: skip
    "metadata_not_strings": st_bytes(_hdr(__metadata__={"format": 1}), b"\0" * 24),
    "empty_tensor_name": st_bytes(
        {"": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4
    ),  # fmt: skip
    "shape_huge": st_bytes(
        _hdr(a={"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}), b"\0" * 24
    ),  # fmt: skip
}
