"""The side-by-side comparison report: index.html, two SVG charts and results.json in a folder.

No plotting dependency: the charts are SVG written here. All model text is HTML-escaped. The
folder is written next to its final place and renamed into it, so a report is never half there.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from opengemma.atomic import atomic_path
from opengemma.eval import EvalError
from opengemma.eval.compare import Comparison

COLORS = {"a": "#1f77b4", "b": "#ff7f0e", "tie": "#9e9e9e"}
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; }
td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; }
tr.win-a td.ans-a, tr.win-b td.ans-b { background: #eef7ee; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def win_chart_svg(comparison: Comparison) -> str:
    """Horizontal bars: share of prompts won by A, tied, won by B, with 95% CI whiskers."""
    rates = comparison.win_rates()
    labels = {
        "a": f"A wins ({comparison.name_a})",
        "tie": "tie",
        "b": f"B wins ({comparison.name_b})",
    }
    width, left, bar_w, row_h = 640, 260, 340, 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{3 * row_h + 30}" '
        'font-family="sans-serif" font-size="13">'
    ]
    for row, key in enumerate(("a", "tie", "b")):
        rate, low, high = rates[key]
        y = 10 + row * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">'
            f"{html.escape(labels[key][:36])}</text>"
        )
        parts.append(
            f'<rect x="{left}" y="{y + 4}" width="{bar_w * rate:.1f}" height="18" '
            f'fill="{COLORS[key]}"/>'
        )
        x0, x1 = left + bar_w * low, left + bar_w * high
        parts.append(
            f'<line x1="{x0:.1f}" y1="{y + 13}" x2="{x1:.1f}" y2="{y + 13}" '
            'stroke="#000" stroke-width="1.5"/>'
        )
        parts.append(
            f'<text x="{left + bar_w + 8}" y="{y + 17}">{rate:.0%} [{low:.0%}, {high:.0%}]</text>'
        )
    axis_y = 10 + 3 * row_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + bar_w}" y2="{axis_y}" stroke="#888"/>'
    )
    for frac in (0, 0.5, 1):
        parts.append(
            f'<text x="{left + bar_w * frac:.0f}" y="{axis_y + 15}" '
            f'text-anchor="middle" fill="#555">{frac:.0%}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def scores_chart_svg(comparison: Comparison) -> str:
    """Per-prompt scores: a pair of bars (A, B) for each prompt, 0..1 on the y axis."""
    n = len(comparison.items)
    slot, height, base = max(12, min(40, 600 // max(n, 1))), 160, 170
    width = 50 + n * slot
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 25}" '
        'font-family="sans-serif" font-size="11">'
    ]
    parts.append(f'<line x1="40" y1="{base}" x2="{width}" y2="{base}" stroke="#888"/>')
    parts.append(f'<text x="34" y="{base}" text-anchor="end">0</text>')
    parts.append(f'<text x="34" y="{base - height + 4}" text-anchor="end">1</text>')
    for i, (sa, sb) in enumerate(zip(comparison.scores_a, comparison.scores_b, strict=True)):
        x = 45 + i * slot
        for j, (value, key) in enumerate(((sa, "a"), (sb, "b"))):
            h = height * max(0.0, min(1.0, value))
            parts.append(
                f'<rect x="{x + j * slot * 0.4:.1f}" y="{base - h:.1f}" '
                f'width="{slot * 0.38:.1f}" height="{h:.1f}" fill="{COLORS[key]}"/>'
            )
        parts.append(
            f'<text x="{x + slot * 0.4:.1f}" y="{base + 14}" text-anchor="middle">{i + 1}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _rows(c: Comparison) -> str:
    out = []
    for i, (it, a, b, sa, sb, w) in enumerate(
        zip(c.items, c.answers_a, c.answers_b, c.scores_a, c.scores_b, c.winners, strict=True), 1
    ):
        ref = "" if it.reference is None else f"<br><em>reference:</em> {html.escape(it.reference)}"
        out.append(
            f'<tr class="win-{w}"><td class="num">{i}</td>'
            f'<td class="text">{html.escape(it.prompt)}{ref}</td>'
            f'<td class="text ans-a">{html.escape(a)}</td>'
            f'<td class="text ans-b">{html.escape(b)}</td>'
            f'<td class="num">{sa:.3f}</td><td class="num">{sb:.3f}</td><td>{w.upper()}</td></tr>'
        )
    return "\n".join(out)


def render_html(c: Comparison) -> str:
    """The whole report page; the charts are the files chart.svg and scores.svg beside it."""
    rates = c.win_rates()
    summary = "".join(
        f"<tr><td>{label}</td><td class='num'>{rates[k][0]:.1%}</td>"
        f"<td class='num'>[{rates[k][1]:.1%}, {rates[k][2]:.1%}]</td></tr>"
        for k, label in (("a", "A wins"), ("tie", "tie"), ("b", "B wins"))
    )
    name_a, name_b = html.escape(c.name_a), html.escape(c.name_b)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opengemma compare: A vs B</title>
<style>{CSS}</style></head><body>
<h1>Side by side: A vs B</h1>
<p><b>A</b>: {name_a}<br><b>B</b>: {name_b}<br>scored by: {html.escape(c.method)};
{len(c.items)} prompts; a tie is a score difference of at most 0.05.</p>
<h2>Win rates (95% bootstrap intervals)</h2>
<table style="width:auto"><tr><th></th><th>share</th><th>95% CI</th></tr>{summary}</table>
<img src="chart.svg" alt="win rates of A and B with 95% confidence intervals">
<h2>Scores per prompt</h2>
<img src="scores.svg" alt="score of A (blue) and B (orange) per prompt">
<h2>Answers</h2>
<table><tr><th>#</th><th>prompt</th><th>A: {name_a}</th><th>B: {name_b}</th><th>score A</th>
<th>score B</th><th>winner</th></tr>
{_rows(c)}
</table></body></html>
"""


def results_json(c: Comparison) -> dict:
    rates = c.win_rates()
    return {
        "a": c.name_a,
        "b": c.name_b,
        "method": c.method,
        "win_rates": {k: {"rate": r, "ci95": [lo, hi]} for k, (r, lo, hi) in rates.items()},
        "prompts": [
            {
                "prompt": it.prompt,
                "reference": it.reference,
                "answer_a": a,
                "answer_b": b,
                "score_a": sa,
                "score_b": sb,
                "winner": w,
            }
            for it, a, b, sa, sb, w in zip(
                c.items, c.answers_a, c.answers_b, c.scores_a, c.scores_b, c.winners, strict=True
            )
        ],
    }


def write_report(c: Comparison, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write index.html, chart.svg, scores.svg, results.json into `out_dir`; returns index.html."""
    if not c.winners:
        raise EvalError("the comparison has no scores yet; score it before writing a report")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise EvalError(f"{out} exists and is not an empty folder; pass --overwrite or another -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "chart.svg").write_text(win_chart_svg(c), encoding="utf-8")
        (tmp / "scores.svg").write_text(scores_chart_svg(c), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results_json(c), indent=2), encoding="utf-8")
        (tmp / "index.html").write_text(render_html(c), encoding="utf-8")
    return out / "index.html"
