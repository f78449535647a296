"""The results of `opengemma bench` as tables: rich on the terminal, Markdown, a PNG chart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from opengemma.atomic import atomic_path, write_atomic
from opengemma.benchmark.engines import BenchmarkError


def _f(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _setting_title(s: dict[str, Any], stored: int | None) -> str:
    bw = s["bandwidth"]
    if "error" in bw:
        return f"threads={s['threads']} (bandwidth not measured: {bw['error']})"
    held = s["raw"].get("opengemma", {}).get("weight_bytes")
    path = s["raw"].get("opengemma", {}).get("decode_path")
    return (
        f"threads={s['threads']}: read bandwidth {bw['gbs']:.1f} GB/s (sum {bw['sum_gbs']:.1f},"
        f" matvec {bw['matvec_gbs']:.1f}); decode bound {_f(s['bound_tps'], '.0f')} tok/s "
        f"for opengemma's {_f(held, '.0f', 1e-6)} MB in memory, "
        f"{_f(s['stored_bound_tps'], '.0f')} tok/s for the file's "
        f"{_f(stored, '.0f', 1e-6)} MB" + (f"; opengemma decodes on the {path}" if path else "")
    )


def report_tables(doc: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report as (title, header, rows) tables: speed per thread setting, ratios, perplexity."""
    out = []
    batch = doc["options"]["batch"]
    head = [
        "engine",
        "threads",
        "load s",
        "prefill tok/s",
        "TTFT s",
        "decode tok/s",
        f"batch-{batch} tok/s",
        "peak RSS GB",
        "% of bound",
        "% of stored bound",
        "greedy agree",
    ]
    ratios = []
    for s in doc["settings"]:
        if "engines" not in s:
            continue
        rows = []
        for name, r in s["engines"].items():
            if "error" in r:
                rows.append([name, "", r["error"][:120]] + [""] * (len(head) - 3))
                continue
            th = r["threads"]
            rows.append(
                [
                    name,
                    f"{th['decode']}/{th['batch']}",
                    _f(r["load_s"], ".2f"),
                    _f(r["prefill_tps"], ".0f"),
                    _f(r["ttft_s"], ".3f"),
                    _f(r["decode_tps"], ".1f"),
                    _f(r["batch_tps"], ".1f"),
                    _f(r["peak_rss"], ".2f", 1e-9),
                    _f(r.get("frac_bound"), ".0%"),
                    _f(r.get("frac_stored_bound"), ".0%"),
                    str(r.get("greedy_agree", "")),
                ]
            )
        out.append((_setting_title(s, doc["stored_bytes"]), head, rows))
        for peer, q in s["ratios"].items():
            ratios.append(
                [str(s["threads"]), peer]
                + [
                    _f(q.get(k), ".2f")
                    for k in ("decode_tps", "prefill_tps", "batch_tps", "load_s", "peak_rss")
                ]
            )
    if ratios:
        title = "opengemma / peer (tok/s: > 1 is faster; load and RSS: < 1 is better)"
        out.append(
            (
                title,
                ["threads", "peer", "decode", "prefill", f"batch-{batch}", "load", "peak RSS"],
                ratios,
            )
        )
    if doc["perplexity"]:
        rows = [
            [n, f"{p['ppl']:.4f}", str(p["tokens"]), _f(p.get("vs_opengemma"), ".4f")]
            for n, p in doc["perplexity"].items()
        ]
        window = doc["options"]["ppl_window"]
        out.append(
            (
                f"perplexity on the same {window}-token windows",
                ["engine", "perplexity", "tokens", "vs opengemma"],
                rows,
            )
        )
    return out


def to_markdown(doc: dict[str, Any]) -> str:
    parts = []
    for title, head, rows in report_tables(doc):
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(r) + " |" for r in rows
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def print_rich(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for title, head, rows in report_tables(doc):
        table = Table(*head, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def save_plot(doc: dict[str, Any], path: Path) -> None:
    """Bar chart of prefill and decode tok/s per engine and thread setting (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchmarkError("--plot needs matplotlib; pip install matplotlib") from None
    settings = doc["settings"]
    engines = list(dict.fromkeys(n for s in settings for n in s.get("engines", {})))
    width = 0.8 / max(1, len(engines))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    keys = ("prefill_tps", "decode_tps", "batch_tps")
    titles = ("prefill tok/s", "decode tok/s", f"batch-{doc['options'].get('batch', '')} tok/s")
    for ax, key, title in zip(axes, keys, titles, strict=True):
        # one group of bars per thread setting, one colour per engine
        for i, name in enumerate(engines):
            values = [(s.get("engines", {}).get(name) or {}).get(key) for s in settings]
            xs = [g + (i - (len(engines) - 1) / 2) * width for g in range(len(settings))]
            bars = ax.bar(xs, [v or 0.0 for v in values], width, label=name)
            labels = [f"{v:.0f}" if v else "n/a" for v in values]  # n/a: not measured
            ax.bar_label(bars, labels=labels, fontsize=7)
        ax.set_xticks(range(len(settings)), [f"threads: {s['threads']}" for s in settings])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)


def save_outputs(
    doc: dict[str, Any], json_path: Path | None, md_path: Path | None, png_path: Path | None
) -> None:
    """Write the results as JSON, Markdown and a PNG chart, each only when a path is given;
    every file appears whole or not at all (temporary file, then rename)."""
    from opengemma.benchmark.engines import write_json

    if json_path:
        write_json(json_path, doc)
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(md_path, to_markdown(doc))
    if png_path:
        save_plot(doc, png_path)
