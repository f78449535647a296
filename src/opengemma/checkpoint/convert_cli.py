"""`opengemma convert SRC DST --to hf|gguf`: between checkpoint formats."""

from __future__ import annotations

from collections import Counter

import typer

from opengemma.cli_support import cli_errors, eprint

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@cli_errors
def convert(
    src: str = typer.Argument(
        ...,
        help="A .gguf file, a Hugging Face directory, a gemma_pytorch "
        ".ckpt file, or a pulled repo id.",
    ),  # fmt: skip
    dst: str = typer.Argument(..., help="Output: a directory (--to hf) or a .gguf file."),
    to: str = typer.Option(..., "--to", help="Output format: hf or gguf."),
    dtype: str = typer.Option("bf16", "--dtype", help="Stored float type: f32, bf16 or f16."),
    quant: str = typer.Option(
        None,
        "--quant",
        help="GGUF only: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k for the weight matrices.",
    ),  # fmt: skip
    variant: str = typer.Option(
        None,
        "--variant",
        help="Preset of a .ckpt source (e.g. gemma-2b); inferred from shapes by default.",
    ),  # fmt: skip
    force: bool = typer.Option(False, "--force", help="Replace DST if it exists."),
) -> None:
    """Convert SRC to a Hugging Face directory or a GGUF file, written atomically."""
    from opengemma.checkpoint.convert import convert as run

    result = run(src, dst, to, dtype, quant, variant, force)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(result.tensor_types.values()).items()))
    eprint(f"wrote {result.path} ({result.format}, {result.config.family}, "
           f"{len(result.tensor_types)} tensors: {kinds})")  # fmt: skip
    if not result.tokenizer:
        eprint("warning: the source has no tokenizer.model, so none was written; copy it in "
               "before running the output")  # fmt: skip
