"""Watermark detection power, false positives and perplexity cost on the embedded model.

Generates N watermarked and N unwatermarked continuations (temperature 1, top-k 40, lengths
120-200 tokens) of varied prompts with opengemma's SynthID Text processor, then scores every text
with `opengemma.safety.watermark.detect` (the text is re-tokenized, as a user would). Reports
AUC, TPR and FPR at the default threshold, the same on truncated texts, and the perplexity of
both sets under the unmodified model (temperature 1, full vocabulary). Robustness (`robustness`):
AUC and TPR at 1% FPR after random token substitutions, insertions, deletions and a mix of the
three at 10/20/30% (applied to both classes), after splicing watermarked tokens into plain text
(25/50/75% of a text watermarked; the plain class stands in for human text), after decode and
re-encode, and the segment scan of a 100-token watermarked passage inside 1,000 plain tokens.

Rows of a batch decode together (one cache per row, weights read once per step); each row has its
own WatermarkProcessor and random generator. Stop tokens are masked out so that every sample
reaches its length.

    .venv/bin/python bench/watermark_detect.py --samples 100 --batch 50 --threads 1 \
        --out bench/out/wm.json
    .venv/bin/python bench/watermark_detect.py --samples 60 --length 200 --out wm200.json
    # or in parallel parts, then merged:
    for k in wm plain; do for i in 0 1; do .venv/bin/python bench/watermark_detect.py \
        --kind $k --part $i/2 --threads 1 --save /tmp/wm_$k$i.json & done; done; wait
    .venv/bin/python bench/watermark_detect.py --merge /tmp/wm_*.json --out bench/out/wm.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

STEMS = [
    "The history of the city of", "In the morning, the farmer", "My favourite recipe for",
    "The main causes of the war were", "Scientists have recently discovered", "Once upon a time,",
    "The best way to learn a language is", "Dear hiring manager,", "The weather in the mountains",
    "When I was a child, my grandmother", "The stock market today", "How to repair a bicycle:",
    "The theory of evolution explains", "Our team won the match because", "The new exhibit",
    "A guide to growing tomatoes:", "The committee announced that", "In the year 2050, cities will",
    "The old lighthouse keeper", "Photosynthesis is the process by which", "Travel tips for Japan:",
    "The novel begins with", "To install the software, first", "The river flows through",
    "Ancient Rome was", "The benefits of regular exercise include", "She opened the letter and",
    "The company's quarterly report shows", "Music has always been", "The recipe calls for",
    "During the storm, the sailors", "Artificial intelligence will", "The village festival",
    "Here is a short story about a dragon:", "The law of supply and demand", "Our solar system",
    "The detective looked at the clues and", "Coffee is grown in", "The first thing you notice",
    "A letter to my future self:",
]  # fmt: skip


TOP_K = 40


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@torch.inference_mode()
def generate_batch(lm, prompts, lengths, seeds, cfg, watermark: bool):
    """Token lists and their mean NLL (nats/token under the raw model) for one batch of rows.

    Per step: temperature 1 and top-k 40 for all rows at once (what the Sampler does, stop tokens
    masked out), then each row's own WatermarkProcessor on its full-vocabulary logits, and a draw
    over the 40 candidates with the row's own seeded generator."""
    from opengemma.generate import prefill
    from opengemma.safety.watermark import WatermarkProcessor

    model, tok = lm.model, lm.tokenizer
    stop_ids = sorted(lm.stop_ids)
    rows, last = [], []
    for prompt, seed in zip(prompts, seeds, strict=True):
        ids = tok.encode(prompt)
        cache = model.new_cache(len(ids) + max(lengths) + 1)
        last.append(prefill(model, ids, cache))
        proc = WatermarkProcessor(cfg) if watermark else None
        gen = torch.Generator().manual_seed(seed)
        rows.append(dict(ids=list(ids), n0=len(ids), cache=cache, proc=proc, gen=gen, nll=0.0))
    logits = torch.stack(last)  # (B, V)
    for step in range(max(lengths)):
        logp = torch.log_softmax(logits, dim=-1)  # (B, V)
        logits[:, stop_ids] = float("-inf")
        vals, idx = torch.topk(logits, TOP_K, dim=-1)  # (B, k)
        for b, r in enumerate(rows):
            cand = torch.full_like(logits[b], float("-inf")).index_copy_(0, idx[b], vals[b])
            if r["proc"] is not None:
                cand = r["proc"](torch.tensor(r["ids"]), cand)
            p = torch.softmax(cand[idx[b]], dim=-1)
            t = int(idx[b, torch.multinomial(p, 1, generator=r["gen"])])
            if step < lengths[b]:
                r["nll"] -= float(logp[b, t])
            r["ids"].append(t)
        step_ids = torch.tensor([[r["ids"][-1]] for r in rows])
        logits = model(step_ids, [r["cache"] for r in rows], last_only=True)[:, -1]
        if step % 40 == 39:
            print(f"  step {step + 1}/{max(lengths)}", flush=True)
    return [
        (r["ids"][r["n0"] : r["n0"] + n], r["nll"] / n) for r, n in zip(rows, lengths, strict=True)
    ]


