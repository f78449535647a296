"""`opengemma merge BASE ADAPTER OUT`: fold a LoRA adapter into the base weights and export."""

from __future__ import annotations

import typer

from opengemma.cli_support import cli_errors, eprint

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@cli_errors
def merge(
    base: str = typer.Argument(..., help="The base model: .gguf, HF directory, .ckpt or repo id."),
    adapter: str = typer.Argument(..., help="A LoRA adapter directory (PEFT format)."),
    out: str = typer.Argument(..., help="Output: a directory (--to hf) or a .gguf file."),
    to: str = typer.Option("hf", "--to", help="Output format: hf or gguf."),
    dtype: str = typer.Option("bf16", "--dtype", help="Stored float type: f32, bf16 or f16."),
    quant: str = typer.Option(None, "--quant", help="GGUF only: q8_0, q4_k, q6_k, ..."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Merge ADAPTER into BASE (in float32) and write the result as HF or GGUF."""
    from opengemma.checkpoint.convert import convert

    result = convert(base, out, to, dtype, quant, None, force, adapter=adapter)
    eprint(f"merged {adapter} into {base}: wrote {result.path} ({result.format})")
