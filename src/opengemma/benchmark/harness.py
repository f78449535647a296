"""The parent side of `opengemma bench`: token ids, one child per engine and thread setting,
medians, ratios opengemma/peer, the memory-bandwidth bound and the perplexity comparison."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opengemma.benchmark.engines import ENGINES, BenchmarkError


def spawn(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run `job` in a fresh interpreter; adds `peak_rss_total` (bytes, the whole child's life)
    or returns {"error": ...} with the tail of the child's stderr."""
    with tempfile.TemporaryDirectory(prefix="opengemma-bench-") as tmp:
        job_path, out_path, log_path = (Path(tmp) / n for n in ("job.json", "out.json", "log"))
        job_path.write_text(json.dumps(job))
        with open(log_path, "wb") as log:
            cmd = [
                sys.executable,
                "-m",
                "opengemma.benchmark.engines",
                str(job_path),
                str(out_path),
            ]
            child = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            timer = threading.Timer(timeout_s, child.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(child.pid, 0)
            finally:
                timer.cancel()
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code == 0 and out_path.exists():
            result = json.loads(out_path.read_text())
            result["peak_rss_total"] = usage.ru_maxrss * 1024
            return result
        tail = log_path.read_text(errors="replace").strip().splitlines()[-6:]
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if code == -9:
            why += f" (timeout after {timeout_s:.0f} s?)"
        return {"error": f"{job['engine']} child failed: {why}: " + " | ".join(tail)}


def prepare_inputs(
    model: Path,
    text: str,
    prompt_tokens: int,
    batch: int,
    batch_tokens: int,
    window: int,
    max_windows: int,
) -> dict[str, Any]:
    """Token ids from opengemma's tokenizer, shared by every engine: the prompt (BOS + text,
    the text repeated if short), `batch` prompts of `batch_tokens` cut at different offsets,
    and perplexity windows (BOS + `window` - 1 tokens each, the last possibly shorter)."""
    from opengemma.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(model) if model.suffix == ".gguf" else None
    if tok is None:
        tok = Tokenizer.from_file(model / "tokenizer.model")
    body = tok.encode_plain(text)
    if len(body) < 8:
        raise BenchmarkError("the benchmark text is too short; give a few KB of prose")
    cycled = body * (max(prompt_tokens, batch_tokens) // len(body) + 2)  # >= body + a prompt
    bos = [tok.bos_id]
    step = max(1, len(body) // max(batch, 1))
    windows = [bos + body[i : i + window - 1] for i in range(0, len(body), window - 1)]
    windows = [w for w in windows if len(w) >= 16][: max_windows or None]
    return {
        "prompt_ids": bos + cycled[: prompt_tokens - 1],  # (prompt_tokens,)
        "batch_ids": [bos + cycled[i * step : i * step + batch_tokens - 1] for i in range(batch)],
        "windows": windows,
        "bos": tok.bos_id,
    }


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def summarize(engines: dict[str, dict[str, Any]], prompt_len: int) -> dict[str, dict[str, Any]]:
    """Medians per engine: load_s, prefill_tps, ttft_s, decode_tps, batch_tps, peak_rss."""
    table = {}
    for name, r in engines.items():
        if "error" in r:
            table[name] = {"error": r["error"]}
            continue
        ttft = _median(r.get("ttft_s"))
        table[name] = {
            "load_s": r["load_s"],
            "ttft_s": ttft,
            "prefill_tps": prompt_len / ttft if ttft else None,
            "decode_tps": _median(r.get("decode_tps")),
            "batch_tps": _median(r.get("batch_tps")),
            "peak_rss": r.get("peak_rss", r.get("peak_rss_total")),
            "threads": r["threads"],
        }
    return table


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Results of one engine over several rounds (child processes): lists concatenated,
    load time the median, peak RSS the largest."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[0]
    out = dict(ok[0])
    for key in ("ttft_s", "decode_tps", "batch_tps"):
        out[key] = [v for r in ok for v in r.get(key, [])]
    out["load_s"] = statistics.median(r["load_s"] for r in ok)
    for key in ("peak_rss", "peak_rss_total"):
        out[key] = max(r.get(key, 0) for r in ok)
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def analyse(setting: dict[str, Any], prompt_len: int, stored_bytes: int | None) -> None:
    """Add medians, ratios opengemma/peer, the bandwidth bounds and greedy agreement."""
    raw = setting["raw"]
    table = summarize(raw, prompt_len)
    ours = table.get("opengemma", {})
    gbs = setting["bandwidth"].get("gbs")
    held = raw.get("opengemma", {}).get("weight_bytes")
    setting["bound_tps"] = gbs * 1e9 / held if gbs and held else None
    setting["stored_bound_tps"] = gbs * 1e9 / stored_bytes if gbs and stored_bytes else None
    for name, row in table.items():
        # the in-memory bound is opengemma's own; every engine is held to the file's bytes
        for key in (
            ("bound_tps", "stored_bound_tps") if name == "opengemma" else ("stored_bound_tps",)
        ):
            if row.get("decode_tps") and setting[key]:
                row["frac_" + key.removesuffix("_tps")] = row["decode_tps"] / setting[key]
        if name != "opengemma" and "tokens" in raw[name] and "tokens" in raw.get("opengemma", {}):
            row["greedy_agree"] = _common_prefix(raw["opengemma"]["tokens"], raw[name]["tokens"])
    setting["engines"] = table
    setting["ratios"] = {
        peer: {
            k: ours[k] / row[k]
            for k in ("decode_tps", "prefill_tps", "batch_tps", "load_s", "peak_rss")
            if ours.get(k) and row.get(k)
        }
        for peer, row in table.items()
        if peer != "opengemma" and "error" not in row and ours and "error" not in ours
    }


def perplexities(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """exp(mean NLL) per engine, and its ratio to opengemma's."""
    out = {
        n: {"ppl": math.exp(r["nll"] / r["nll_tokens"]), "tokens": r["nll_tokens"]}
        for n, r in raw.items()
        if "nll" in r
    }
    if "opengemma" in out:
        for row in out.values():
            row["vs_opengemma"] = row["ppl"] / out["opengemma"]["ppl"]
    return out


@dataclass
class BenchOptions:
    """What to measure. threads: 0 = each engine's own default, else that count for all."""

    model: Path
    engines: list[str]
    threads: list[int] = field(default_factory=lambda: [0, 1])
    text: str = ""
    prompt_tokens: int = 512
    decode_tokens: int = 128
    repeats: int = 3
    rounds: int = 1
    batch: int = 8
    batch_tokens: int = 64
    speed: bool = True
    perplexity: bool = True
    ppl_window: int = 512
    ppl_max_windows: int = 0
    dtype: str | None = None  # opengemma's; None = load()'s default
    load_options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 1800.0
    bandwidth_mib: int = 1024  # size of the array summed to measure read bandwidth


def _machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("opengemma", "torch", "llama-cpp-python", "transformers"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _check(opts: BenchOptions) -> None:
    unknown = sorted(set(opts.engines) - set(ENGINES))
    if unknown or not opts.engines:
        raise BenchmarkError(f"unknown engines {unknown}; choose among {', '.join(ENGINES)}")
    if opts.prompt_tokens < 16 or opts.decode_tokens < 2 or opts.repeats < 1:
        raise BenchmarkError("need --prompt-tokens >= 16, --decode-tokens >= 2, --repeats >= 1")
    if opts.ppl_window < 17 or (opts.batch > 1 and opts.batch_tokens < 2):
        raise BenchmarkError("need --ppl-window >= 17 and --batch-tokens >= 2")
    if not opts.threads or min(opts.threads) < 0:
        raise BenchmarkError("--threads takes counts >= 1 or 'default'")


def _job_base(opts: BenchOptions, inputs: dict[str, Any]) -> dict[str, Any]:
    """The fields every child's job shares."""
    return {
        "model": str(opts.model),
        "dtype": opts.dtype,
        "load_options": opts.load_options,
        "prompt_ids": inputs["prompt_ids"],
        "decode_tokens": opts.decode_tokens,
        "repeats": opts.repeats,
        "bandwidth_mib": opts.bandwidth_mib,
        "speed": opts.speed,
        "ppl_window": opts.ppl_window,
        "batch_ids": inputs["batch_ids"] if opts.batch > 1 else [],
        "n_ctx": max(opts.prompt_tokens + opts.decode_tokens + 8, 1024),
    }


def _run_setting(opts: BenchOptions, base: dict[str, Any], threads: int, windows: list, log):
    """One thread setting: the bandwidth probe, then every engine once per round (engines
    interleaved); `windows` (perplexity) go to each engine's first round only."""
    label = threads or "default"
    bw: dict[str, Any] = {}
    if opts.speed:
        log(f"[threads={label}] memory bandwidth")
        bw = spawn({**base, "engine": "bandwidth", "threads": threads}, opts.timeout_s)
    rounds: dict[str, list[dict[str, Any]]] = {e: [] for e in opts.engines}
    for r in range(opts.rounds):
        for engine in opts.engines:
            log(f"[threads={label}] {engine} (round {r + 1}/{opts.rounds})")
            start = time.perf_counter()
            job = {**base, "engine": engine, "threads": threads}
            res = spawn({**job, "windows": windows if r == 0 else []}, opts.timeout_s)
            status = f"failed: {res['error']}" if "error" in res else "done"
            log(f"    {status} ({time.perf_counter() - start:.0f} s)")
            rounds[engine].append(res)
    raw = {e: _merge(rs) for e, rs in rounds.items()}
    return {"threads": label, "bandwidth": bw, "raw": raw}


def run_benchmark(opts: BenchOptions, log=lambda msg: None) -> dict[str, Any]:
    """Every engine in its own child, for each thread setting; returns the results document
    (JSON-ready): machine, options, per setting raw results + medians + ratios, perplexity."""
    _check(opts)
    inputs = prepare_inputs(
        opts.model,
        opts.text,
        opts.prompt_tokens,
        opts.batch,
        opts.batch_tokens,
        opts.ppl_window,
        opts.ppl_max_windows,
    )
    stored = _stored_bytes(opts.model)
    doc: dict[str, Any] = {
        "machine": _machine(),
        "model": str(opts.model),
        "stored_bytes": stored,
        "options": _options_json(opts),
        "settings": [],
        "perplexity": {},
    }
    base = _job_base(opts, inputs)
    windows = inputs["windows"] if opts.perplexity else []
    for i, threads in enumerate(opts.threads if opts.speed else opts.threads[:1]):
        setting = _run_setting(opts, base, threads, windows if i == 0 else [], log)
        if opts.speed:
            analyse(setting, opts.prompt_tokens, stored)
        doc["settings"].append(setting)
    if windows:
        doc["perplexity"] = perplexities(doc["settings"][0]["raw"])
    return doc


def _stored_bytes(model: Path) -> int | None:
    """Bytes of tensor data in a GGUF file (what llama.cpp reads per token); None otherwise."""
    if model.suffix != ".gguf":
        return None
    from opengemma.checkpoint.gguf_reader import GGUFFile

    gf = GGUFFile(model)
    try:
        return sum(t.nbytes for t in gf.tensors.values())
    finally:
        gf.close()


def _options_json(opts: BenchOptions) -> dict[str, Any]:
    out = {k: v for k, v in vars(opts).items() if k != "text"}
    out["model"] = str(opts.model)
    return out
