"""`opengemma batch`: offline generation, safety scoring and embedding over JSONL records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from opengemma.errors import OpenGemmaError

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)

Input = Annotated[Path, typer.Option("--input", "-i", help="JSONL records (one per line).")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Output folder (parts + manifest).")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Model path; default: embedded.")]
Engine = Annotated[str, typer.Option(help="local|ray")]
Workers = Annotated[int, typer.Option(help="Ray actors, one model each.")]
Threads = Annotated[int, typer.Option(help="Torch threads per worker.")]
Address = Annotated[str | None, typer.Option(help="Ray cluster address (default: local).")]
Resume = Annotated[bool, typer.Option("--resume", help="Keep finished parts, do the rest.")]
ChunkSize = Annotated[int, typer.Option(help="Records per part (the unit of work).")]
ProgressOpt = Annotated[bool | None, typer.Option("--progress/--no-progress")]


def _run(**kw: Any) -> None:
    from opengemma.batch.jobs import BatchJob
    from opengemma.batch.run import run_batch

    progress = kw.pop("progress")
    try:
        job = BatchJob(progress=sys.stderr.isatty() if progress is None else progress, **kw)
        manifest = run_batch(job)
    except OpenGemmaError as exc:
        typer.echo(f"opengemma: error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({k: manifest[k] for k in ("records", "resumed_records", "elapsed_s",
                                                     "records_per_s")}))  # fmt: skip


@app.command()
def generate(
    input: Input,
    output: Output,
    model: Model = None,
    engine: Engine = "local",
    workers: Workers = 1,
    threads: Threads = 1,
    max_tokens: Annotated[int, typer.Option(help="Default per record ('max_tokens').")] = 64,
    temperature: Annotated[float, typer.Option(help="Default; 0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    top_k: Annotated[int, typer.Option()] = 0,
    seed: Annotated[int | None, typer.Option()] = None,
    max_batch: Annotated[int, typer.Option(help="Rows each engine decodes together.")] = 8,
    chunk_size: ChunkSize = 64,
    address: Address = None,
    resume: Resume = False,
    progress: ProgressOpt = None,
) -> None:
    """Complete every record's "prompt" (or chat "messages"); per-record "max_tokens",
    "temperature", "top_p", "top_k", "seed", "stop" override the defaults."""
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed}
    _run(task="generate", input=input, output=output, model=model, engine=engine,
         workers=workers, threads=threads, max_tokens=max_tokens, sampling=sampling,
         max_batch=max_batch, chunk_size=chunk_size, address=address, resume=resume,
         progress=progress)  # fmt: skip


@app.command()
def guard(
    input: Input,
    output: Output,
    model: Model = None,
    policy: Annotated[list[str] | None, typer.Option(help="Policy name (repeatable).")] = None,
    engine: Engine = "local",
    workers: Workers = 1,
    threads: Threads = 1,
    chunk_size: ChunkSize = 64,
    address: Address = None,
    resume: Resume = False,
    progress: ProgressOpt = None,
) -> None:
    """Score every record's "prompt" (and "response", if any) with the safety classifier:
    P(violation) per policy."""
    _run(task="guard", input=input, output=output, model=model, policies=tuple(policy or ()),
         engine=engine, workers=workers, threads=threads, chunk_size=chunk_size,
         address=address, resume=resume, progress=progress)  # fmt: skip


@app.command()
def embed(
    input: Input,
    output: Output,
    model: Model = None,
    dimensions: Annotated[int | None, typer.Option(min=1, help="Matryoshka width.")] = None,
    task: Annotated[str | None, typer.Option(help="Task prompt: query, document, ...")] = None,
    pooling: Annotated[str | None, typer.Option(help="Causal decoders: mean|lasttoken.")] = None,
    engine: Engine = "local",
    workers: Workers = 1,
    threads: Threads = 1,
    chunk_size: ChunkSize = 64,
    address: Address = None,
    resume: Resume = False,
    progress: ProgressOpt = None,
) -> None:
    """Embed every record's "text": {"id", "embedding": [...]} per line (float32 values)."""
    _run(task="embed", input=input, output=output, model=model, dimensions=dimensions,
         prompt=task, pooling=pooling, engine=engine, workers=workers, threads=threads,
         chunk_size=chunk_size, address=address, resume=resume, progress=progress)  # fmt: skip
