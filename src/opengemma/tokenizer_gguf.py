"""A GGUF file's tokenizer metadata as a SentencePiece ``ModelProto`` (Gemma 1/2/3/4).

llama.cpp stores the vocabulary as three parallel arrays (``tokenizer.ggml.tokens``, ``.scores``,
``.token_type``) plus the special ids. `build_model_proto` turns them back into the BPE model
SentencePiece would have written (byte fallback, identity normalizer, no dummy prefix, spaces
escaped as ``▁``), so the ``sentencepiece`` library encodes with Google's ids. The arrays are
checked first (one length, a SentencePiece vocabulary, bos/eos/unk named), and the model is
serialized with numpy rather than 262k protobuf message objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from opengemma.errors import TokenizerError

__all__ = ["BYTE_PIECE", "SPACE", "build_model_proto", "gguf_vocab", "read_gguf_metadata",
           "reader_metadata", "serialize_model"]  # fmt: skip

_Piece = spm_pb2.ModelProto.SentencePiece
NORMAL, UNKNOWN, CONTROL = _Piece.NORMAL, _Piece.UNKNOWN, _Piece.CONTROL
USER_DEFINED, UNUSED, BYTE = _Piece.USER_DEFINED, _Piece.UNUSED, _Piece.BYTE

# gguf.TokenType value (index) -> SentencePiece piece type; 0 = undefined in old files, other
# values unknown: both read as normal.
_GGUF_TO_SPM_TYPE = np.array(
    [NORMAL, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE], np.uint8
)
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _wanted(key: str) -> bool:
    return key.startswith("tokenizer.") or key == "general.architecture"


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The ``tokenizer.*`` and ``general.architecture`` keys of a GGUF file (bounds-checked
    parse by opengemma's own GGUF reader)."""
    from opengemma.checkpoint.gguf_reader import GGUFFile
    from opengemma.errors import ModelLoadError

    if not path.is_file():
        raise TokenizerError(f"GGUF file {path} does not exist; check the path.")
    try:
        meta = GGUFFile(path).metadata
    except ModelLoadError as e:
        raise TokenizerError(
            f"{e}; pass a .gguf model file, or use Tokenizer.from_file for a SentencePiece "
            "tokenizer.model"
        ) from None
    return {k: v for k, v in meta.items() if _wanted(k)}


