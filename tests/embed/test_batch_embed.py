"""`opengemma batch embed` on the tiny EmbeddingGemma: every record's vector equals the
Embedder's own output for that text alone, on the local engine (through the CLI) and on 2 Ray
actors; --resume keeps finished parts; bad records are a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.embed.test_parity import texts

from opengemma.batch.jobs import BatchError, BatchJob
from opengemma.batch.run import run_batch
from opengemma.cli import main
from opengemma.embed import Embedder

N = 9


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    sample = texts(N, seed=11)
    path = tmp_path_factory.mktemp("batch_embed") / "in.jsonl"
    rows = [({"id": f"t{i}"} if i % 3 else {}) | {"text": t} for i, t in enumerate(sample)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, sample


def _vectors(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = [json.loads(line) for name in manifest["parts"]
            for line in (folder / name).read_text().splitlines()]  # fmt: skip
    assert len(rows) == manifest["records"] == N
    return {r["id"]: np.array(r["embedding"], dtype=np.float32) for r in rows}


def _expected(lm, sample: list[str], dims: int | None, task: str | None) -> dict:
    embedder = Embedder(lm)
    ids = [f"t{i}" if i % 3 else i for i in range(N)]  # no "id": the record's line number
    return {rid: embedder.embed(t, dims, task) for rid, t in zip(ids, sample, strict=True)}


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for rid, vec in want.items():
        np.testing.assert_allclose(got[rid], vec, atol=1e-5, rtol=0)


def test_cli_vectors_equal_the_embedder_and_resume(tiny_embedding, tiny_embed_lm, corpus,
                                                   tmp_path, capsys):  # fmt: skip
    src, sample = corpus
    out = tmp_path / "out"
    argv = ["batch", "embed", "-i", str(src), "-o", str(out), "-m", str(tiny_embedding.path),
            "--task", "query", "--chunk-size", "4", "--no-progress",
            "--dimensions", "32"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["records"] == N
    want = _expected(tiny_embed_lm, sample, 32, "query")
    _same(_vectors(out), want)
    assert np.abs(want["t1"] - tiny_embed_lm.embed(sample[1], 32)).max() > 1e-3  # task counts

    (out / "part-00001.jsonl").unlink()  # as if the run had stopped there
    kept = (out / "part-00000.jsonl").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_records"] == 5  # parts 0 (4) and 2 (1)
    assert (out / "part-00000.jsonl").stat().st_mtime_ns == kept
    _same(_vectors(out), want)
    assert main([*argv[:-1], "16", "--resume"]) == 1  # another width: another job
    assert "different job" in capsys.readouterr().err


def test_ray_two_actors_vectors_equal_the_embedder(tiny_embedding, tiny_embed_lm, corpus,
                                                   tmp_path):  # fmt: skip
    src, sample = corpus
    job = BatchJob("embed", src, tmp_path / "out", model=str(tiny_embedding.path), chunk_size=2,
                   engine="ray", workers=2, threads=1)  # fmt: skip
    assert run_batch(job)["records"] == N
    _same(_vectors(tmp_path / "out"), _expected(tiny_embed_lm, sample, None, None))


def test_bad_records_and_options(tiny_embedding, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "the fog ship"}\n{"text": "  "}\n')
    with pytest.raises(BatchError, match=r'in.jsonl:2: a record needs "text"'):
        run_batch(BatchJob("embed", src, tmp_path / "out", model=str(tiny_embedding.path)))
    src.write_text('{"text": "the fog ship"}\n')
    model = ["--model", str(tiny_embedding.path), "--no-progress"]
    assert main(["batch", "embed", "-i", str(src), "-o", str(tmp_path / "o"), *model,
                 "--dimensions", "999"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("opengemma: error: --dimensions") and "1 to 48" in err
    assert main(["batch", "embed", "-i", str(src), "-o", str(tmp_path / "o2"), *model,
                 "--task", "nope"]) == 1  # fmt: skip
    assert "unknown task 'nope'" in capsys.readouterr().err
