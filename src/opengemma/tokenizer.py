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
from opengemma.tokenizer_gguf import (
    BYTE,
    BYTE_PIECE,
    CONTROL,
    SPACE,
    UNKNOWN,
    USER_DEFINED,
    build_model_proto,
    gguf_vocab,
    read_gguf_metadata,
    reader_metadata,
    serialize_model,
)

__all__ = ["Tokenizer", "IncrementalDecoder", "build_model_proto"]

# Pieces a Gemma tokenizer.model may mark USER_DEFINED although they are control tokens (llama.cpp
# and transformers treat them as special): retyped CONTROL, so encode_plain never emits them.
_LOOKS_CONTROL = re.compile(r"<(?:start_of_turn|end_of_turn|unused\d+|mask|2mass)>|\[@BOS@\]")


def _replace_per_byte(err: UnicodeError) -> tuple[str, int]:
    """UTF-8 error handler: one U+FFFD per invalid byte, as SentencePiece decodes byte pieces."""
    assert isinstance(err, UnicodeDecodeError)
    return "\ufffd", err.start + 1


_ERRORS = "opengemma.replace_per_byte"
codecs.register_error(_ERRORS, _replace_per_byte)


def _retype_controls(pieces: list[str], types: bytearray | np.ndarray) -> list[int]:
    """Retype CONTROL, in place, the USER_DEFINED pieces that are control tokens (see
    `_LOOKS_CONTROL`); return their ids."""
    user = np.flatnonzero(np.frombuffer(types, np.uint8) == USER_DEFINED).tolist()
    ids = [i for i in user if _LOOKS_CONTROL.fullmatch(pieces[i])]
    for i in ids:
        types[i] = CONTROL
    return ids


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
            proto = model_proto
        if len(proto.pieces) == 0:
            raise TokenizerError("The SentencePiece model is empty; pass a Gemma tokenizer.model.")
        norm = proto.normalizer_spec
        if norm.add_dummy_prefix:  # proto default is True: Gemma models set it False
            raise TokenizerError(
                "The SentencePiece model adds a dummy space prefix, which Gemma tokenizers never "
                "do; pass a Gemma tokenizer.model."
            )
        pieces, types = [], bytearray()
        for p in proto.pieces:
            pieces.append(p.piece)
            types.append(p.type)
        retyped = _retype_controls(pieces, types)
        if retyped:
            if proto is model_proto:  # the caller's message stays as it is
                proto = spm_pb2.ModelProto.FromString(proto.SerializeToString())
            for i in retyped:
                proto.pieces[i].type = CONTROL
        self._setup(proto.SerializeToString(), pieces, types, proto.trainer_spec)

    def _setup(
        self,
        serialized: bytes,
        pieces: list[str],
        types: bytearray | np.ndarray,
        spec: spm_pb2.TrainerSpec,
    ) -> None:
        """Load the model into SentencePiece and build the per-id tables decoding reads.

        Pieces are not kept: SentencePiece answers `id_to_piece` and `piece_to_id`.
        """
        self._sp = SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(serialized)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"SentencePiece rejected the model: {e}; check the file.") from e
        self.vocab_size: int = len(pieces)
        kinds = np.frombuffer(types, np.uint8)
        special = (kinds == CONTROL) | (kinds == UNKNOWN)
        self._special = special.tobytes()  # 1 for control and unk tokens, else 0
        # What each id decodes to: a str, or for a byte token <0xNN> its byte (a bytes object).
        text: list[str | bytes] = [p.replace(SPACE, " ") for p in pieces]
        special_ids = np.flatnonzero(special).tolist()
        for i in special_ids:
            text[i] = pieces[i]
        for i in np.flatnonzero(kinds == BYTE).tolist():
            if m := BYTE_PIECE.fullmatch(pieces[i]):
                text[i] = bytes((int(m.group(1), 16),))
        self._text = text

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
        # Gemma 1-3 mark turns <start_of_turn>/<end_of_turn>; Gemma 4 <|turn>/<turn|>, and
        # has a system role. The vocabulary says which template the checkpoint speaks.
        gemma4 = self.piece_to_id("<|turn>") is not None and self.piece_to_id("<turn|>")
        self.chat_style: str = "gemma4" if gemma4 else "gemma"
        start, end = ("<|turn>", "<turn|>") if gemma4 else ("<start_of_turn>", "<end_of_turn>")
        self.start_of_turn_id: int | None = self.piece_to_id(start)
        self.end_of_turn_id: int | None = self.piece_to_id(end)
        # Control pieces recognised inside text by `encode`, matched leftmost-longest.
        self._control = {pieces[i]: i for i in special_ids if pieces[i]}
        self._control_lengths = sorted({len(p) for p in self._control}, reverse=True)
        starts = "".join(sorted({p[0] for p in self._control}))
        self._control_start = re.compile("[" + re.escape(starts) + "]") if starts else None

    def _special_id(self, spec_id: int, spec_piece: str, default_piece: str) -> int | None:
        """The trainer spec's id if it is a control/unk piece, else the id of the named piece."""
        if 0 <= spec_id < self.vocab_size and self._special[spec_id]:
            return spec_id
        for piece in (spec_piece, default_piece):
            if (i := self.piece_to_id(piece)) is not None and self._special[i]:
                return i
        return None

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path_or_reader: str | os.PathLike[str] | Any) -> Tokenizer:
        """Build from a GGUF file's embedded tokenizer: a path, or an open ``gguf.GGUFReader``."""
        if hasattr(path_or_reader, "fields"):
            meta = reader_metadata(path_or_reader)
        elif isinstance(getattr(path_or_reader, "metadata", None), dict):  # a GGUFFile
            meta = path_or_reader.metadata
        else:
            path = Path(path_or_reader)
            if not path.is_file():
                raise TokenizerError(f"GGUF file {path} does not exist; check the path.")
            meta = read_gguf_metadata(path)
        # serialized straight from the metadata arrays: no ModelProto of 262k messages to build
        pieces, scores, types, specs = gguf_vocab(meta)
        _retype_controls(pieces, types)
        tok = cls.__new__(cls)
        tok._setup(serialize_model(pieces, scores, types, specs), pieces, types, specs.trainer_spec)
        return tok

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
        return spm_pb2.ModelProto.FromString(self._sp.serialized_model_proto())

    # ---- vocabulary -----------------------------------------------------------------------------

    def id_to_piece(self, i: int) -> str:
        """The vocabulary piece of id ``i``, SentencePiece spelling (``▁`` for a space)."""
        return self._sp.IdToPiece(self._check_id(i))

    def piece_to_id(self, piece: str) -> int | None:
        """The id of a piece (SentencePiece spelling), or None if the vocabulary lacks it."""
        if not isinstance(piece, str):
            return None
        try:
            i = self._sp.PieceToId(piece)
        except TypeError:  # not encodable as UTF-8 (a lone surrogate): no such piece
            return None
        # SentencePiece answers the unk id for a piece it lacks; pieces are unique, so a piece
        # is in the vocabulary exactly when its id spells it back
        return i if self._sp.IdToPiece(i) == piece else None

    def is_special(self, i: int) -> bool:
        """True for control tokens (bos, eos, pad, unk, ``<start_of_turn>``, ``<unusedN>``...)."""
        return self._special[self._check_id(i)] == 1

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
        text = tok._text[i]
        if text.__class__ is bytes:  # a byte token
            self._fed = True
            return self._utf8.decode(text)
        if self._skip and tok._special[i]:
            return ""  # skipped tokens do not split a run of byte tokens
        return self.flush() + text if self._fed else text

    def flush(self) -> str:
        """Return held-back bytes as text (an incomplete character becomes U+FFFD); reset."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._fed = False
        return out
