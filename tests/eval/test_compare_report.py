"""The side-by-side comparison: answers, scores, win rates, and the rendered HTML report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from opengemma.eval import EvalError
from opengemma.eval.compare import (
    Comparison,
    PromptItem,
    answer_all,
    judge_preference,
    read_prompts,
    score,
    token_f1,
)
from opengemma.eval.compare_report import write_report

ITEMS = [
    PromptItem("Name a fruit.", "apple"),
    PromptItem("What is <b>bold</b> & why?", "a tag"),
    PromptItem("Say hello.", "hello"),
]


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.cells, self._in_td = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        self._in_td = tag == "td"

    def handle_data(self, data):
        if self._in_td:
            self.cells.append(data)


def test_report_renders_side_by_side(tiny_lm, tmp_path):
    answers_a = answer_all(tiny_lm, ITEMS, max_tokens=6, chat=True)
    assert answers_a == [
        tiny_lm.chat([{"role": "user", "content": it.prompt}], 6).strip() for it in ITEMS
    ]
    answers_b = ["apple", "a <tag> & more", "nothing"]
    c = score(Comparison("A model", "B <model>", "", ITEMS, answers_a, answers_b, [], []))
    assert c.method == "reference F1" and c.scores_b[0] == 1.0 and c.winners[0] in ("b", "tie")
    index = write_report(c, tmp_path / "report")
    page = index.read_text()
    parser = Collect()
    parser.feed(page)
    assert sorted(parser.imgs) == ["chart.svg", "scores.svg"]
    for img in parser.imgs:  # real, well-formed SVG images with one bar per prompt and model
        root = ET.parse(index.parent / img).getroot()
        assert root.tag.endswith("svg")
    bars = (
        ET.parse(index.parent / "scores.svg").getroot().findall("{http://www.w3.org/2000/svg}rect")
    )
    assert len(bars) == 2 * len(ITEMS)
    assert "What is <b>bold</b> & why?" in parser.cells  # escaped in HTML, intact as text
    assert "a <tag> & more" in parser.cells and "<tag>" not in page
    doc = json.loads((index.parent / "results.json").read_text())
    assert [p["winner"] for p in doc["prompts"]] == c.winners
    rate, low, high = doc["win_rates"]["b"]["rate"], *doc["win_rates"]["b"]["ci95"]
    assert rate == c.winners.count("b") / 3 and 0 <= low <= rate <= high <= 1
    with pytest.raises(EvalError, match="not an empty folder"):
        write_report(c, tmp_path / "report")
    assert write_report(c, tmp_path / "report", overwrite=True) == index


def test_judge_preference_matches_transformers(tiny_lm, tiny_model):
    """P(judge prefers a) recomputed from transformers' forward of the same checkpoint: the
    verdict letters' probabilities in both presentation orders, `a` first then second."""
    import torch

    from opengemma.chat import chat_prompt_ids
    from opengemma.eval.compare import JUDGE_TEMPLATE

    prompt, a, b = "Name a fruit.", "apple", "stone"
    letters = [tiny_lm.tokenizer.encode_plain(x)[0] for x in ("A", "B")]

    def p_first(first: str, second: str) -> float:
        text = JUDGE_TEMPLATE.format(prompt=prompt, a=first, b=second)
        ids = chat_prompt_ids(tiny_lm.tokenizer, [{"role": "user", "content": text}])
        with torch.no_grad():
            logits = tiny_model.reference(torch.tensor([ids])).logits[0, -1].double()
        return torch.softmax(logits[letters], dim=0)[0].item()

    expected = (p_first(a, b) + (1 - p_first(b, a))) / 2
    p = judge_preference(tiny_lm, prompt, a, b)
    assert p == pytest.approx(expected, abs=1e-4) and p != pytest.approx(0.5, abs=1e-3)
    c = score(Comparison("a", "b", "", ITEMS[:1], ["apple"], ["stone"], [], []), judge=tiny_lm)
    assert c.scores_a == [pytest.approx(p)] and c.method == "judge: judge"


def test_metrics_and_prompt_files(tmp_path):
    assert token_f1("The apple.", "apple") == pytest.approx(2 / 3)
    assert token_f1("x", "y") == 0.0 and token_f1("", "") == 1.0
    c = Comparison("a", "b", "", ITEMS * 10, [], [], [], [], winners=["a"] * 20 + ["b"] * 10)
    rates = c.win_rates()
    assert rates["a"][0] == pytest.approx(2 / 3) and rates["a"][1] < 2 / 3 < rates["a"][2]
    assert rates["tie"] == (0.0, 0.0, 0.0)
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi", "reference": "hello"}\n\n{"prompt": 3}\n')
    with pytest.raises(EvalError, match=r'p.jsonl:2: each line needs a "prompt"'):
        read_prompts(tmp_path / "p.jsonl")
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert read_prompts(tmp_path / "p.txt") == [PromptItem("one"), PromptItem("two")]
    with pytest.raises(EvalError, match="reference"):
        score(
            Comparison(
                "a", "b", "", read_prompts(tmp_path / "p.txt"), ["x", "y"], ["x", "y"], [], []
            )
        )
