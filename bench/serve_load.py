"""Load benchmark for OpenAI-compatible servers: Poisson arrivals, streamed completions.

Starts `opengemma serve` (and, with --llama-cpp, llama.cpp's server on the same GGUF, with the
same CPU thread count) on 127.0.0.1, then for each rate in --rates (requests/s, exponential gaps)
sends the same prompts on the same arrival schedule to each server in turn, bounded by --requests
per rate, --max-seconds of arrivals and --drain-seconds of waiting afterwards. It prints per-rate
TTFT, TPOT, ITL and end-to-end latency (p50/p90/p99, seconds), throughput, errors and truncations
(HTTP 200 whose stream never carried a `finish_reason`), with the 1-minute load average, as a
Markdown table and JSON lines.

    .venv/bin/python bench/serve_load.py --rates 0.1,0.3,1 --requests 16 --llama-cpp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

MODEL_ID = "gemma-3-270m"
WORDS = (
    "the model reads a prompt and writes a continuation one token at a time while the "
    "server keeps many requests in flight and measures how long each one waits"
).split()


def prompts(count: int, seed: int) -> list[str]:
    """Prompts of about 50-300 tokens (40-240 words of plain English, plus BOS)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 240))) for _ in range(count)]


def gaps(count: int, rate: float, seed: int) -> list[float]:
    """Exponential inter-arrival gaps (seconds) of a Poisson process at `rate` requests/s."""
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(cmd: list[str], url: str, ready_path: str, log: Path, env: dict) -> Iterator[str]:
    """Run `cmd` (a server) until the block exits; yield `url` once `ready_path` answers 200."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            end = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[2]} exited with {proc.returncode}; see {log}")
                if time.monotonic() > end:
                    raise RuntimeError(f"{cmd[2]} not ready after 300 s; see {log}")
                try:
                    if httpx.get(url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def one(http: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> dict:
    """Stream one greedy completion; record the send time and the arrival time of each text chunk.

    Each streamed chunk with text is one generated token on both servers (a token whose bytes
    do not yet form a character is held back and sent with the next one).
    """
    body = {
        "model": MODEL_ID,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    stamps, texts, finish, status = [], [], None, None
    try:
        async with http.stream("POST", url + "/v1/completions", json=body) as r:
            status = r.status_code
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return {"status": f"stream error: {data['error'].get('message')}"}
                choice = data["choices"][0]
                if choice.get("text"):
                    stamps.append(time.perf_counter())
                    texts.append(choice["text"])
                finish = choice.get("finish_reason") or finish
    except httpx.HTTPError as exc:
        return {"status": type(exc).__name__}
    return {"status": status, "finish": finish, "start": start, "stamps": stamps,
            "text": "".join(texts)}  # fmt: skip


async def run_rate(url: str, texts: list[str], waits: list[float], args) -> list[dict]:
    """Send `texts` with the gaps `waits` (seconds) until --max-seconds; wait --drain-seconds."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10)) as http:
        tasks, begin = [], time.perf_counter()
        for i, text in enumerate(texts):
            tasks.append(asyncio.create_task(one(http, url, text, args.max_tokens)))
            if i + 1 == len(texts) or time.perf_counter() - begin + waits[i] > args.max_seconds:
                break
            await asyncio.sleep(waits[i])
        done, pending = await asyncio.wait(tasks, timeout=args.drain_seconds)
        for task in pending:
            task.cancel()
        return [t.result() if t in done else {"status": "timeout"} for t in tasks]


def pct(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method), None for no values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize(results: list[dict], wall: float) -> dict:
    """Latency percentiles (seconds), throughput over `wall` seconds, errors and truncations."""
    ok = [r for r in results if r["status"] == 200 and r["finish"] and r["stamps"]]
    truncated = [r for r in results if r["status"] == 200 and not r["finish"]]
    series = {
        "ttft": [r["stamps"][0] - r["start"] for r in ok],
        "e2e": [r["stamps"][-1] - r["start"] for r in ok],
        "tpot": [
            (r["stamps"][-1] - r["stamps"][0]) / (len(r["stamps"]) - 1)
            for r in ok
            if len(r["stamps"]) > 1
        ],
        "itl": [b - a for r in ok for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)],
    }
    tokens = sum(len(r["stamps"]) for r in ok)
    out = {
        "sent": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok) - len(truncated),
        "truncated": len(truncated),
        "error_kinds": sorted({str(r["status"]) for r in results if r["status"] != 200}),
        "finish": {k: sum(r["finish"] == k for r in ok) for k in {r["finish"] for r in ok}},
        "tokens": tokens,
        "wall_s": wall,
        "req_per_s": len(ok) / wall,
        "tok_per_s": tokens / wall,
    }
    for name, values in series.items():
        for q in (50, 90, 99):
            out[f"{name}_p{q}"] = pct(values, q)
    return out


