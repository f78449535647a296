"""`opengemma bench`: speed, memory and perplexity side by side with llama.cpp and transformers.

Every engine runs in a child process of its own, on the same model file and the same token ids,
so that its peak RSS is its own (the kernel's `ru_maxrss` of that child). One timed run =
greedy generation from a prompt: time to first token (prefill), then `decode` single-token
steps. Medians over the runs are reported with ratios opengemma/peer and the fraction of the
memory-bandwidth bound (bandwidth / bytes read per decoded token). Perplexity on a fixed text,
over the same windows for every engine, shows that faster kernels stay exact enough.

    opengemma bench --threads default --threads 1 --json bench.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from opengemma.benchmark import DEFAULT_TEXT
from opengemma.benchmark.engines import ENGINES, BenchmarkError
from opengemma.errors import UsageError

__all__ = ["app"]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _parse_threads(values: list[str]) -> list[int]:
    out = []
    for v in values:
        if v in ("default", "auto", "0"):
            out.append(0)
        elif v.isdigit():
            out.append(int(v))
        else:
            raise UsageError(f"--threads takes a count or 'default', got {v!r}")
    return out


def _parse_options(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--load-option takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
def bench(
    model: str = typer.Option(None, "--model", "-m", help="A .gguf file; default: embedded."),
    engines: str = typer.Option(",".join(ENGINES), help="Comma-separated engines to measure."),
    threads: list[str] = typer.Option(  # noqa: B008
        ["default", "1"], help="Thread count, repeatable; 'default' = each engine's own."
    ),
    text: Path = typer.Option(None, help="Prose for the prompts and the perplexity."),  # noqa: B008
    prompt_tokens: int = typer.Option(512, help="Prompt length (prefill, TTFT)."),
    decode_tokens: int = typer.Option(128, help="Greedy decode steps timed per run."),
    repeats: int = typer.Option(3, help="Timed runs per engine (medians reported)."),
    rounds: int = typer.Option(1, help="Child processes per engine, interleaved."),
    batch: int = typer.Option(8, help="Sequences decoded at once (0 = skip)."),
    batch_tokens: int = typer.Option(64, help="Prompt length of each batched sequence."),
    speed: bool = typer.Option(True, help="Measure speed and memory."),
    perplexity: bool = typer.Option(True, help="Compare perplexity on the text."),
    ppl_window: int = typer.Option(512, help="Tokens per perplexity window."),
    ppl_max_windows: int = typer.Option(0, help="Most perplexity windows (0 = all)."),
    dtype: str = typer.Option(
        None, help="opengemma's dtype; default: load()'s own (int8 blocks for a quantized GGUF)."
    ),
    load_option: list[str] = typer.Option(  # noqa: B008
        [], help="KEY=VALUE passed to opengemma.load (repeatable; VALUE as JSON if it parses)."
    ),
    json_out: Path = typer.Option(None, "--json", help="Write the results here."),  # noqa: B008
    markdown: Path = typer.Option(None, help="Write the tables as Markdown here."),  # noqa: B008
    plot: Path = typer.Option(None, help="Write a PNG bar chart here (matplotlib)."),  # noqa: B008
    timeout: float = typer.Option(1800, help="Seconds allowed per child process."),
    bandwidth_mib: int = typer.Option(1024, help="MiB read to measure memory bandwidth."),
    speculative: bool = typer.Option(
        False, "--speculative", help="Only opengemma: plain vs prompt-lookup speculative decoding "
        "(speed-up, acceptance) on a copying task and on free text.",
    ),  # fmt: skip
) -> None:
    """Speed, memory and perplexity of opengemma beside llama.cpp and transformers."""
    from opengemma.cli_support import cli_errors, eprint

    @cli_errors
    def body() -> None:
        from opengemma.api import default_model_path
        from opengemma.benchmark.harness import BenchOptions, run_benchmark
        from opengemma.benchmark.results import print_rich, save_outputs

        source = text or DEFAULT_TEXT
        if not source.is_file():
            raise BenchmarkError(f"no text at {source}; pass --text FILE with a few KB of prose")
        if speculative:
            from opengemma.benchmark.speculative import run_section

            run_section(model, source.read_text(encoding="utf-8"), _parse_threads(threads),
                        decode_tokens, repeats, json_out, markdown, log=eprint)  # fmt: skip
            return
        opts = BenchOptions(
            model=default_model_path() if model is None else Path(model),
            engines=[e.strip() for e in engines.split(",") if e.strip()],
            threads=_parse_threads(threads),
            text=source.read_text(encoding="utf-8"),
            prompt_tokens=prompt_tokens,
            decode_tokens=decode_tokens,
            repeats=repeats,
            rounds=max(1, rounds),
            batch=batch,
            batch_tokens=batch_tokens,
            speed=speed,
            perplexity=perplexity,
            ppl_window=ppl_window,
            ppl_max_windows=ppl_max_windows,
            dtype=dtype,
            load_options=_parse_options(load_option),
            timeout_s=timeout,
            bandwidth_mib=bandwidth_mib,
        )
        doc = run_benchmark(opts, log=eprint)
        save_outputs(doc, json_out, markdown, plot)
        print_rich(doc)

    body()
