"""Shared CLI plumbing: error reporting, model options, diagnostics on stderr."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from opengemma.errors import OpenGemmaError

MODEL_HELP = "A .gguf file or a Hugging Face model directory; default: the embedded Gemma 3 270M."
THREADS_HELP = "CPU threads: a number, or auto (time 1 vs all on this machine; the default)."
DTYPE_HELP = "Compute dtype: float32 (the exact reference), bfloat16 or float16."
ADAPTER_HELP = "A LoRA adapter directory (PEFT format, e.g. from opengemma tune) to apply."
QUANT_HELP = (
    "Weights in memory: q8 (int8 blocks, fast), none (dtype), auto (q8 for quantized GGUFs)."
)


def human_size(n: float) -> str:
    """Bytes as B / KB / MB / GB (powers of 1000)."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def cli_errors(fn: Callable) -> Callable:
    """Turn our errors into a one-line message on stderr and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OpenGemmaError as exc:
            eprint(f"opengemma: error: {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            eprint("\nopengemma: interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(0) from None

    return wrapper


def load_model(
    model: str | None,
    dtype: str | None,
    quiet: bool,
    threads: str | None = None,
    quant: str = "auto",
    adapter: str | None = None,
):
    import torch

    from opengemma.api import DEFAULT_MODEL_NAME, load

    start = time.perf_counter()
    lm = load(model, dtype=dtype, threads=threads, quant=quant, adapter=adapter)
    if not quiet:
        name = DEFAULT_MODEL_NAME if model is None else str(model)
        took = time.perf_counter() - start
        eprint(
            f"loaded {name} in {took:.1f}s ({lm.config.family}, {lm.model.dtype}, "
            f"weights {'int8 blocks' if lm.quant == 'q8' else 'as stored'}, "
            f"{torch.get_num_threads()} thread(s))"
        )
    return lm


def sampling_kwargs(temperature: float, top_k: int, top_p: float, min_p: float,
                    repetition_penalty: float, seed: int | None) -> dict[str, Any]:  # fmt: skip
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                repetition_penalty=repetition_penalty, seed=seed)  # fmt: skip


def stream_to_stdout(chunks, quiet: bool) -> str:
    """Print chunks as they come; report speed on stderr. Returns the finish reason."""
    start = time.perf_counter()
    n, reason = 0, None
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()
        n += 1
        reason = chunk.finish_reason
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not quiet and n:
        elapsed = time.perf_counter() - start
        eprint(f"[{n} tokens in {elapsed:.2f}s, {n / elapsed:.1f} tok/s, finish: {reason}]")
    return reason or ""
