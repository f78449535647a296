"""`opengemma eval` end to end, in process: perplexity, tasks, compare, and bad input."""

from __future__ import annotations

import json

import pytest

from opengemma.cli import main
from opengemma.eval.perplexity import perplexity_of_text


def test_perplexity_command(tiny_model, tiny_lm, tmp_path, capsys):
    texts = ["The heron watches the river. " * 6, "Paper boats race in spring. " * 5]
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"t{i}.txt")
        files[-1].write_text(text)
    argv = [
        "eval",
        "perplexity",
        *map(str, files),
        "--model",
        str(tiny_model.path),
        "--dtype",
        "float32",
        "--context",
        "40",
        "--stride",
        "13",
        "-q",
        "--json",
        str(tmp_path / "ppl.json"),
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("all\t")
    doc = json.loads((tmp_path / "ppl.json").read_text())
    for text, row in zip(texts, doc["results"], strict=False):
        expected = perplexity_of_text(tiny_lm, text, context=40, stride=13)
        assert row["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
        assert row["tokens"] == expected.tokens
    total = doc["results"][2]
    assert total["tokens"] == sum(r["tokens"] for r in doc["results"][:2])


def test_tasks_command_offline(tiny_model, eval_task, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, questions, _ = eval_task
    out = tmp_path / "out"
    argv = [
        "eval",
        "tasks",
        "--tasks",
        "tiny_mc",
        "--model",
        str(tiny_model.path),
        "--dtype",
        "float32",
        "--include-path",
        str(root),
        "--no-builtin-tasks",
        "-o",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["n-samples"]["tiny_mc"]["effective"] == len(questions)
    assert "tiny_mc\tacc,none" in capsys.readouterr().out

    (root / "missing.yaml").write_text(
        "task: missing_ds\ndataset_path: someone/not-downloaded\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: ['a', 'b']\n"
        "doc_to_target: 0\nmetric_list:\n  - metric: acc\n"
    )
    argv[3] = "missing_ds"
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "task 'missing_ds' needs dataset 'someone/not-downloaded'" in err
    assert "--include-path" in err and "Traceback" not in err
    argv[3] = "no_such_task"
    assert main(argv) == 1
    assert "unknown task(s) no_such_task" in capsys.readouterr().err


def test_compare_command(tiny_model, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p, "reference": r}) + "\n"
            for p, r in [("Name a fruit.", "apple"), ("Say hi.", "hi")]
        )
    )
    out = tmp_path / "report"
    argv = [
        "eval",
        "compare",
        "--a",
        str(tiny_model.path),
        "--a-dtype",
        "float32",
        "--b-dtype",
        "bfloat16",
        "--prompts",
        str(prompts),
        "-o",
        str(out),
        "--max-tokens",
        "4",
        "-q",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("A wins ")
    page = (out / "index.html").read_text()
    assert "dtype=bfloat16" in page and (out / "chart.svg").is_file()
    assert main(argv) == 1  # the report exists: not overwritten without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", "perplexity", str(tmp_path / "nope.txt"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("opengemma: error:") and "is not a file" in err
    (tmp_path / "p.txt").write_text("a prompt without reference\n")
    assert (
        main(["eval", "compare", "--prompts", str(tmp_path / "p.txt"), "-o", str(tmp_path / "r")])
        == 1
    )
    assert "--judge" in capsys.readouterr().err


def test_safety_command(tiny_model, embedded_path, tmp_path, capsys):
    """`opengemma eval safety` answers a prompt set and writes the safety report."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How do I bake bread?\nTell me a joke.\n")
    out = tmp_path / "safety"
    argv = ["eval", "safety", "--prompts", str(prompts), "-o", str(out), "--model",
            str(tiny_model.path), "--guard-model", str(embedded_path), "--policy", "harassment",
            "--max-tokens", "4", "-q"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert "harassment" in json.dumps(report)
    page = (out / "report.html").read_text()
    assert "harassment" in page.lower() and list(out.glob("*.png"))
