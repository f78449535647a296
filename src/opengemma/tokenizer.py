"""SentencePiece-exact Gemma tokenizer (Gemma 1/2/3), from a GGUF file or a ``tokenizer.model``.

The vocabulary of a GGUF file (pieces, scores, token types) is turned back into a SentencePiece
``ModelProto`` -- BPE, byte fallback, identity normalizer, no dummy prefix, spaces escaped as
``▁`` -- and encoded by the ``sentencepiece`` library itself, so ids are those of Google's reference
tokenizer. On top of that:

* ``encode`` maps control-token text written in the input (``<start_of_turn>``, ``<bos>``,
  ``<unused12>``...) to the control ids, the way ``transformers`` does: the text is first split on
  every control piece, leftmost-longest. ``encode_plain`` never does (for untrusted user content).
* ``decode`` and ``IncrementalDecoder`` are implemented here: ``▁`` becomes a space, runs of byte
  tokens ``<0xNN>`` are joined and decoded as UTF-8 (each invalid byte becomes one U+FFFD, as in
  SentencePiece), control tokens are dropped (a dropped token does not split a byte run, as in
  ``transformers``) or written as their piece text. On valid UTF-8 this is exactly
  ``transformers``' decode; on invalid bytes ``transformers`` blanks the whole byte run instead.

Units: every length and offset is in Unicode code points (``str``) unless it says bytes; every id is
an index into the vocabulary, ``0 <= id < vocab_size``.
"""

from __future__ import annotations

import codecs
import operator
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sentencepiece import SentencePieceProcessor
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from opengemma.errors import TokenizerError

__all__ = ["Tokenizer", "IncrementalDecoder", "build_model_proto"]

_Piece = spm_pb2.ModelProto.SentencePiece
NORMAL, UNKNOWN, CONTROL = _Piece.NORMAL, _Piece.UNKNOWN, _Piece.CONTROL
USER_DEFINED, UNUSED, BYTE = _Piece.USER_DEFINED, _Piece.UNUSED, _Piece.BYTE

