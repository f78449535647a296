"""`opengemma embed` as a real subprocess: .npy and .jsonl outputs equal lm.embed, chunked
reading keeps row order, bad input is one line on stderr and leaves no output behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.embed.test_parity import texts
from tests.test_cli import assert_one_line_error, opengemma


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text("\n".join(texts(7, seed=5)) + "\n")
    return path


def test_file_to_npy_in_chunks(tiny_embedding, tiny_embed_lm, corpus, tmp_path):
    out = tmp_path / "out.npy"
    proc = opengemma("embed", str(corpus), "--model", str(tiny_embedding.path), "-o", str(out),
                     "--dtype", "float32", "--chunk", "3", "--task", "query",
                     "--dimensions", "32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "embedded 7 text(s) into 32 dimensions" in proc.stderr
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (7, 32)
    lines = corpus.read_text().splitlines()
    expected = tiny_embed_lm.embed(lines, dimensions=32, task="query")
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_text_and_jsonl(tiny_embedding, tiny_embed_lm, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "the fog ship"}\n"a rat on the hill"\n')
    out = tmp_path / "out.jsonl"
    proc = opengemma("embed", str(src), "-m", str(tiny_embedding.path), "-o", str(out),
                     "--dtype", "float32", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    expected = tiny_embed_lm.embed(["the fog ship", "a rat on the hill"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)
    single = tmp_path / "one.npy"
    proc = opengemma("embed", "the fog ship", "-m", str(tiny_embedding.path), "-o", str(single),
                     "--dtype", "float32", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(single)[0], expected[0], atol=1e-6)


def test_bad_input(tiny_embedding, tmp_path):
    model = str(tiny_embedding.path)
    blank = tmp_path / "blank.txt"
    blank.write_text("the fog\n\nship\n")
    out = tmp_path / "out.npy"
    proc = opengemma("embed", str(blank), "-m", model, "-o", str(out), "-q")
    assert_one_line_error(proc, "blank.txt:2 is empty")
    assert not out.exists() and list(tmp_path.iterdir()) == [blank]
    proc = opengemma("embed", "the fog", "-m", model, "-o", str(out), "--dimensions", "999")
    assert_one_line_error(proc, "--dimensions", "999", "1 to 48")
    long = " ".join(["the fog ship"] * 60)
    proc = opengemma("embed", long, "-m", model, "-o", str(out), "--no-truncate")
    assert_one_line_error(proc, "text[0]", "over this model's limit of 96")
    proc = opengemma("embed", "the fog", "-m", model, "-o", str(tmp_path / "out.csv"))
    assert proc.returncode == 2 and ".npy or .jsonl" in proc.stderr
    assert not out.exists()
