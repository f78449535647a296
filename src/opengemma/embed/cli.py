"""`opengemma embed FILE|TEXT -o out.npy|out.jsonl`: sentence embeddings of a text or a file.

A file is read `--chunk` texts at a time; each chunk is embedded (batched by length) and its
rows appended to the output, so memory stays bounded however large the file. The output appears
whole or not at all.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from opengemma.cli_support import DTYPE_HELP, MODEL_HELP, QUANT_HELP, cli_errors, eprint
from opengemma.errors import InvalidRequestError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

SOURCE_HELP = (
    'A text to embed, or a file: .jsonl holds one string or {"text": ...} per line, any other '
    "file one text per line; - reads lines from stdin."
)
OUTPUT_HELP = (
    ".npy: a float32 matrix, one row per text, in input order; .jsonl: "
    '{"index": i, "embedding": [...]} per line.'
)


def read_texts(source: str) -> tuple[Iterator[str], int | None]:
    """(texts, how many or None) for a text, a file or stdin."""
    if source == "-":
        return _lines(sys.stdin, "stdin", False), None
    path = Path(source)
    try:
        is_file = "\n" not in source and path.is_file()
    except OSError:  # a long text is no file name
        is_file = False
    if not is_file:
        if not source.strip():
            raise InvalidRequestError("the text is empty; give some text or a file")
        return iter([source]), 1
    try:
        with path.open("rb") as f:
            count = sum(1 for _ in f)
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc}") from None
    f = path.open(encoding="utf-8")
    return _lines(f, str(path), path.suffix == ".jsonl"), count


def _lines(f, name: str, jsonl: bool) -> Iterator[str]:
    try:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if jsonl:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidRequestError(f"{name}:{number}: not JSON ({exc.msg})") from None
                item = item.get("text") if isinstance(item, dict) else item
                if not isinstance(item, str):
                    raise InvalidRequestError(
                        f'{name}:{number}: give a string or an object with a "text" string'
                    )
                line = item
            if not line.strip():
                raise InvalidRequestError(f"{name}:{number} is empty; every line must hold a text")
            yield line
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{name} is not UTF-8 text") from None
    finally:
        if f is not sys.stdin:
            f.close()


def _chunks(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Writer:
    """Appends rows to .jsonl directly, or to a raw float32 file that becomes a .npy at the end
    (the row count is known only then: stdin)."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim, self.rows = path, dim, 0
        self.npy = path.suffix == ".npy"
        self._raw = path.with_name(path.name + ".rows") if self.npy else path
        self._f = open(self._raw, "wb")  # noqa: SIM115 - closed in finish()

    def add(self, block) -> None:
        if self.npy:
            self._f.write(block.astype("<f4").tobytes())
        else:
            for row in block:
                values = ", ".join(str(v) for v in row)  # float32's shortest round-trip digits
                self._f.write(f'{{"index": {self.rows}, "embedding": [{values}]}}\n'.encode())
                self.rows += 1
            return
        self.rows += len(block)

    def finish(self) -> None:
        self._f.close()
        if not self.npy:
            return
        import shutil

        import numpy as np
        from numpy.lib import format as npy

        with open(self.path, "wb") as out, open(self._raw, "rb") as raw:
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)}
            npy.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)
        self._raw.unlink()
        assert np.load(self.path, mmap_mode="r").shape == (self.rows, self.dim)


def _progress(total: int | None, enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("embedding", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=True)  # fmt: skip


@app.command()
@cli_errors
def embed(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    output: Path = typer.Option(..., "--output", "-o", help=OUTPUT_HELP),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    dimensions: int = typer.Option(None, "--dimensions", help="Matryoshka width (re-normalised)."),
    task: str = typer.Option(None, "--task", help="A task prompt: query, document, clustering..."),
    pooling: str = typer.Option(None, "--pooling", help="Causal decoders: mean or lasttoken."),
    chunk: int = typer.Option(512, "--chunk", min=1, help="Texts read and written at a time."),
    no_truncate: bool = typer.Option(False, "--no-truncate", help="Fail on over-long texts."),
    dtype: str = typer.Option(None, "--dtype", help=DTYPE_HELP),
    quant: str = typer.Option("auto", "--quant", help=QUANT_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Embed SOURCE (a text or a file of texts) into OUTPUT (.npy or .jsonl)."""
    if output.suffix not in (".npy", ".jsonl"):
        raise typer.BadParameter(f"{output} must end in .npy or .jsonl", param_hint="--output")
    texts, total = read_texts(source)
    from opengemma.api import load
    from opengemma.atomic import AtomicPath
    from opengemma.embed import Embedder

    start = time.perf_counter()
    lm = load(model, dtype=dtype, quant=quant)
    embedder = Embedder(lm, pooling=pooling)
    dimensions = embedder.check_dimensions(dimensions, "--dimensions")
    prefix = embedder.prompt(task)
    prompt_len = len(lm.tokenizer.encode(prefix)) if prefix else 0
    if not embedder.trained and not quiet:
        eprint(f"opengemma: note: {lm.path.name} is a causal decoder, not a trained embedding "
               f"model: these are its {embedder.head.pooling}-pooled hidden states")  # fmt: skip
    began = time.perf_counter()
    with AtomicPath(output) as tmp, _progress(total, not quiet and sys.stderr.isatty()) as bar:
        bar_task = bar.add_task("embedding", total=total)
        writer = _Writer(tmp, dimensions or embedder.dim)
        for texts_chunk in _chunks(texts, chunk):
            ids = embedder.tokenize(texts_chunk, task, not no_truncate, param="text")
            writer.add(embedder.embed_ids(ids, dimensions, prompt_len,
                                          lambda n: bar.advance(bar_task, n)))  # fmt: skip
        writer.finish()
    if not quiet:
        spent = time.perf_counter() - began
        eprint(f"embedded {writer.rows} text(s) into {writer.dim} dimensions in {spent:.1f}s "
               f"({writer.rows / max(spent, 1e-9):.1f} texts/s; model loaded in "
               f"{began - start:.1f}s) -> {output}")  # fmt: skip
