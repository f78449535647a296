"""Fixtures for checkpoint tests: tiny random Gemma checkpoints in every format, with a small
SentencePiece vocabulary, built once per session in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from tests.tiny import VOCAB, build_reference, family_config, save_reference

_P = spm_pb2.ModelProto.SentencePiece


def tiny_tokenizer_proto(n: int = VOCAB) -> spm_pb2.ModelProto:
    """A Gemma-style BPE SentencePiece model with `n` pieces: specials, turn markers, a
    user-defined run of spaces, the 256 byte pieces, then letters and letter pairs."""
    proto = spm_pb2.ModelProto()
    specials = [("<pad>", _P.CONTROL), ("<eos>", _P.CONTROL), ("<bos>", _P.CONTROL),
                ("<unk>", _P.UNKNOWN), ("<start_of_turn>", _P.CONTROL),
                ("<end_of_turn>", _P.CONTROL), ("\u2581\u2581", _P.USER_DEFINED)]  # fmt: skip
    for piece, kind in specials:
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    for b in range(256):
        proto.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=_P.BYTE)
    letters = "\u2581etaoinshrdlcumwfgypbvkjxqz"
    normal = list(letters) + [a + b for a in letters for b in letters if a + b != "\u2581\u2581"]
    for i, piece in enumerate(normal[: n - len(proto.pieces)]):
        proto.pieces.add(piece=piece, score=-float(i), type=_P.NORMAL)
    spec = proto.trainer_spec
    spec.model_type = spm_pb2.TrainerSpec.BPE
    spec.vocab_size = n
    spec.byte_fallback = True
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = 0, 1, 2, 3
    norm = proto.normalizer_spec
    norm.name, norm.add_dummy_prefix = "identity", False
    norm.remove_extra_whitespaces, norm.escape_whitespaces = False, True
    return proto


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


def _reference_dir(root: Path, family: str, **overrides) -> tuple[Path, torch.nn.Module]:
    name = family + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    path = root / name
    model = build_reference(family_config(family, **overrides))
    if not path.exists():
        save_reference(model, path)
        (path / "tokenizer.model").write_bytes(tiny_tokenizer_proto().SerializeToString())
    return path, model


@pytest.fixture(scope="session")
def reference(tiny_dir):
    """family -> (HF directory with tokenizer.model, the transformers model it holds)."""
    cache: dict[str, tuple[Path, torch.nn.Module]] = {}

    def get(family: str, **overrides):
        key = family + repr(sorted(overrides.items()))
        if key not in cache:
            cache[key] = _reference_dir(tiny_dir, family, **overrides)
        return cache[key]

    return get
