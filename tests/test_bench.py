"""`opengemma bench` on the embedded model, opengemma alone, at tiny sizes.

Peers (llama.cpp, transformers) are not needed here; timings are never asserted. What is
checked: the harness feeds the engine the token ids it claims, the greedy tokens and the
perplexity it reports agree with an independent in-process computation, the derived figures
(prefill rate, bound, fractions) follow from the raw ones, and the outputs are well formed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opengemma.benchmark import DEFAULT_TEXT
from opengemma.benchmark.harness import prepare_inputs, spawn
from opengemma.build import weight_bytes
from opengemma.cli import main

PROMPT, DECODE, WINDOW = 24, 4, 32


def test_weight_bytes_counts_each_storage_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 8)
            self.out = nn.Linear(8, 100)
            self.out.weight = self.embed.weight  # tied: one storage
            self.register_buffer("table", torch.zeros(10))

    model = Tied()
    assert weight_bytes(model) == (100 * 8 + 100 + 10) * 4
    assert weight_bytes(model.to(torch.bfloat16)) == (100 * 8 + 100 + 10) * 2


def test_every_engine_gets_the_same_well_formed_ids(embedded_path):
    from opengemma.tokenizer import Tokenizer

    text = DEFAULT_TEXT.read_text(encoding="utf-8")
    tok = Tokenizer.from_gguf(embedded_path)
    body, bos = tok.encode_plain(text), tok.bos_id
    assert len(body) > 1024  # enough prose for a 512-token prompt without repeating it
    inputs = prepare_inputs(embedded_path, text, 512, 8, 64, 512, 0)
    assert inputs["prompt_ids"] == [bos] + body[:511]
    batch = inputs["batch_ids"]
    assert [len(p) for p in batch] == [64] * 8 and all(p[0] == bos for p in batch)
    assert len({tuple(p) for p in batch}) == 8  # cut at different offsets
    windows = inputs["windows"]
    assert all(w[0] == bos and 16 <= len(w) <= 512 for w in windows)
    scored = [t for w in windows for t in w[1:]]
    assert scored == body[: len(scored)] and len(scored) > len(body) - 16
    short = prepare_inputs(
        embedded_path,
        "One two three four five six seven eight nine ten eleven twelve.",
        40,
        2,
        30,
        64,
        0,
    )
    assert len(short["prompt_ids"]) == 40 and [len(p) for p in short["batch_ids"]] == [30, 30]


def test_failed_child_is_reported_not_raised():
    result = spawn({"engine": "no-such-engine"}, timeout_s=60)
    assert "exit status 1" in result["error"] and "KeyError" in result["error"]


def test_bad_options_are_one_line_errors(capsys, tmp_path):
    assert main(["bench", "--engines", "vllm", "--threads", "1"]) == 1
    assert "unknown engines ['vllm']" in capsys.readouterr().err
    assert main(["bench", "--text", str(tmp_path / "missing.txt")]) == 1
    assert "pass --text FILE" in capsys.readouterr().err
    assert main(["bench", "--threads", "two"]) == 2  # a usage error
    assert "--threads takes a count" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--engines", "opengemma,opengemma-f32", "--threads", "1",
            "--prompt-tokens", str(PROMPT),
            "--decode-tokens", str(DECODE), "--repeats", "2", "--batch", "2", "--batch-tokens",
            "8", "--ppl-window", str(WINDOW), "--ppl-max-windows", "2", "--bandwidth-mib", "32",
            "--json", str(out / "r.json"), "--markdown", str(out / "r.md")]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "r.json").read_text()), (out / "r.md").read_text()


@pytest.mark.slow
def test_greedy_tokens_and_figures(bench_run, lm):
    doc, _ = bench_run
    setting = doc["settings"][0]
    # opengemma-f32 is the exact float32 path: its greedy tokens are the reference model's
    raw, row = setting["raw"]["opengemma-f32"], setting["engines"]["opengemma-f32"]
    body = lm.tokenizer.encode_plain(DEFAULT_TEXT.read_text(encoding="utf-8"))
    prompt = [lm.tokenizer.bos_id] + body[: PROMPT - 1]
    expected = []
    ids = torch.tensor([prompt])
    for _ in range(DECODE + 1):  # the prefill's token, then DECODE steps
        token = int(lm.model(ids)[0, -1].argmax())
        expected.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert raw["tokens"] == expected
    assert len(raw["decode_tps"]) == len(raw["ttft_s"]) == len(raw["batch_tps"]) == 2
    assert row["prefill_tps"] == pytest.approx(PROMPT / row["ttft_s"])
    held = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    assert raw["weight_bytes"] == held
    assert held < raw["peak_rss"] <= raw["peak_rss_total"]  # the float32 weights are resident
    # the default path holds Q8_0 blocks (34 bytes per 32 weights), and the bound uses them
    fast, fast_row = setting["raw"]["opengemma"], setting["engines"]["opengemma"]
    assert fast["weight_bytes"] < 0.3 * held < fast["peak_rss"]
    assert len(fast["tokens"]) == DECODE + 1 and fast["tokens"][0] == expected[0]
    gbs = setting["bandwidth"]["gbs"]
    assert setting["bound_tps"] == pytest.approx(gbs * 1e9 / fast["weight_bytes"])
    assert setting["stored_bound_tps"] == pytest.approx(gbs * 1e9 / doc["stored_bytes"])
    assert fast_row["frac_bound"] == pytest.approx(fast_row["decode_tps"] / setting["bound_tps"])
    assert setting["ratios"]["opengemma-f32"]["decode_tps"] > 0


@pytest.mark.slow
def test_perplexity_matches_an_independent_computation(bench_run, lm):
    doc, markdown = bench_run
    body = lm.tokenizer.encode_plain(DEFAULT_TEXT.read_text(encoding="utf-8"))
    nll, count = 0.0, 0
    for start in (0, WINDOW - 1):
        ids = [lm.tokenizer.bos_id] + body[start : start + WINDOW - 1]
        logp = F.log_softmax(lm.logits(ids).double(), dim=-1)
        nll -= float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
        count += len(ids) - 1
    reported = doc["perplexity"]["opengemma-f32"]
    assert reported["tokens"] == count == 2 * (WINDOW - 1)
    assert reported["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    fast = doc["perplexity"]["opengemma"]  # the default Q8_0 path: within 3% of float32
    assert fast["tokens"] == count and abs(fast["ppl"] / reported["ppl"] - 1) < 0.03
    assert reported["vs_opengemma"] == pytest.approx(reported["ppl"] / fast["ppl"])
    speed_md, ppl_md = markdown.split("perplexity on the same")
    assert "| opengemma | 1/1 |" in speed_md and "| opengemma | " in ppl_md


def test_chart_groups_engines_by_thread_setting(tmp_path, monkeypatch):
    """The PNG chart of a saved document: one bar per engine and thread setting whose height is
    the document's figure (engines without a batch figure marked n/a), and the saved pixels
    show each bar in its engine's colour where the figure puts it."""
    from pathlib import Path

    import matplotlib.image
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    from opengemma.benchmark.results import save_plot

    saved = Path(__file__).parents[1] / "docs" / "bench-results" / "bench-2core.json"
    doc = json.loads(saved.read_text())
    figures = []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        figures.append((fig, kwargs.get("dpi") or fig.dpi))
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "chart.png"
    save_plot(doc, out)
    ((fig, dpi),) = figures
    png = matplotlib.image.imread(out)  # (height, width, RGBA) floats in [0, 1]
    width_in, height_in = fig.get_size_inches()
    assert png.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    engines = doc["options"]["engines"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == engines
    checked = 0
    for ax, key in zip(fig.axes, ("prefill_tps", "decode_tps", "batch_tps"), strict=True):
        bars = [p for c in ax.containers for p in c]  # one container per engine, in order
        assert len(bars) == len(engines) * len(doc["settings"])
        labels = [t.get_text() for t in ax.texts]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"threads: {s['threads']}" for s in doc["settings"]]
        for i, name in enumerate(engines):
            for g, setting in enumerate(doc["settings"]):
                value = setting["engines"][name][key]
                bar = bars[i * len(doc["settings"]) + g]
                assert bar.get_height() == pytest.approx(value or 0.0), (key, name)
                assert abs(bar.get_x() + bar.get_width() / 2 - g) < 0.4  # in its setting's group
                assert labels[i * len(doc["settings"]) + g] == (f"{value:.0f}" if value else "n/a")
                if not value:
                    continue
                # the bar's middle, in the saved image's pixels (rows count from the top)
                x, y = ax.transData.transform((bar.get_x() + bar.get_width() / 2, value / 2))
                col, row = int(x * dpi / fig.dpi), png.shape[0] - 1 - int(y * dpi / fig.dpi)
                assert png[row, col, :3] == pytest.approx(to_rgb(bar.get_facecolor()), abs=0.02)
                assert to_rgb(bar.get_facecolor()) == to_rgb(f"C{i}")  # one colour per engine
                checked += 1
    assert checked == sum(1 for s in doc["settings"] for e in s["engines"].values()
                          for k in ("prefill_tps", "decode_tps", "batch_tps") if e[k])  # fmt: skip
    assert not list(tmp_path.glob(".*"))  # no temporary file left