def generate_part(lm, cfg, n: int, kind: str, part: tuple[int, int], batch: int,
                  length: int = 0) -> list:  # fmt: skip
    """Samples of `kind` ("wm" or "plain") for the part `i/k` of the n prompts."""
    i, k = part
    idx = [j for j in range(n) if j % k == i]
    prompts = [STEMS[j % len(STEMS)] for j in idx]
    lengths = [length or 120 + (j * 37) % 81 for j in idx]  # 120..200 tokens by default
    seeds = [1000 * (kind == "wm") + j for j in idx]
    out, start = [], time.perf_counter()
    for b in range(0, len(idx), batch):
        sl = slice(b, b + batch)
        out += generate_batch(lm, prompts[sl], lengths[sl], seeds[sl], cfg, kind == "wm")
        print(f"{kind} {i}/{k}: {len(out)}/{len(idx)} ({time.perf_counter() - start:.0f}s)",
              flush=True)  # fmt: skip
    return [{"index": j, "ids": ids, "nll": nll} for j, (ids, nll) in zip(idx, out, strict=True)]


def figures(lm, cfg, results: dict[str, list]) -> dict:
    """AUC, TPR/FPR at the default threshold (full texts and their first 100/50/25 tokens) and
    the perplexity of each class."""
    from opengemma.safety.watermark import DEFAULT_ALPHA, detect

    n = len(results["wm"])
    figs: dict = {"samples_per_class": n, "alpha": DEFAULT_ALPHA, "depth": cfg.depth,
                  "ngram_len": cfg.ngram_len}  # fmt: skip
    for cut in (None, 100, 50, 25):
        det = {}
        for kind in ("wm", "plain"):
            texts = [
                lm.tokenizer.decode(r["ids"][:cut] if cut else r["ids"]) for r in results[kind]
            ]
            det[kind] = [detect(t, cfg, lm.tokenizer) for t in texts]
        fig = {}
        for score in ("score", "mean"):
            pos = [getattr(d, score) for d in det["wm"]]
            neg = [getattr(d, score) for d in det["plain"]]
            fig[f"auc_{score}"] = round(auc(pos, neg), 4)
        fig["tpr"] = sum(d.watermarked for d in det["wm"]) / n
        fig["fpr"] = sum(d.watermarked for d in det["plain"]) / n
        fig["fpr_at_0.01"] = sum(d.p_value < 0.01 for d in det["plain"]) / n
        fig["fpr_at_0.05"] = sum(d.p_value < 0.05 for d in det["plain"]) / n
        fig["median_p_wm"] = sorted(d.p_value for d in det["wm"])[n // 2]
        fig["max_p_wm"] = max(d.p_value for d in det["wm"])
        fig["min_p_plain"] = min(d.p_value for d in det["plain"])
        fig["mean_score_wm"] = sum(d.score for d in det["wm"]) / n
        fig["mean_score_plain"] = sum(d.score for d in det["plain"]) / n
        figs[f"first_{cut}_tokens" if cut else "full_texts"] = fig
    for kind in ("wm", "plain"):
        tokens = sum(len(r["ids"]) for r in results[kind])
        nll = sum(r["nll"] * len(r["ids"]) for r in results[kind]) / tokens
        figs[f"perplexity_{kind}"] = round(math.exp(nll), 3)
    figs["perplexity_ratio"] = round(figs["perplexity_wm"] / figs["perplexity_plain"], 4)
    return figs


def tpr_at_fpr(pos: list[float], neg: list[float], fpr: float = 0.01) -> float:
    """Share of positives above the threshold that at most `fpr` of the negatives exceed."""
    ranked = sorted(neg, reverse=True)
    thr = ranked[min(len(ranked) - 1, int(fpr * len(ranked)))]
    return sum(p > thr for p in pos) / len(pos)


def edit(ids: list[int], rate: float, kind: str, pool: list[int], rng) -> list[int]:
    """Random token edits: each token substituted (`sub`), preceded by an inserted token
    (`ins`) or deleted (`del`) with probability `rate`; `mix` picks one of the three per
    edit. Inserted and substituted tokens are drawn from `pool` (tokens of the plain texts)."""
    out: list[int] = []
    for t in ids:
        if rng.random() >= rate:
            out.append(t)
            continue
        k = rng.choice(("sub", "ins", "del")) if kind == "mix" else kind
        if k == "sub":
            out.append(rng.choice(pool))
        elif k == "ins":
            out += [rng.choice(pool), t]
    return out


def _pair(pos_ids: list[list[int]], neg_ids: list[list[int]], cfg) -> dict:
    from opengemma.safety.watermark import detect_ids

    pos = [detect_ids(i, cfg) for i in pos_ids]
    neg = [detect_ids(i, cfg) for i in neg_ids]
    ps, ns = [d.score for d in pos], [d.score for d in neg]
    return {"auc": round(auc(ps, ns), 4), "tpr_at_1pct_fpr": round(tpr_at_fpr(ps, ns), 4),
            "tpr_p_below_0.01": sum(d.p_value < 0.01 for d in pos) / len(pos),
            "fpr_p_below_0.01": sum(d.p_value < 0.01 for d in neg) / len(neg)}  # fmt: skip


def robustness(lm, cfg, results: dict[str, list], seed: int = 0) -> dict:
    """Detection after random token edits (10/20/30%), after splicing watermarked tokens into
    plain text (25/50/75% watermarked), after decode/re-encode, and the segment scan of a
    100-token watermarked passage inside 1,000 plain tokens."""
    import random

    from opengemma.safety.watermark import detect_ids
    from opengemma.safety.watermark_scan import scan_ids

    rng = random.Random(seed)
    wm, plain = [r["ids"] for r in results["wm"]], [r["ids"] for r in results["plain"]]
    pool = [t for ids in plain for t in ids]
    out: dict = {"tokens_per_text": min(len(i) for i in wm + plain)}
    for kind in ("sub", "ins", "del", "mix"):
        for rate in (0.1, 0.2, 0.3):
            out[f"edit_{kind}_{int(rate * 100)}pct"] = _pair(
                [edit(i, rate, kind, pool, rng) for i in wm],
                [edit(i, rate, kind, pool, rng) for i in plain], cfg)  # fmt: skip
    for frac in (0.25, 0.5, 0.75):  # same length as the plain text, `frac` of it watermarked
        spliced = []
        for w, p in zip(wm, plain[1:] + plain[:1], strict=True):
            k = int(frac * len(p))
            at = rng.randrange(0, len(p) - k + 1)
            spliced.append(p[:at] + w[:k] + p[at + k :])
        out[f"splice_{int(frac * 100)}pct_watermarked"] = _pair(spliced, plain, cfg)
    tok = lm.tokenizer
    reenc = {k: [tok.encode_plain(tok.decode(i)) for i in v] for k, v in (("wm", wm), ("p", plain))}
    out["decode_reencode"] = _pair(reenc["wm"], reenc["p"], cfg)
    long_pos, long_neg = [], []
    for j, w in enumerate(wm):
        base = [t for k in range(5) for t in plain[(j + k) % len(plain)]][:1000]
        at = rng.randrange(0, 900)
        long_pos.append(base[:at] + w[:100] + base[at + 100 :])
        long_neg.append([t for k in range(5) for t in plain[(j + 3 * k + 1) % len(plain)]][:1000])
    pos = [scan_ids(i, cfg) for i in long_pos]
    neg = [scan_ids(i, cfg) for i in long_neg]
    out["scan_100_in_1000"] = {
        "found_p_below_0.001": sum(s.p_corrected < 1e-3 for s in pos) / len(pos),
        "median_p_corrected": sorted(s.p_corrected for s in pos)[len(pos) // 2],
        "fpr_p_below_0.01": sum(s.p_corrected < 0.01 for s in neg) / len(neg),
        "fpr_p_below_0.001": sum(s.p_corrected < 1e-3 for s in neg) / len(neg),
        "whole_text_detect_p_below_0.001": sum(
            detect_ids(i, cfg).p_value < 1e-3 for i in long_pos
        ) / len(long_pos),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100, help="texts per class")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--length", type=int, default=0, help="tokens per text (0 = 120..200)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--kind", choices=["wm", "plain", "both"], default="both")
    ap.add_argument("--part", default="0/1", help="i/k: generate only prompts j with j %% k == i")
    ap.add_argument("--save", type=Path, help="write the generated samples (JSON) here")
    ap.add_argument("--merge", type=Path, nargs="*", help="score samples saved by --save runs")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import opengemma
    from opengemma.safety.watermark import WatermarkConfig

    lm = opengemma.load()
    cfg = WatermarkConfig(keys=tuple(range(654, 654 + 30 * 37, 37)))  # fixed, depth 30
    results: dict[str, list] = {"wm": [], "plain": []}
    if args.merge:
        for path in args.merge:
            for kind, rows in json.loads(path.read_text()).items():
                results[kind] += rows
    else:
        part = tuple(int(x) for x in args.part.split("/"))
        for kind in ("wm", "plain") if args.kind == "both" else (args.kind,):
            results[kind] = generate_part(lm, cfg, args.samples, kind, part, args.batch,
                                          args.length)  # fmt: skip
        if args.save:
            args.save.write_text(json.dumps(results))
    if not results["wm"] or not results["plain"]:
        return
    figs = figures(lm, cfg, results)
    figs["robustness"] = robustness(lm, cfg, results)
    print(json.dumps(figs, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figs, indent=2) + "\n")


if __name__ == "__main__":
    main()
