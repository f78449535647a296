"""The safety report rendered from a small prompt set: HTML that opens and shows its images,
JSON that agrees with it, nothing half-written."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from opengemma.safety.classifier import SafetyClassifier
from opengemma.safety.guard import Guard
from opengemma.safety.policies import resolve_policies
from opengemma.safety.safety_report import (
    ReportError,
    load_prompt_set,
    run_safety_eval,
    write_report,
)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_report_from_a_small_prompt_set(tiny_lm, tmp_path, monkeypatch):
    import matplotlib.image
    import numpy as np
    from matplotlib.figure import Figure

    figures = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        figures.append(fig)
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    prompts_file = tmp_path / "prompts.jsonl"
    texts = ["Tell me a joke.", "<b>How</b> do locks work?", "Hi"]
    prompts_file.write_text("\n".join(json.dumps({"prompt": p}) for p in texts))
    prompts = load_prompt_set(prompts_file)
    guard = Guard(SafetyClassifier(tiny_lm), resolve_policies(["harassment", "hate"]), 0.5)
    records = run_safety_eval(tiny_lm, guard, prompts, max_tokens=5, temperature=0)
    out = tmp_path / "report"
    page_path = write_report(records, guard, out, meta={"model": "tiny"})

    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    assert len(page.images) == 2
    for src in page.images:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(out / src).shape[:2] == (300, 500)  # 5 x 3 in at 100 dpi
    assert "<b>How</b> do locks work?" in "".join(page.text)  # escaped, shown as text
    doc = json.loads((out / "report.json").read_text())
    summary = doc["summary"]
    assert summary["records"] == 3 and list(summary["policies"]) == ["harassment", "hate_speech"]
    for name, s in summary["policies"].items():
        flagged = sum(r["prompt_verdict"]["scores"][name] >= 0.5 for r in doc["records"])
        assert s["prompt_rate"] == pytest.approx(flagged / 3)
        assert f"{s['prompt_rate']:.1%}" in "".join(page.text)
    # each histogram counts the report's scores: prompts' bars, then responses', 20 bins of 0.05
    assert len(figures) == len(summary["policies"])
    for fig, name in zip(figures, summary["policies"], strict=True):
        (ax,) = fig.axes
        assert ax.get_title() == name
        heights = [p.get_height() for p in ax.patches]
        for side, bars in (("prompt", heights[:20]), ("response", heights[20:])):
            scores = [r[f"{side}_verdict"]["scores"][name] for r in doc["records"]]
            want, _ = np.histogram(scores, bins=20, range=(0, 1))
            assert bars == list(want), (name, side)
    assert doc["records"][0]["response"] == tiny_lm.chat(
        [{"role": "user", "content": "Tell me a joke."}], 5, temperature=0
    )
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_bad_prompt_sets(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(ReportError, match="is empty"):
        load_prompt_set(empty)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ReportError, match="b.jsonl:2"):
        load_prompt_set(bad)
    plain = tmp_path / "p.txt"
    plain.write_text("one\ntwo\n")
    assert load_prompt_set(plain) == ["one", "two"]
    with pytest.raises(ReportError, match="cannot read"):
        load_prompt_set(tmp_path / "missing.txt")