def reader_metadata(reader: Any) -> dict[str, Any]:
    """The same keys as `read_gguf_metadata`, taken from an open ``gguf.GGUFReader``."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if not _wanted(key):
            continue
        types = [int(t) for t in field.types]
        parts = [field.parts[i] for i in field.data]
        if types[0] == 9:
            if types[-1] == 8:
                out[key] = [bytes(p).decode("utf-8") for p in parts]
            else:
                out[key] = np.concatenate(parts) if parts else np.zeros(0)
        elif types[0] == 8:
            out[key] = bytes(parts[0]).decode("utf-8")
        else:
            out[key] = parts[0][0].item()
    return out

def build_model_proto(meta: dict[str, Any]) -> spm_pb2.ModelProto:
    """A SentencePiece BPE ``ModelProto`` equivalent to the tokenizer described by GGUF metadata.

    ``meta`` maps GGUF keys (``tokenizer.ggml.tokens``, ``.scores``, ``.token_type``,
    ``.bos_token_id``...) to values. Pieces that llama.cpp stored with real spaces (Gemma's
    user-defined runs of spaces) get their ``▁`` spelling back, so they match the escaped text
    as in the original model.
    """
    return spm_pb2.ModelProto.FromString(serialize_model(*gguf_vocab(meta)))


SPACE = "\u2581"  # SentencePiece's escaped space
SPECIAL_PIECES = {"bos": "<bos>", "eos": "<eos>", "unknown": "<unk>", "padding": "<pad>"}
Vocab = tuple[list[str], np.ndarray, np.ndarray, spm_pb2.ModelProto]


def gguf_vocab(meta: dict[str, Any]) -> Vocab:
    """The model `build_model_proto` describes, in parts: its pieces, their float32 scores, their
    SentencePiece types (uint8), and a ``ModelProto`` holding only the trainer and normalizer
    specs. Computed on whole arrays: Python message objects for 262k pieces take ~0.3 s."""
    tokens, scores, gguf_types = _checked_arrays(meta)
    ids = _special_ids(meta, tokens)
    if ids["bos"] is None or ids["eos"] is None or ids["unknown"] is None:
        raise TokenizerError(
            "The GGUF tokenizer names no bos/eos/unk token (tokenizer.ggml.*_token_id); "
            "re-convert the file."
        )
    types = _piece_types(tokens, gguf_types, ids)
    pieces = _respelled(tokens, types)
    return pieces, np.asarray(scores, dtype=np.float32), types, _specs(tokens, types, ids)


def _checked_arrays(meta: dict[str, Any]) -> tuple[list[str], Any, Any]:
    """Tokens, scores (file order when absent) and GGUF token types, after the checks that make
    them a Gemma SentencePiece vocabulary."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise TokenizerError(
            "The GGUF file has no tokenizer metadata (tokenizer.ggml.tokens); convert the model "
            "with llama.cpp's convert_hf_to_gguf.py, or load its tokenizer.model with "
            "Tokenizer.from_file."
        )
    kind = meta.get("tokenizer.ggml.model")
    # llama.cpp names Gemma 4's vocabulary "gemma4": the same SentencePiece pieces and scores
    if kind not in ("llama", "gemma4"):
        raise TokenizerError(
            f"The GGUF tokenizer is {kind!r}, not SentencePiece ('llama', 'gemma4'), so it is "
            "not a Gemma tokenizer; use a Gemma GGUF file."
        )
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise TokenizerError(
            "The GGUF tokenizer adds a space prefix, which Gemma tokenizers never do; "
            "use a Gemma GGUF file."
        )
    n = len(tokens)
    gguf_types = meta.get("tokenizer.ggml.token_type")
    scores = meta.get("tokenizer.ggml.scores")
    if (gguf_types is not None and len(gguf_types) != n) or (
        scores is not None and len(scores) != n
    ):
        raise TokenizerError(
            "The GGUF tokenizer arrays (tokens, scores, token_type) differ in length; "
            "re-convert the file."
        )
    if scores is None:  # no scores: merge priority follows file order
        scores = -np.arange(n, dtype=np.float32)
    return tokens, scores, gguf_types


def _special_ids(meta: dict[str, Any], tokens: list[str]) -> dict[str, int | None]:
    """bos/eos/unknown/padding ids: the file's ``*_token_id`` keys, else the usual pieces."""
    n = len(tokens)
    out: dict[str, int | None] = {}
    for name, piece in SPECIAL_PIECES.items():
        i = meta.get(f"tokenizer.ggml.{name}_token_id")
        if i is None and piece in tokens:
            i = tokens.index(piece)
        if i is not None and not 0 <= int(i) < n:
            raise TokenizerError(f"GGUF {name}_token_id {i} is outside the {n}-piece vocabulary.")
        out[name] = None if i is None else int(i)
    return out


def _piece_types(tokens: list[str], gguf_types: Any, ids: dict[str, int | None]) -> np.ndarray:
    """SentencePiece types (uint8) of the pieces; exactly one UNKNOWN piece, the unk id."""
    types = np.full(len(tokens), NORMAL, np.uint8)
    if gguf_types is None:  # byte pieces by their spelling; bos/eos/pad are control tokens
        types[[i for i, text in enumerate(tokens) if BYTE_PIECE.fullmatch(text)]] = BYTE
        types[[ids[k] for k in ("bos", "eos", "padding") if ids[k] is not None]] = CONTROL
    else:
        codes = np.asarray(gguf_types).astype(np.int64)  # truncated like int()
        known = (codes >= 0) & (codes < len(_GGUF_TO_SPM_TYPE))
        types[known] = _GGUF_TO_SPM_TYPE[codes[known]]
    types[types == UNKNOWN] = CONTROL
    types[ids["unknown"]] = UNKNOWN  # SentencePiece wants exactly one UNKNOWN piece
    return types


