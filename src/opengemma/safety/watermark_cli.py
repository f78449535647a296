"""`opengemma watermark`: make keys, generate watermarked text, detect the watermark, scan for
watermarked segments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from opengemma.cli_support import (
    DTYPE_HELP,
    MODEL_HELP,
    announce_loaded,
    cli_errors,
    eprint,
    stream_to_stdout,
)  # fmt: skip

app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="SynthID Text watermarking (compatible with transformers' SynthID processor).",
)  # fmt: skip

KEYS_HELP = "Watermark key file (JSON) from `opengemma watermark keygen`."


def _tokenizer(model: str | None):
    """The tokenizer of MODEL without loading its weights."""
    from opengemma.api import default_model_path
    from opengemma.errors import ModelLoadError
    from opengemma.tokenizer import Tokenizer

    path = default_model_path() if model is None else Path(model)
    if path.is_dir():
        if not (path / "tokenizer.model").is_file():
            raise ModelLoadError(f"{path} has no tokenizer.model; detection needs the tokenizer")
        return Tokenizer.from_file(path / "tokenizer.model")
    if path.suffix == ".gguf" and path.is_file():
        return Tokenizer.from_gguf(path)
    raise ModelLoadError(f"{path} is neither a .gguf file nor a model directory")


def _read_texts(file: str) -> list[str]:
    """One text from a plain file ('-' = stdin), or one per line's "text" field of a .jsonl."""
    from opengemma.safety.watermark import WatermarkError

    try:
        raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WatermarkError(f"cannot read {file}: {exc}") from None
    if not file.endswith(".jsonl"):
        return [raw]
    texts = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WatermarkError(f"{file}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise WatermarkError(f'{file}:{n}: each line needs a "text" string')
        texts.append(rec["text"])
    return texts


@app.command()
@cli_errors
def keygen(
    output: Path = typer.Option(None, "--output", "-o", help="Write the keys here (mode 600)."),  # noqa: B008
    depth: int = typer.Option(30, help="Number of keys (tournament layers)."),
    ngram_len: int = typer.Option(5, help="Tokens per hashed n-gram."),
    seed: int = typer.Option(0, "--table-seed", help="sampling_table_seed."),
) -> None:
    """Make a new secret watermark configuration (random keys from the OS)."""
    from opengemma.safety.watermark import keygen as make

    cfg = make(depth, ngram_len=ngram_len, sampling_table_seed=seed)
    if output is None:
        print(json.dumps(cfg.to_dict(), indent=2))
    else:
        cfg.save(output)
        eprint(f"wrote {cfg.depth} keys to {output}; keep it secret")


@app.command()
@cli_errors
def detect(
    file: str = typer.Argument(..., help="Text file, '-' for stdin, or .jsonl with 'text'."),
    keys: Path = typer.Option(..., "--keys", "-k", help=KEYS_HELP),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help="Tokenizer source. " + MODEL_HELP),
    alpha: float = typer.Option(1e-3, help="Call a text watermarked below this p-value."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (JSON lines)."),
) -> None:
    """Is FILE watermarked with these keys? Prints scores and a calibrated p-value."""
    from opengemma.safety.watermark import WatermarkConfig, detect_ids

    cfg = WatermarkConfig.load(keys)
    texts = _read_texts(file)
    tok = _tokenizer(model)
    for text in texts:
        d = detect_ids(tok.encode_plain(text), cfg, alpha=alpha)
        if as_json:
            print(json.dumps(d.to_dict()))
            continue
        verdict = "WATERMARKED" if d.watermarked else "not watermarked"
        print(f"{verdict}: p-value {d.p_value:.3g} (alpha {alpha:g}), weighted mean "
              f"{d.score:.4f}, mean {d.mean:.4f}, {d.num_scored} n-grams scored")  # fmt: skip


@app.command()
@cli_errors
def scan(
    file: str = typer.Argument(..., help="Text file, '-' for stdin, or .jsonl with 'text'."),
    keys: Path = typer.Option(..., "--keys", "-k", help=KEYS_HELP),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help="Tokenizer source. " + MODEL_HELP),
    alpha: float = typer.Option(1e-3, help="Report a segment below this corrected p-value."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (JSON lines)."),
) -> None:
    """Is there a watermarked segment inside FILE? A sliding-window scan whose p-value is
    corrected for the number of windows tested."""
    from opengemma.safety.watermark import WatermarkConfig
    from opengemma.safety.watermark_scan import scan as scan_text

    cfg = WatermarkConfig.load(keys)
    tok = _tokenizer(model)
    for text in _read_texts(file):
        seg = scan_text(text, cfg, tok, alpha=alpha)
        if as_json:
            print(json.dumps(seg.to_dict()))
            continue
        verdict = "WATERMARKED SEGMENT" if seg.watermarked else "no watermarked segment"
        print(f"{verdict}: corrected p-value {seg.p_corrected:.3g} (alpha {alpha:g}, "
              f"{seg.windows} windows), best window tokens {seg.start}-{seg.end} "
              f"(characters {seg.char_start}-{seg.char_end}), z {seg.z:.2f}")  # fmt: skip


@app.command()
@cli_errors
def generate(
    prompt: str = typer.Argument(..., help="Text to continue."),
    keys: Path = typer.Option(..., "--keys", "-k", help=KEYS_HELP),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    max_tokens: int = typer.Option(200, "--max-tokens", "-n", help="Most tokens to generate."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (> 0)."),
    top_k: int = typer.Option(40, "--top-k", help="Sample among the k most likely (0 = all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
    seed: int = typer.Option(None, help="Seed for reproducible sampling."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the chat template."),
    dtype: str = typer.Option("float32", help=DTYPE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No diagnostics on stderr."),
) -> None:
    """Complete PROMPT with the watermark applied, streaming the continuation."""
    from opengemma.chat import chat_prompt_ids
    from opengemma.safety.watermark import WatermarkConfig, stream

    cfg = WatermarkConfig.load(keys)
    from opengemma.api import load

    lm = announce_loaded(load(model, dtype=dtype), quiet)
    src = chat_prompt_ids(lm.tokenizer, [{"role": "user", "content": prompt}]) if chat else prompt
    chunks = stream(lm, src, cfg, max_tokens, temperature=temperature, top_k=top_k,
                    top_p=top_p, seed=seed)  # fmt: skip
    stream_to_stdout(chunks, quiet)
