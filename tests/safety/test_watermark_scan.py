"""Segment scanning and robustness of the watermark detector: a watermarked passage inside a
long plain text, the scan's false-positive rate, and detection after random token edits."""

from __future__ import annotations

import json

import pytest
import torch
from test_watermark import _toy_generate  # tests/safety is on sys.path

from opengemma.safety.watermark import WatermarkConfig, WatermarkError, detect_ids
from opengemma.safety.watermark_scan import scan_ids, window_sizes

CFG = WatermarkConfig(keys=tuple(range(300, 300 + 30 * 7919, 7919)))  # depth 30


def _auc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _edit(ids: torch.Tensor, rate: float, g: torch.Generator, vocab: int = 5000) -> torch.Tensor:
    """Each token independently substituted, preceded by an insertion, or deleted, with
    probability rate / 3 each (random tokens from the toy vocabulary)."""
    out: list[int] = []
    for t in ids.tolist():
        r = float(torch.rand(1, generator=g))
        if r < rate / 3:
            out.append(int(torch.randint(0, vocab, (1,), generator=g)))  # substitution
        elif r < 2 * rate / 3:
            out += [int(torch.randint(0, vocab, (1,), generator=g)), t]  # insertion
        elif r >= rate:
            out.append(t)  # kept (else deleted)
    return torch.tensor(out)


def test_window_sizes_double_and_end_with_the_whole_text():
    assert window_sizes(1000) == [32, 64, 128, 256, 512, 1000]
    assert window_sizes(20) == [20]
    assert window_sizes(0) == []


@pytest.mark.parametrize("where", [0, 450, 900])
def test_finds_a_100_token_passage_inside_1000_plain_tokens(where):
    plain = _toy_generate(CFG, 900, 77 + where, False)
    passage = _toy_generate(CFG, 100, 5 + where, True)
    ids = torch.cat([plain[:where], passage, plain[where:]])
    seg = scan_ids(ids, CFG)
    assert seg.watermarked and seg.p_corrected < 1e-3, seg
    overlap = min(seg.end, where + 100) - max(seg.start, where)
    assert overlap >= 0.6 * (seg.end - seg.start), seg  # the window sits on the passage
    # the whole-text detector is diluted by the 900 plain tokens; the scan is not
    assert seg.p_corrected < detect_ids(ids, CFG).p_value


def test_scan_false_positive_rate_on_plain_text():
    # 250 plain texts of 1,000 tokens; the corrected p-value is conservative (Bonferroni over
    # the windows), so at alpha 1% at most 1% + 3 binomial standard deviations are flagged
    g = torch.Generator().manual_seed(11)
    segs = [scan_ids(torch.randint(0, 262144, (1000,), generator=g), CFG) for _ in range(250)]
    for level in (0.01, 0.05):
        rate = sum(s.p_corrected < level for s in segs) / len(segs)
        assert rate <= level + 3 * (level * (1 - level) / len(segs)) ** 0.5, (level, rate)
    assert all(s.windows > 200 for s in segs)


def test_auc_after_20_percent_token_edits():
    # a smaller version of bench/watermark_detect.py's figure (there: 200-token texts of the
    # embedded model, AUC >= 0.95): 16 + 16 toy texts of 200 tokens, 20% random edits
    g = torch.Generator().manual_seed(3)
    wm = [_edit(_toy_generate(CFG, 200, s, True), 0.2, g) for s in range(16)]
    plain = [_edit(_toy_generate(CFG, 200, 100 + s, False), 0.2, g) for s in range(16)]
    auc = _auc([detect_ids(t, CFG).score for t in wm], [detect_ids(t, CFG).score for t in plain])
    assert auc >= 0.95, auc


def test_bad_arguments_are_refused():
    with pytest.raises(WatermarkError, match="alpha"):
        scan_ids(torch.arange(100), CFG, alpha=1.5)
    with pytest.raises(WatermarkError, match="min_window"):
        scan_ids(torch.arange(100), CFG, min_window=0)
    seg = scan_ids(torch.arange(3), CFG)  # shorter than one n-gram: nothing to test
    assert seg.windows == 0 and not seg.watermarked and seg.p_corrected == 1.0


PLAIN = (
    "The committee met on a wet Tuesday to discuss the bridge. Some members wanted a wider "
    "footpath, others worried about the cost of steel, and the engineer from the county "
    "explained, with drawings, why the old piers could not carry another lane. After an hour "
    "they agreed to ask three firms for quotes and to meet again in spring. "
)
TAIL = (
    "Later that week the local paper printed a letter from a reader who remembered the ferry "
    "that ran before the bridge was built, how it stopped in fog and how children waved at the "
    "boatman. The editor added a photograph from the archive and a note on the opening day."
)


@pytest.mark.slow
def test_scan_command(tmp_path, lm, embedded_path, embedded_watermarked, capsys):
    from opengemma.cli import main

    keys = embedded_watermarked["cfg"].save(tmp_path / "keys.json")
    marked = lm.tokenizer.decode(embedded_watermarked["ids"])
    (tmp_path / "mixed.txt").write_text(PLAIN + marked + " " + TAIL)
    (tmp_path / "plain.txt").write_text(PLAIN + TAIL)
    tok = ["-m", str(embedded_path)]
    capsys.readouterr()
    assert main(["watermark", "scan", str(tmp_path / "mixed.txt"), "-k", str(keys), "--json",
                 *tok]) == 0  # fmt: skip
    seg = json.loads(capsys.readouterr().out)
    assert seg["watermarked"] and seg["p_corrected"] < 1e-3, seg
    assert seg["char_start"] < len(PLAIN) + len(marked) and seg["char_end"] > len(PLAIN)
    assert main(["watermark", "scan", str(tmp_path / "plain.txt"), "-k", str(keys), *tok]) == 0
    assert capsys.readouterr().out.startswith("no watermarked segment: corrected p-value")
    bad = ["watermark", "scan", str(tmp_path / "plain.txt"), "-k", str(keys), "--alpha", "2"]
    assert main([*bad, *tok]) == 1
    assert "alpha" in capsys.readouterr().err