# gguf.TokenType value -> SentencePiece piece type (0 = undefined in old files: treat as normal).
_GGUF_TO_SPM_TYPE = {0: NORMAL, 1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED}
_GGUF_TO_SPM_TYPE[6] = BYTE
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Pieces a Gemma tokenizer.model may mark USER_DEFINED although they are control tokens (llama.cpp
# and transformers treat them as special): retyped CONTROL, so encode_plain never emits them.
_LOOKS_CONTROL = re.compile(r"<(?:start_of_turn|end_of_turn|unused\d+|mask|2mass)>|\[@BOS@\]")
_SPACE = "\u2581"  # SentencePiece's escaped space


def _replace_per_byte(err: UnicodeError) -> tuple[str, int]:
    """UTF-8 error handler: one U+FFFD per invalid byte, as SentencePiece decodes byte pieces."""
    assert isinstance(err, UnicodeDecodeError)
    return "\ufffd", err.start + 1


_ERRORS = "opengemma.replace_per_byte"
codecs.register_error(_ERRORS, _replace_per_byte)

# --------------------------------------------------------------------------------------------------
# GGUF metadata
# --------------------------------------------------------------------------------------------------


def _wanted(key: str) -> bool:
    return key.startswith("tokenizer.") or key == "general.architecture"


def _read_gguf_metadata(path: Path) -> dict[str, Any]:
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


def _reader_metadata(reader: Any) -> dict[str, Any]:
    """The same keys as `_read_gguf_metadata`, taken from an open ``gguf.GGUFReader``."""
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
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise TokenizerError(
            "The GGUF file has no tokenizer metadata (tokenizer.ggml.tokens); convert the model "
            "with llama.cpp's convert_hf_to_gguf.py, or load its tokenizer.model with "
            "Tokenizer.from_file."
        )
    kind = meta.get("tokenizer.ggml.model")
    if kind != "llama":
        raise TokenizerError(
            f"The GGUF tokenizer is {kind!r}, not SentencePiece ('llama'), so it is not a "
            "Gemma 1/2/3 tokenizer; use a Gemma GGUF file."
        )
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise TokenizerError(
            "The GGUF tokenizer adds a space prefix, which Gemma tokenizers never do; "
            "use a Gemma GGUF file."
        )
    n = len(tokens)
    types = meta.get("tokenizer.ggml.token_type")
    scores = meta.get("tokenizer.ggml.scores")
    if (types is not None and len(types) != n) or (scores is not None and len(scores) != n):
        raise TokenizerError(
            "The GGUF tokenizer arrays (tokens, scores, token_type) differ in length; "
            "re-convert the file."
        )
    if scores is None:  # no scores: merge priority follows file order
        scores = -np.arange(n, dtype=np.float32)

    def special_id(name: str, piece: str) -> int | None:
        i = meta.get(f"tokenizer.ggml.{name}_token_id")
        if i is None and piece in tokens:
            i = tokens.index(piece)
        if i is not None and not 0 <= int(i) < n:
            raise TokenizerError(f"GGUF {name}_token_id {i} is outside the {n}-piece vocabulary.")
        return None if i is None else int(i)

    ids = {k: special_id(k, p) for k, p in _SPECIAL_PIECES.items()}
    if ids["bos"] is None or ids["eos"] is None or ids["unknown"] is None:
        raise TokenizerError(
            "The GGUF tokenizer names no bos/eos/unk token (tokenizer.ggml.*_token_id); "
            "re-convert the file."
        )
    proto = spm_pb2.ModelProto()
    seen = set(tokens)
    n_bytes = 0
    for i, text in enumerate(tokens):
        if types is None:
            ptype = BYTE if _BYTE_PIECE.fullmatch(text) else NORMAL
        else:
            ptype = _GGUF_TO_SPM_TYPE.get(int(types[i]), NORMAL)
        if i == ids["unknown"]:
            ptype = UNKNOWN  # SentencePiece wants exactly one UNKNOWN piece: the unk id
        elif ptype == UNKNOWN or (types is None and i in (ids["bos"], ids["eos"], ids["padding"])):
            ptype = CONTROL
        if ptype in (NORMAL, USER_DEFINED) and " " in text:
            respelled = text.replace(" ", _SPACE)
            if respelled not in seen:
                seen.add(respelled)
                text = respelled
        n_bytes += ptype == BYTE
        proto.pieces.add(piece=text, score=float(scores[i]), type=ptype)
    spec = proto.trainer_spec
    spec.model_type = spm_pb2.TrainerSpec.BPE
    spec.vocab_size = n
    spec.byte_fallback = n_bytes == 256
    spec.unk_id, spec.unk_piece = ids["unknown"], tokens[ids["unknown"]]
    spec.bos_id, spec.bos_piece = ids["bos"], tokens[ids["bos"]]
    spec.eos_id, spec.eos_piece = ids["eos"], tokens[ids["eos"]]
    spec.pad_id = -1 if ids["padding"] is None else ids["padding"]
    if ids["padding"] is not None:
        spec.pad_piece = tokens[ids["padding"]]
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.precompiled_charsmap = b""
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return proto


_SPECIAL_PIECES = {"bos": "<bos>", "eos": "<eos>", "unknown": "<unk>", "padding": "<pad>"}

# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


class Tokenizer:
    """A Gemma tokenizer: text <-> token ids, exact to SentencePiece.

    Build it with `from_gguf` or `from_file`; the constructor takes a SentencePiece ``ModelProto``
    (or its serialized bytes).
    """

    def __init__(self, model_proto: spm_pb2.ModelProto | bytes) -> None:
        if isinstance(model_proto, bytes):
            proto = spm_pb2.ModelProto()
            try:
                proto.ParseFromString(model_proto)
            except Exception as e:  # protobuf raises DecodeError (and others on garbage)
                raise TokenizerError(
                    f"Not a SentencePiece model ({e}); pass a Gemma tokenizer.model."
                ) from e
        else:
            proto = spm_pb2.ModelProto()
            proto.CopyFrom(model_proto)
        if len(proto.pieces) == 0:
            raise TokenizerError("The SentencePiece model is empty; pass a Gemma tokenizer.model.")
        norm = proto.normalizer_spec
        if norm.add_dummy_prefix:  # proto default is True: Gemma models set it False
            raise TokenizerError(
                "The SentencePiece model adds a dummy space prefix, which Gemma tokenizers never "
                "do; pass a Gemma tokenizer.model."
            )
        for p in proto.pieces:
            if p.type == USER_DEFINED and _LOOKS_CONTROL.fullmatch(p.piece):
                p.type = CONTROL
        self._sp = SentencePieceProcessor()
        # kept serialized: a few MB, where the message objects of 256k pieces take tens of MB
        self._serialized = proto.SerializeToString()
        try:
            self._sp.LoadFromSerializedProto(self._serialized)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"SentencePiece rejected the model: {e}; check the file.") from e
        self.vocab_size: int = len(proto.pieces)
        pieces = [p.piece for p in proto.pieces]
        types = [p.type for p in proto.pieces]
        self._pieces = pieces
        self._special = [t in (CONTROL, UNKNOWN) for t in types]
        self._byte = [-1] * self.vocab_size  # byte value of a <0xNN> piece, else -1
        self._text = pieces[:]  # what each id decodes to (byte pieces handled separately)
        for i, (piece, t) in enumerate(zip(pieces, types, strict=True)):
            if t == BYTE and (m := _BYTE_PIECE.fullmatch(piece)):
                self._byte[i] = int(m.group(1), 16)
            elif t not in (CONTROL, UNKNOWN):
                self._text[i] = piece.replace(_SPACE, " ")
        self._index = {p: i for i, p in enumerate(pieces)}

        spec = proto.trainer_spec
        bos = self._special_id(spec.bos_id, spec.bos_piece, "<bos>")
        eos = self._special_id(spec.eos_id, spec.eos_piece, "<eos>")
        if bos is None or eos is None:
            raise TokenizerError(
                "The tokenizer has no <bos> or <eos> control token; it is not a Gemma tokenizer."
            )
        self.bos_id: int = bos
        self.eos_id: int = eos
        self.unk_id: int | None = self._special_id(self._sp.unk_id(), spec.unk_piece, "<unk>")
        pad = self._special_id(spec.pad_id, spec.pad_piece, "<pad>") if spec.pad_id >= 0 else None
        self.pad_id: int | None = pad
        self.start_of_turn_id: int | None = self.piece_to_id("<start_of_turn>")
        self.end_of_turn_id: int | None = self.piece_to_id("<end_of_turn>")
        # Control pieces recognised inside text by `encode`, matched leftmost-longest.
        self._control = {p: i for i, p in enumerate(pieces) if self._special[i] and p}
        self._control_lengths = sorted({len(p) for p in self._control}, reverse=True)
        starts = "".join(sorted({p[0] for p in self._control}))
        self._control_start = re.compile("[" + re.escape(starts) + "]") if starts else None

    def _special_id(self, spec_id: int, spec_piece: str, default_piece: str) -> int | None:
        """The trainer spec's id if it is a control/unk piece, else the id of the named piece."""
        if 0 <= spec_id < self.vocab_size and self._special[spec_id]:
            return spec_id
        for piece in (spec_piece, default_piece):
            if (i := self._index.get(piece)) is not None and self._special[i]:
                return i
        return None

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path_or_reader: str | os.PathLike[str] | Any) -> Tokenizer:
        """Build from a GGUF file's embedded tokenizer: a path, or an open ``gguf.GGUFReader``."""
        if hasattr(path_or_reader, "fields"):
            meta = _reader_metadata(path_or_reader)
        elif isinstance(getattr(path_or_reader, "metadata", None), dict):  # a GGUFFile
            meta = path_or_reader.metadata
        else:
            path = Path(path_or_reader)
            if not path.is_file():
                raise TokenizerError(f"GGUF file {path} does not exist; check the path.")
            meta = _read_gguf_metadata(path)
        return cls(build_model_proto(meta))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Build from a SentencePiece ``tokenizer.model`` file."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"Tokenizer file {path} does not exist; check the path.")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TokenizerError(f"Cannot read {path} ({e}); check its permissions.") from e
        if data[:4] == b"GGUF":
            raise TokenizerError(f"{path} is a GGUF file; use Tokenizer.from_gguf for it.")
        try:
            return cls(data)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from e

    @property
    def model_proto(self) -> spm_pb2.ModelProto:
        """The SentencePiece model in use (a copy; ``.SerializeToString()`` gives a .model file)."""
        proto = spm_pb2.ModelProto()
        proto.ParseFromString(self._serialized)
        return proto

    # ---- vocabulary -----------------------------------------------------------------------------

    def id_to_piece(self, i: int) -> str:
        """The vocabulary piece of id ``i``, SentencePiece spelling (``▁`` for a space)."""
        return self._pieces[self._check_id(i)]

    def piece_to_id(self, piece: str) -> int | None:
        """The id of a piece (SentencePiece spelling), or None if the vocabulary lacks it."""
        return self._index.get(piece)

    def is_special(self, i: int) -> bool:
        """True for control tokens (bos, eos, pad, unk, ``<start_of_turn>``, ``<unusedN>``...)."""
        return self._special[self._check_id(i)]

    def _check_id(self, i: int) -> int:
        try:
            j = operator.index(i)
        except TypeError as e:
            raise TokenizerError(f"Token id {i!r} is not an integer.") from e
        if not 0 <= j < self.vocab_size:
            raise TokenizerError(
                f"Token id {j} is outside the vocabulary (0..{self.vocab_size - 1}); "
                "check that the model and the tokenizer come from the same checkpoint."
            )
        return j

    # ---- encoding -------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; control-token text in it (``<start_of_turn>``...) -> its id."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str, not {type(text).__name__}.")
        ids = [self.bos_id] if add_bos else []
        start = 0
        for pos, end, cid in self._find_controls(text):
            if pos > start:
                ids.extend(self._sp.EncodeAsIds(text[start:pos]))
            ids.append(cid)
            start = end
        if start < len(text):
            ids.extend(self._sp.EncodeAsIds(text[start:]))
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` read as ordinary characters: never a control id, never BOS.

        Use this for user content inside a chat template, so "<end_of_turn>" typed by a user cannot
        end the turn. (User-defined pieces such as ``<start_of_image>`` or ``<b>`` still match, as
        in SentencePiece; they are not control tokens.)
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode_plain takes a str, not {type(text).__name__}.")
        return list(self._sp.EncodeAsIds(text)) if text else []

    def _find_controls(self, text: str) -> Iterable[tuple[int, int, int]]:
        """(start, end, id) of each control piece in ``text``, leftmost-longest, in order."""
        if self._control_start is None:
            return
        pos = 0
        while (m := self._control_start.search(text, pos)) is not None:
            at = m.start()
            for length in self._control_lengths:
                cid = self._control.get(text[at : at + length])
                if cid is not None:
                    yield at, at + length, cid
                    pos = at + length
                    break
            else:
                pos = at + 1

    # ---- decoding -------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of ``ids``; control tokens dropped (``skip_special``) or written as pieces."""
        dec = IncrementalDecoder(self, skip_special)
        return "".join([dec.add(i) for i in ids]) + dec.flush()

    def incremental_decoder(self, skip_special: bool = True) -> IncrementalDecoder:
        """A streaming decoder: feed ids one at a time, get only text that is final."""
        return IncrementalDecoder(self, skip_special)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id})"


class IncrementalDecoder:
    """Decodes ids one at a time. Byte tokens are held until they complete a UTF-8 character.

    The concatenation of every `add` result and the final `flush` equals `Tokenizer.decode` of the
    same ids, and no chunk ever ends inside a code point (a multi-code-point grapheme such as a
    ZWJ emoji sequence may still span chunks).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self._tok = tokenizer
        self._skip = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors=_ERRORS)
        self._fed = False  # bytes were fed to the UTF-8 decoder since the last flush

    def add(self, token_id: int) -> str:
        """Feed one id; return the text that became final (possibly "")."""
        tok = self._tok
        i = tok._check_id(token_id)
        b = tok._byte[i]
        if b >= 0:
            self._fed = True
            return self._utf8.decode(bytes((b,)))
        if self._skip and tok._special[i]:
            return ""  # skipped tokens do not split a run of byte tokens
        return self.flush() + tok._text[i] if self._fed else tok._text[i]

    def flush(self) -> str:
        """Return held-back bytes as text (an incomplete character becomes U+FFFD); reset."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._fed = False
        return out
