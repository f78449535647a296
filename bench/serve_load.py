"""Load benchmark for OpenAI-compatible servers: Poisson arrivals, streamed completions.

Starts `opengemma serve` (and, with --llama-cpp, llama.cpp's server on the same GGUF) on
127.0.0.1, sends requests at each rate in --rates (requests/s, exponential gaps), bounded by
--requests per rate and --max-seconds, and prints per-rate TTFT, TPOT, ITL and end-to-end latency
(p50/p90/p99, seconds), throughput and error / truncation counts, as a table and JSON.

    .venv/bin/python bench/serve_load.py --rates 0.25,0.5,1 --requests 16 --llama-cpp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

WORDS = (
    "the model reads a prompt and writes a continuation one token at a time while the "
    "server keeps many requests in flight and measures how long each one waits"
).split()


def prompts(count: int, seed: int) -> list[str]:
    """Prompts of roughly 50-300 tokens (words of plain English)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 240))) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(cmd: list[str], url: str, ready_path: str, log: Path):
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 300
            while time.monotonic() < end:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited; see {log}")
                try:
                    if httpx.get(url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(60)


async def one(http: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    stamps, finish, status = [], None, None
    try:
        async with http.stream("POST", url + "/v1/completions", json=body) as r:
            status = r.status_code
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choice = json.loads(line[6:])["choices"][0]
                stamps.append(time.perf_counter())
                finish = choice.get("finish_reason") or finish
    except httpx.HTTPError as exc:
        return {"ok": False, "status": type(exc).__name__}
    return {
        "ok": status == 200 and finish is not None,
        "status": status,
        "finish": finish,
        "start": start,
        "stamps": stamps,
    }


async def run_rate(
    url: str,
    model: str,
    rate: float,
    texts: list[str],
    max_tokens: int,
    max_seconds: float,
    seed: int,
) -> list[dict]:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=600) as http:
        tasks, begin = [], time.perf_counter()
        for text in texts:
            if time.perf_counter() - begin > max_seconds:
                break
            tasks.append(asyncio.create_task(one(http, url, model, text, max_tokens)))
            await asyncio.sleep(rng.expovariate(rate))
        return await asyncio.gather(*tasks)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if r["ok"]]
    ttft = [r["stamps"][0] - r["start"] for r in ok if r["stamps"]]
    e2e = [r["stamps"][-1] - r["start"] for r in ok if r["stamps"]]
    tpot = [
        (r["stamps"][-1] - r["stamps"][0]) / (len(r["stamps"]) - 1)
        for r in ok
        if len(r["stamps"]) > 1
    ]
    itl = [b - a for r in ok for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)]
    tokens = sum(len(r["stamps"]) for r in ok)
    out = {
        "sent": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "truncated": sum(1 for r in results if r.get("status") == 200 and not r["ok"]),
        "req_per_s": len(ok) / wall,
        "tok_per_s": tokens / wall,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}"] = pct(values, q)
    return out


def bench(url: str, model: str, args) -> list[dict]:
    rows = []
    for i, rate in enumerate(args.rates):
        texts = prompts(args.requests, args.seed + i)
        start = time.perf_counter()
        results = asyncio.run(
            run_rate(url, model, rate, texts, args.max_tokens, args.max_seconds, args.seed + i)
        )
        row = {"rate": rate, **summarize(results, time.perf_counter() - start)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(name: str, rows: list[dict]) -> str:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    lines = [
        f"## {name}",
        "| rate | ok/sent | err | trunc | req/s | tok/s | TTFT p50/p90/p99 | "
        "TPOT p50/p90/p99 | ITL p50/p99 | e2e p50/p90/p99 |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['rate']} | {r['ok']}/{r['sent']} | {r['errors']} | {r['truncated']} | "
            f"{f(r['req_per_s'])} | {f(r['tok_per_s'])} | "
            f"{f(r['ttft_p50'])}/{f(r['ttft_p90'])}/{f(r['ttft_p99'])} | "
            f"{f(r['tpot_p50'])}/{f(r['tpot_p90'])}/{f(r['tpot_p99'])} | "
            f"{f(r['itl_p50'])}/{f(r['itl_p99'])} | "
            f"{f(r['e2e_p50'])}/{f(r['e2e_p90'])}/{f(r['e2e_p99'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.25,0.5,1", help="requests/s, comma-separated")
    parser.add_argument("--requests", type=int, default=16, help="requests per rate, at most")
    parser.add_argument("--max-seconds", type=float, default=120, help="arrival window per rate")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp's server")
    parser.add_argument("--out", type=Path, default=None, help="write all rows as JSON here")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    from opengemma.api import default_model_path

    gguf = str(default_model_path())
    results = {}
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "opengemma.cli",
        "serve",
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--max-queue",
        "256",
    ]
    with launched(cmd, f"http://127.0.0.1:{port}", "/ready", Path("/tmp/serve_load_og.log")) as u:
        results["opengemma"] = bench(u, "gemma-3-270m", args)
    if args.llama_cpp:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--port",
            str(port),
            "--interrupt_requests",
            "False",
            "--logits_all",
            "False",
            "--n_ctx",
            "4096",
        ]
        log = Path("/tmp/serve_load_llama.log")
        with launched(cmd, f"http://127.0.0.1:{port}", "/v1/models", log) as u:
            results["llama.cpp"] = bench(u, "gemma", args)
    for name, rows in results.items():
        print(table(name, rows))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
