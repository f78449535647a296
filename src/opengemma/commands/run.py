"""`opengemma run PROMPT`: one completion, streamed to stdout; diagnostics on stderr."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from opengemma.cli_support import (
    ADAPTER_HELP,
    DTYPE_HELP,
    MODEL_HELP,
    QUANT_HELP,
    THREADS_HELP,
    announce_loaded,
    check_threads,
    cli_errors,
    sampling_kwargs,
    stream_to_stdout,
)  # fmt: skip

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@cli_errors
def run(
    prompt: str = typer.Argument(None, help="Text to continue (or use --file)."),
    file: str = typer.Option(
        None, "--file", "-f", help="Read the prompt from a file ('-' = stdin)."
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    max_tokens: int = typer.Option(128, "--max-tokens", "-n", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy; higher = more random."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k most likely (0 = all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
    min_p: float = typer.Option(0.0, "--min-p", help="Drop tokens below min_p x the top one."),
    repetition_penalty: float = typer.Option(
        1.0, "--repeat-penalty", help="> 1 discourages repeats."
    ),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    stop: list[str] = typer.Option(None, "--stop", help="Stop at this string (repeatable)."),  # noqa: B008
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the chat template."),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    quant: str = typer.Option("auto", help=QUANT_HELP),
    adapter: str = typer.Option(None, help=ADAPTER_HELP),
    watermark: str = typer.Option(
        None, help="Embed a SynthID Text watermark with these keys (opengemma watermark keygen)."
    ),
    speculative: str = typer.Option(
        None, "--speculative", help="ngram: prompt-lookup speculative decoding (the same output; "
        "faster when it repeats the prompt, e.g. copying or editing text).",
    ),  # fmt: skip
    threads: str = typer.Option(None, help=THREADS_HELP, callback=check_threads),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No diagnostics on stderr."),
) -> None:
    """Complete PROMPT with a Gemma model, streaming only the continuation to stdout."""
    from opengemma.errors import InvalidRequestError

    prompt = _read_prompt(prompt, file)
    if not prompt.strip():
        raise InvalidRequestError("the prompt is empty; give some text to continue")
    kwargs = sampling_kwargs(temperature, top_k, top_p, min_p, repetition_penalty, seed)
    if watermark is not None:
        from opengemma.safety.watermark import WatermarkConfig

        kwargs["watermark"] = WatermarkConfig.load(watermark)
    if speculative is not None:
        kwargs["speculative"] = speculative
    from opengemma.api import load

    lm = load(model, dtype=dtype, threads=threads, quant=quant, adapter=adapter)
    announce_loaded(lm, quiet)
    if chat:
        chunks = lm.chat_stream(
            [{"role": "user", "content": prompt}], max_tokens, stop=stop, **kwargs
        )
    else:
        chunks = lm.stream(prompt, max_tokens, stop=stop, **kwargs)
    stream_to_stdout(chunks, quiet)
    stats = getattr(lm, "last_speculation", None)
    if stats is not None and not quiet:
        print(f"[speculative {stats.method}: {stats.accepted}/{stats.drafted} drafted tokens "
              f"accepted, {stats.tokens_per_step:.2f} tokens per step"
              f"{'; ' + stats.reason if stats.reason else ''}]", file=sys.stderr)  # fmt: skip


def _read_prompt(prompt: str | None, file: str | None) -> str:
    from opengemma.errors import InvalidRequestError

    if (prompt is None) == (file is None):
        raise InvalidRequestError(
            "give the prompt as an argument or with --file (exactly one of the two)"
        )
    if file is None:
        return prompt
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read the prompt file {file}: {exc}") from None