def _respelled(tokens: list[str], types: np.ndarray) -> list[str]:
    """Pieces stored with real spaces get their ``▁`` spelling back, unless that spelling is a
    piece already (or was taken by an earlier respelling)."""
    pieces = list(tokens)
    spaced = {
        i: text.replace(" ", SPACE)
        for i, text in enumerate(tokens)
        if " " in text and types[i] in (NORMAL, USER_DEFINED)
    }
    taken = set(spaced.values()).intersection(tokens)
    for i, respelled in spaced.items():
        if respelled not in taken:
            taken.add(respelled)
            pieces[i] = respelled
    return pieces


def _specs(tokens: list[str], types: np.ndarray, ids: dict[str, int | None]) -> spm_pb2.ModelProto:
    """A ``ModelProto`` with only the trainer spec (BPE, special ids) and the normalizer spec."""
    unk, bos, eos, pad = ids["unknown"], ids["bos"], ids["eos"], ids["padding"]
    specs = spm_pb2.ModelProto()
    spec = specs.trainer_spec
    spec.model_type = spm_pb2.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = np.count_nonzero(types == BYTE) == 256
    spec.unk_id, spec.unk_piece = unk, tokens[unk]
    spec.bos_id, spec.bos_piece = bos, tokens[bos]
    spec.eos_id, spec.eos_piece = eos, tokens[eos]
    spec.pad_id = -1 if pad is None else pad
    if pad is not None:
        spec.pad_piece = tokens[pad]
    norm = specs.normalizer_spec
    norm.name = "identity"
    norm.precompiled_charsmap = b""
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return specs


def serialize_model(
    pieces: list[str], scores: np.ndarray, types: np.ndarray, specs: spm_pb2.ModelProto
) -> bytes:
    """The serialized ``ModelProto`` of the pieces and the specs, byte for byte what protobuf
    writes for them: each ``SentencePiece`` entry (field 1, with its piece, score and type all
    set) is laid out with numpy, the specs (fields 2, 3) come after, as protobuf orders them."""
    text = np.frombuffer("".join(pieces).encode(), np.uint8)
    length = np.fromiter(map(len, map(str.encode, pieces)), np.int64, len(pieces))
    body = length + _varint_size(length) + 8  # 0A len piece, 15 score (4 bytes), 18 type
    size = body + _varint_size(body) + 1  # 0A len body
    end = np.cumsum(size)
    start = end - size
    out = np.empty(int(end[-1]), np.uint8)
    in_piece = np.ones(out.size, bool)  # what is left: the piece bytes, in order

    def put(at: np.ndarray, values: Any) -> None:
        out[at] = values
        in_piece[at] = False

    put(start, 0x0A)
    at = _put_varint(put, start + 1, body)
    put(at, 0x0A)
    _put_varint(put, at + 1, length)
    tail = end - 7
    put(tail, 0x15)
    score_bytes = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8).reshape(-1, 4)
    for k in range(4):
        put(tail + 1 + k, score_bytes[:, k])
    put(tail + 5, 0x18)
    put(tail + 6, types)
    out[in_piece] = text
    return out.tobytes() + specs.SerializeToString()


def _varint_size(values: np.ndarray) -> np.ndarray:
    """Bytes in the protobuf varint of each (non-negative) value."""
    size = np.ones_like(values)
    for shift in range(7, 64, 7):
        size += values >= 1 << shift
    return size


def _put_varint(
    put: Callable[[np.ndarray, Any], None], at: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Write the varint of each value at its offset; return the offsets just past them."""
    at, values = at.copy(), values.copy()
    todo = np.arange(len(values))
    while todo.size:
        v = values[todo]
        more = v >= 0x80
        put(at[todo], (v & 0x7F) | more * 0x80)
        at[todo] += 1
        values[todo] = v >> 7
        todo = todo[more]
    return at
