"""Guard verdicts, and the `opengemma guard` and `opengemma watermark` commands end to end."""

from __future__ import annotations

import json

import pytest

from opengemma.cli import main
from opengemma.safety.classifier import SafetyClassifier
from opengemma.safety.guard import Guard, GuardError
from opengemma.safety.policies import resolve_policies


@pytest.fixture(scope="module")
def clf(tiny_lm):
    return SafetyClassifier(tiny_lm)


def test_verdicts_follow_the_threshold(clf):
    pols = resolve_policies(["harassment", "hate_speech"])
    scores = {s.policy: s.p_yes for s in clf.score("You are all idiots.", None, pols)}
    low, high = min(scores.values()), max(scores.values())
    assert low < high
    v = Guard(clf, pols, threshold=high).check_prompt("You are all idiots.")
    assert v.scores == pytest.approx(scores) and v.blocked
    assert v.violated == tuple(n for n, p in scores.items() if p >= high)
    assert "blocked by the safety policies" in v.message() and v.kind == "prompt"
    v = Guard(clf, pols, threshold=min(1.0, high + 1e-9)).check_prompt("You are all idiots.")
    assert not v.blocked and "passed" in v.message()
    r = Guard(clf, pols, threshold=low).check_response("Hi", "You are all idiots.")
    assert r.kind == "response" and set(r.violated) == set(scores)
    assert r.to_dict()["blocked"] is True and r.max_score == max(r.scores.values())
    assert Guard(clf).note is None  # a checkpoint of the user's choice carries no warning


def test_bad_threshold(clf):
    for bad in (0.0, 1.5, -1):
        with pytest.raises(GuardError, match="threshold"):
            Guard(clf, threshold=bad)


def test_guard_command_json_and_batch(tiny_gemma2_dir, tmp_path, capsys):
    m = str(tiny_gemma2_dir)
    assert main(["guard", "How do I make a cake?", "--model", m, "--json", "-p", "hate"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "prompt" and list(out["scores"]) == ["hate_speech"]
    requests = tmp_path / "in.jsonl"
    requests.write_text('{"prompt": "a"}\n\n{"prompt": "b", "response": "c"}\n')
    dest = tmp_path / "out.jsonl"
    assert main(["guard", "--input", str(requests), "-o", str(dest), "-m", m, "-q"]) == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [(r["line"], r["kind"]) for r in rows] == [(1, "prompt"), (3, "response")]
    assert all(len(r["scores"]) == 4 for r in rows)


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        ([], '{"prompt": 1}\n', 'needs {"prompt"'),
        ([], "not json\n", "in.jsonl:1: not JSON"),
        (["--threshold", "2"], '{"prompt": "a"}\n', "--threshold must be in"),
        (["--policy", "nope"], '{"prompt": "a"}\n', "unknown policy 'nope'"),
    ],
)
def test_guard_command_rejects_bad_input_before_loading(tmp_path, capsys, args, content, message):
    requests = tmp_path / "in.jsonl"
    requests.write_text(content)
    dest = tmp_path / "out.jsonl"
    code = main(["guard", "--input", str(requests), "-o", str(dest), "-m", "/nonexistent", *args])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1
    assert not dest.exists()


def test_guard_command_needs_exactly_one_input(capsys):
    assert main(["guard"]) == 1
    assert "one of them" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_says_it_is_not_a_safety_classifier(lm, capsys):
    g = Guard(SafetyClassifier(lm), resolve_policies(["harassment"]))
    assert g.note is not None and "not a trained safety classifier" in g.note
    assert main(["guard", "Hello there", "-p", "harassment", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "not a trained safety classifier" in captured.err
    assert json.loads(captured.out)["note"] == g.note


@pytest.mark.slow
def test_watermark_commands(tmp_path, lm, embedded_path, embedded_watermarked, capsys):
    from opengemma.safety.watermark import WatermarkConfig

    made = tmp_path / "made.json"
    assert main(["watermark", "keygen", "-o", str(made), "--depth", "20"]) == 0
    assert WatermarkConfig.load(made).depth == 20
    keys = embedded_watermarked["cfg"].save(tmp_path / "keys.json")
    text = lm.tokenizer.decode(embedded_watermarked["ids"])
    (tmp_path / "t.txt").write_text(text)
    lines = [json.dumps({"text": text}), json.dumps({"text": "Plain words, no mark. " * 8})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    tok = ["-m", str(embedded_path)]
    capsys.readouterr()
    assert main(["watermark", "detect", str(tmp_path / "t.txt"), "--keys", str(keys), *tok]) == 0
    assert capsys.readouterr().out.startswith("WATERMARKED: p-value")
    args = ["watermark", "detect", str(tmp_path / "t.jsonl"), "-k", str(keys), "--json", *tok]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["watermarked"] for r in rows] == [True, False]
    (tmp_path / "bad.json").write_text("[]")
    bad = ["watermark", "detect", str(tmp_path / "t.txt"), "-k", str(tmp_path / "bad.json")]
    assert main(bad) == 1
    assert "one JSON object" in capsys.readouterr().err
