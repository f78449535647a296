"""`opengemma batch`: greedy outputs equal `lm.generate` per record (embedded default model),
on the local engine and on 2 Ray actors; resume; per-record sampling; guard; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import opengemma
from opengemma.batch.jobs import BatchError, BatchJob
from opengemma.batch.run import run_batch
from opengemma.cli import main

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "def add(a, b):",
           "The opposite of hot is", "Water boils at", "My favourite colour is"]  # fmt: skip
TOKENS = 5


@pytest.fixture(scope="module")
def lm():
    return opengemma.load(threads=1)


@pytest.fixture(scope="module")
def expected(lm):
    return [lm.generate(p, max_tokens=TOKENS) for p in PROMPTS]


def _input(path: Path, extra: dict | None = None) -> Path:
    rows = [{"id": f"p{i}", "prompt": p, **(extra or {})} for i, p in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _outputs(folder: Path) -> list[dict]:
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = []
    for name in manifest["parts"]:
        rows += [json.loads(line) for line in (folder / name).read_text().splitlines()]
    return rows


def test_local_greedy_equals_lm_generate_and_resume_skips_parts(tmp_path, expected):
    src = _input(tmp_path / "in.jsonl")
    job = BatchJob("generate", src, tmp_path / "out", max_tokens=TOKENS, chunk_size=3)
    manifest = run_batch(job)
    rows = _outputs(tmp_path / "out")
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(len(PROMPTS))]
    assert [r["text"] for r in rows] == expected
    assert all(r["completion_tokens"] <= TOKENS for r in rows)
    assert manifest["records"] == len(PROMPTS) and len(manifest["parts"]) == 3

    (tmp_path / "out" / "part-00001.jsonl").unlink()  # as if the run had stopped there
    first = (tmp_path / "out" / "part-00000.jsonl").stat().st_mtime_ns
    again = run_batch(BatchJob("generate", src, tmp_path / "out", max_tokens=TOKENS,
                               chunk_size=3, resume=True))  # fmt: skip
    assert again["resumed_records"] == 4  # parts 0 (3 records) and 2 (1) were kept
    assert (tmp_path / "out" / "part-00000.jsonl").stat().st_mtime_ns == first
    assert [r["text"] for r in _outputs(tmp_path / "out")] == expected


def test_ray_two_actors_greedy_equals_lm_generate(tmp_path, expected):
    pytest.importorskip("ray", reason="the ray extra is part of the dev install")
    src = _input(tmp_path / "in.jsonl")
    job = BatchJob("generate", src, tmp_path / "out", max_tokens=TOKENS, chunk_size=2,
                   engine="ray", workers=2, threads=1)  # fmt: skip
    run_batch(job)
    rows = _outputs(tmp_path / "out")
    assert {r["id"]: r["text"] for r in rows} == {f"p{i}": e for i, e in enumerate(expected)}


def test_per_record_parameters_override_the_defaults(tmp_path, lm):
    src = tmp_path / "in.jsonl"
    rows = [{"id": 1, "prompt": PROMPTS[0], "max_tokens": 2},
            {"id": 2, "prompt": PROMPTS[1], "temperature": 0.9, "seed": 7, "max_tokens": 4},
            {"prompt": PROMPTS[2]}]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_batch(BatchJob("generate", src, tmp_path / "out", max_tokens=3))
    out = _outputs(tmp_path / "out")
    assert [r["id"] for r in out] == [1, 2, 2]  # no id: the record's line number
    assert out[0]["text"] == lm.generate(PROMPTS[0], max_tokens=2)
    assert out[1]["text"] == lm.generate(PROMPTS[1], max_tokens=4, temperature=0.9, seed=7)
    assert out[2]["text"] == lm.generate(PROMPTS[2], max_tokens=3)


def test_guard_scores_match_the_classifier(tmp_path):
    from opengemma.safety.classifier import SafetyClassifier

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "How do I bake bread?",
                               "response": "Mix flour and water."}) + "\n")  # fmt: skip
    run_batch(BatchJob("guard", src, tmp_path / "out", policies=("dangerous_content",)))
    (row,) = _outputs(tmp_path / "out")
    # as `opengemma guard` loads it (float32)
    want = SafetyClassifier.load().score("How do I bake bread?", "Mix flour and water.",
                                         ["dangerous_content"])  # fmt: skip
    assert row["id"] == "a"
    assert row["scores"]["dangerous_content"] == pytest.approx(want[0].p_yes, abs=1e-6)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "prompt": "ok"}\n{"id": 2, "text": "no prompt"}\n')
    with pytest.raises(BatchError, match=r"in.jsonl:2: .*\"prompt\""):
        run_batch(BatchJob("generate", src, tmp_path / "out"))
    assert main(["batch", "generate", "-i", str(tmp_path / "missing.jsonl"),
                 "-o", str(tmp_path / "o")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("opengemma: error: input not found") and "Traceback" not in err
    src.write_text('{"prompt": "ok"}\n')
    out = tmp_path / "busy"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(BatchError, match="not empty"):
        run_batch(BatchJob("generate", src, out))
