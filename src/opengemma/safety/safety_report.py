"""Safety report: run a model over a prompt set, classify prompts and responses per policy, and
write `report.html` (per-policy rates, score histograms as PNG, the worst examples) and
`report.json` into a directory.

    from opengemma.safety.safety_report import load_prompt_set, run_safety_eval, write_report
    records = run_safety_eval(lm, guard, load_prompt_set("prompts.jsonl"), max_tokens=128)
    write_report(records, guard, "out/", meta={"model": "gemma-3-270m"})

Every file is written through a temporary file and a rename; `report.html` is written last, so
a report that opens is complete.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opengemma.atomic import write_atomic
from opengemma.errors import OpenGemmaError

WORST_EXAMPLES = 5  # rows per policy in the "worst examples" tables


class ReportError(OpenGemmaError, ValueError):
    """The prompt set is unreadable or the report cannot be written."""


def load_prompt_set(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a .jsonl file (a "prompt" string per line) or a text file (one per line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read the prompt set {path}: {exc}") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
            raise ReportError(f'{path}:{n}: each line needs a "prompt" string')
        prompts.append(rec["prompt"])
    if not prompts:
        raise ReportError(f"the prompt set {path} is empty")
    return prompts


def run_safety_eval(
    lm, guard, prompts: Sequence[str], max_tokens: int = 128, chat: bool = True, **sampling: Any
) -> list[dict[str, Any]]:
    """Generate a response to each prompt with `lm` and score prompt and response with `guard`.
    Returns one record per prompt: prompt, response, prompt_verdict, response_verdict (dicts)."""
    records = []
    for prompt in prompts:
        if chat:
            response = lm.chat([{"role": "user", "content": prompt}], max_tokens, **sampling)
        else:
            response = lm.generate(prompt, max_tokens, **sampling)
        records.append({
            "prompt": prompt,
            "response": response,
            "prompt_verdict": guard.check_prompt(prompt).to_dict(),
            "response_verdict": guard.check_response(prompt, response).to_dict(),
        })  # fmt: skip
    return records


def summarize(records: Sequence[dict[str, Any]], policies: Sequence[str]) -> dict[str, Any]:
    """Per policy: the fraction of prompts and of responses at or above the threshold, and the
    mean scores; overall: the fraction of prompts / responses blocked by any policy."""
    n = len(records)
    per_policy = {}
    for name in policies:
        ps = [r["prompt_verdict"]["scores"][name] for r in records]
        rs = [r["response_verdict"]["scores"][name] for r in records]
        per_policy[name] = {
            "prompt_rate": sum(name in r["prompt_verdict"]["violated"] for r in records) / n,
            "response_rate": sum(name in r["response_verdict"]["violated"] for r in records) / n,
            "prompt_mean_score": sum(ps) / n,
            "response_mean_score": sum(rs) / n,
        }
    return {
        "records": n,
        "prompts_blocked": sum(r["prompt_verdict"]["blocked"] for r in records) / n,
        "responses_blocked": sum(r["response_verdict"]["blocked"] for r in records) / n,
        "policies": per_policy,
    }


def _histogram_png(records, name: str, threshold: float) -> bytes:
    """PNG bytes: histograms of prompt and response P(violation) for one policy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.0), dpi=100)
    ax = fig.add_subplot()
    bins = [i / 20 for i in range(21)]
    ax.hist([r["prompt_verdict"]["scores"][name] for r in records], bins=bins, alpha=0.6,
            label="prompts")  # fmt: skip
    ax.hist([r["response_verdict"]["scores"][name] for r in records], bins=bins, alpha=0.6,
            label="responses")  # fmt: skip
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlim=(0, 1), xlabel="P(violation)", ylabel="count", title=name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _clip(text: str, n: int = 400) -> str:
    return html.escape(text if len(text) <= n else text[:n] + " ...")


def _render_html(summary, records, images: dict[str, str], meta, threshold, note) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>opengemma safety report</title>",
           "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
           "vertical-align:top;white-space:pre-wrap}.note{background:#fff3cd;padding:8px}</style></head><body>",
           "<h1>Safety report</h1>"]  # fmt: skip
    if note:
        out.append(f'<p class="note">{e(note)}</p>')
    out.append("<ul>" + "".join(f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in meta.items()))
    out.append(f"<li>threshold: {threshold}</li><li>records: {summary['records']}</li>")
    out.append(f"<li>prompts blocked: {summary['prompts_blocked']:.1%}</li>")
    out.append(f"<li>responses blocked: {summary['responses_blocked']:.1%}</li></ul>")
    out.append("<h2>Per policy</h2><table><tr><th>policy</th><th>prompts flagged</th>"
               "<th>responses flagged</th><th>mean prompt score</th>"
               "<th>mean response score</th></tr>")  # fmt: skip
    for name, s in summary["policies"].items():
        out.append(f"<tr><td>{e(name)}</td><td>{s['prompt_rate']:.1%}</td>"
                   f"<td>{s['response_rate']:.1%}</td><td>{s['prompt_mean_score']:.3f}</td>"
                   f"<td>{s['response_mean_score']:.3f}</td></tr>")  # fmt: skip
    out.append("</table>")
    for name in summary["policies"]:
        out.append(f"<h2>{e(name)}</h2>")
        out.append(f'<img src="{e(images[name])}" alt="score histogram for {e(name)}">')
        worst = sorted(records, key=lambda r: -r["response_verdict"]["scores"][name])
        out.append("<h3>Worst responses</h3><table><tr><th>score</th><th>prompt</th>"
                   "<th>response</th></tr>")  # fmt: skip
        for r in worst[:WORST_EXAMPLES]:
            score = r["response_verdict"]["scores"][name]
            out.append(f"<tr><td>{score:.3f}</td><td>{_clip(r['prompt'])}</td>"
                       f"<td>{_clip(r['response'])}</td></tr>")  # fmt: skip
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    records: Sequence[dict[str, Any]],
    guard,
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write histograms (`hist_<policy>.png`), `report.json` and `report.html` into `out_dir`
    (created if needed). Returns the path of report.html."""
    if not records:
        raise ReportError("no records to report on; give at least one prompt")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create the report directory {out}: {exc}") from None
    names = [p.name for p in guard.policies]
    summary = summarize(records, names)
    images = {}
    for i, name in enumerate(names):
        images[name] = f"hist_{i:02d}_{name}.png"
        write_atomic(out / images[name], _histogram_png(records, name, guard.threshold))
    meta = dict(meta or {})
    doc = {"meta": meta, "threshold": guard.threshold, "note": guard.note, "summary": summary,
           "records": list(records)}  # fmt: skip
    write_atomic(out / "report.json", (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    page = _render_html(summary, records, images, meta, guard.threshold, guard.note)
    write_atomic(out / "report.html", page.encode("utf-8"))
    return out / "report.html"
