"""Prefix caching: time to first token of a multi-turn chat replayed turn by turn.

Starts `opengemma serve` twice on 127.0.0.1 (the default int8 path of the embedded Gemma 3
270M unless --model/--dtype say otherwise), once with the prefix cache and once with
--no-prefix-cache, and replays the same chat on each: a shared system prompt, then --turns user
turns, each sent with the whole history (as chat clients do) as a streamed greedy chat
completion. TTFT is measured by the client (request sent -> first content chunk). It prints a
Markdown table per turn and the median TTFT of turns 2.. with the cache on over off; the
greedy answers of both runs must be identical (checked).

    .venv/bin/python bench/prefix_cache_ttft.py --turns 10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

SYSTEM = (
    "You are the assistant of a small bakery. It sells sourdough, rye, baguettes, croissants, "
    "cinnamon rolls and seasonal pies, opens at seven and closes at six, except on Sundays, "
    "when it closes at two. Prices: sourdough 6 euros, rye 5, baguette 2, croissant 1.80, "
    "cinnamon roll 2.50, pie 18. Orders above 50 euros are delivered free within the city. "
) * 4
QUESTIONS = [
    "What time do you close on Sunday?", "How much are two baguettes and a pie?",
    "Do you deliver three pies?", "Which breads do you sell?", "Anything with cinnamon?",
    "Can I order a cake?", "When do you open?", "Is the rye bread sour?",
    "How much is a dozen croissants?", "Do you take cards?", "Are the pies seasonal?",
    "Is delivery free for 40 euros?",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "opengemma.cli", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode})")
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def ttft_turn(url: str, messages: list[dict], max_tokens: int) -> tuple[float, str]:
    """(seconds to the first content chunk, the whole answer) of one streamed turn."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start, first, text = time.perf_counter(), None, []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter()
                text.append(delta)
    return (first or time.perf_counter()) - start, "".join(text)


def replay(url: str, turns: int, max_tokens: int) -> tuple[list[float], list[str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    times, answers = [], []
    for question in (QUESTIONS * 2)[:turns]:
        messages.append({"role": "user", "content": question})
        seconds, answer = ttft_turn(url, messages, max_tokens)
        times.append(seconds)
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    return times, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    extra = [*(["--model", args.model] if args.model else []),
             *(["--dtype", args.dtype] if args.dtype else [])]  # fmt: skip
    results = {}
    for name, flags in (("off", ["--no-prefix-cache"]), ("on", [])):
        proc, url = start_server(extra + flags)
        try:
            ttft_turn(url, [{"role": "user", "content": "Hello"}], 2)  # warm-up
            results[name] = replay(url, args.turns, args.max_tokens)
            if name == "on":
                hits = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in httpx.get(f"{url}/metrics").text.splitlines()
                    if line.startswith("opengemma:prefix_cache_hit_tokens_total{")
                )
                results["hits"] = hits
        finally:
            proc.terminate()
            proc.wait(60)
    off, on = results["off"][0], results["on"][0]
    same = results["off"][1] == results["on"][1]
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}; identical greedy answers: {same}")
    print("| turn | TTFT cache off (s) | TTFT cache on (s) | on / off |")
    print("|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(off, on, strict=True), 1):
        print(f"| {i} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    ratio = statistics.median(on[1:]) / statistics.median(off[1:])
    print(f"median TTFT of turns 2..{args.turns}: off {statistics.median(off[1:]):.3f} s, "
          f"on {statistics.median(on[1:]):.3f} s, on/off = {ratio:.2f}; "
          f"prefix_cache_hit_tokens_total {results['hits']:.0f}")  # fmt: skip
    if not same:
        raise SystemExit("the greedy answers differ between cache on and off")


if __name__ == "__main__":
    main()