def warm_up(url: str) -> None:
    """One short request, so one-time costs (first allocation, lazy init) stay out of the run."""
    body = {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    httpx.post(url + "/v1/completions", json=body, timeout=300).raise_for_status()


def bench(urls: dict[str, str], args) -> list[dict]:
    """For each rate, the same prompts and arrival gaps against each server in turn."""
    rows = []
    for i, rate in enumerate(args.rates):
        texts = prompts(args.requests, args.seed + i)
        waits = gaps(args.requests, rate, args.seed + 1000 + i)
        for name, url in urls.items():
            load = os.getloadavg()[0]
            start = time.perf_counter()
            results = asyncio.run(run_rate(url, texts, waits, args))
            row = {"server": name, "rate": rate, "load1": load}
            row.update(summarize(results, time.perf_counter() - start))
            row["texts"] = [r.get("text") for r in results]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "texts"}), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the rows (latencies in seconds; ITL and TPOT in milliseconds)."""

    def s(*xs: float | None, scale: float = 1.0, digits: int = 2) -> str:
        return " / ".join("-" if x is None else f"{x * scale:.{digits}f}" for x in xs)

    lines = [
        "| rate (req/s) | server | load avg | ok/sent | errors | truncated | req/s | tok/s | "
        "TTFT p50 / p90 / p99 (s) | TPOT p50 / p90 / p99 (ms) | ITL p50 / p90 / p99 (ms) | "
        "e2e p50 / p90 / p99 (s) |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        p = {k: [r[f"{k}_p{q}"] for q in (50, 90, 99)] for k in ("ttft", "tpot", "itl", "e2e")}
        lines.append(
            f"| {r['rate']} | {r['server']} | {r['load1']:.1f} | {r['ok']}/{r['sent']} | "
            f"{r['errors']} | {r['truncated']} | {s(r['req_per_s'])} | "
            f"{s(r['tok_per_s'], digits=1)} | "
            f"{s(*p['ttft'])} | {s(*p['tpot'], scale=1e3, digits=0)} | "
            f"{s(*p['itl'], scale=1e3, digits=0)} | {s(*p['e2e'])} |"
        )
    return "\n".join(lines)


def agreement(rows: list[dict]) -> tuple[int, int] | None:
    """(identical, compared): completions that both servers returned in full, same text."""
    if len(rows) != 2:
        return None
    pairs = [(a, b) for a, b in zip(rows[0]["texts"], rows[1]["texts"], strict=False) if a and b]
    return sum(a == b for a, b in pairs), len(pairs)


def commands(gguf: str, args) -> dict[str, tuple[list[str], str, dict]]:
    """Server name -> (command line, readiness path, environment), one thread count for both."""
    env = dict(os.environ, OPENGEMMA_THREADS=str(args.threads))
    port = free_port()
    servers = {
        "opengemma": (
            [sys.executable, "-m", "opengemma.cli", "serve", "--port", str(port),
             "--max-batch", str(args.max_batch), "--max-queue", "256"],
            "/ready", env,
        )
    }  # fmt: skip
    if args.llama_cpp:
        port = free_port()
        servers["llama.cpp"] = (
            [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", MODEL_ID,
             "--port", str(port), "--n_threads", str(args.threads),
             "--n_threads_batch", str(args.threads), "--n_ctx", "4096",
             "--interrupt_requests", "False", "--logits_all", "False"],
            "/v1/models", dict(os.environ),
        )  # fmt: skip
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.1,0.3,1", help="requests/s, comma-separated")
    parser.add_argument("--requests", type=int, default=16, help="requests per rate, at most")
    parser.add_argument("--max-seconds", type=float, default=150, help="arrival window per rate")
    parser.add_argument("--drain-seconds", type=float, default=300, help="wait after arrivals")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads, for both servers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp's server")
    parser.add_argument("--out", type=Path, default=None, help="write all rows as JSON here")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    from opengemma.api import default_model_path

    urls = {}
    with ExitStack() as stack:
        for name, (cmd, ready, env) in commands(str(default_model_path()), args).items():
            url = f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
            log = Path(f"/tmp/serve_load_{name}.log")
            urls[name] = stack.enter_context(launched(cmd, url, ready, log, env))
            warm_up(urls[name])
        rows = bench(urls, args)
    print(table(rows))
    for rate in args.rates:
        same = agreement([r for r in rows if r["rate"] == rate])
        if same:
            print(f"rate {rate}: {same[0]}/{same[1]} completions identical across servers")
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
