"""`opengemma scrub`: personal data and secrets out of training corpora."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from opengemma.data.formats import ScrubError
from opengemma.errors import OpenGemmaError

app = typer.Typer(add_completion=False, help=__doc__)

KEY_ENV = "OPENGEMMA_SCRUB_KEY"


def _hash_key(key_file: Path | None, operator: str) -> bytes | None:
    if operator != "hash":
        return None
    if key_file is not None:
        try:
            key = key_file.read_bytes().strip()
        except OSError as exc:
            raise ScrubError(f"cannot read --hash-key-file {key_file}: {exc.strerror}") from None
    else:
        key = os.environ.get(KEY_ENV, "").encode("utf-8")
    if len(key) < 16:
        raise ScrubError(
            f"--operator hash needs a secret key of at least 16 bytes: --hash-key-file FILE "
            f"or ${KEY_ENV}"
        )
    return key


@app.command()
def scrub(
    inputs: Annotated[list[Path], typer.Argument(help="Input files (JSONL, Parquet, CSV, TXT).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file.")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl|parquet|csv|txt")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="Field to scan (dotted path, repeatable); default: every string."
        ),
    ] = None,
    types: Annotated[str | None, typer.Option(help="Comma-separated types; default all.")] = None,
    operator: Annotated[str, typer.Option(help="replace|mask|hash|redact|drop")] = "replace",
    findings: Annotated[Path | None, typer.Option(help="Write findings (JSONL).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the run report (JSON).")] = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(help="Malformed records go here (default OUTPUT.quarantine.jsonl)."),
    ] = None,
    engine: Annotated[str, typer.Option(help="local|ray")] = "local",
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    hash_key_file: Annotated[
        Path | None, typer.Option(help=f"HMAC key for --operator hash (else ${KEY_ENV}).")
    ] = None,
    phone_regions: Annotated[
        str | None, typer.Option(help="Regions for national phone formats, e.g. US,GB,DE.")
    ] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="Drop exact and near duplicates.")] = False,
    decontaminate: Annotated[
        list[Path] | None,
        typer.Option(help="Evaluation set to decontaminate against (repeatable)."),
    ] = None,
    ngram: Annotated[int, typer.Option(help="Decontamination n-gram length.")] = 13,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress")] = None,
    detector: Annotated[
        str, typer.Option(help="rules|gemma (a Gemma model's second pass after the rules).")
    ] = "rules",
    model: Annotated[
        str | None, typer.Option(help="Gemma model for --detector gemma (default: embedded).")
    ] = None,
) -> None:
    """Scrub personal data and secrets from INPUT files into OUTPUT."""
    from opengemma.data.pipeline import ScrubJob, run_scrub
    from opengemma.data.scrub import ScrubOptions
    from opengemma.safety.pii import DEFAULT_PHONE_REGIONS, parse_types

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        options = ScrubOptions(
            types=parse_types(types) if types else frozenset(),
            operator=operator,
            fields=tuple(field or ()),
            hash_key=_hash_key(hash_key_file, operator),
            phone_regions=tuple(phone_regions.split(","))
            if phone_regions
            else DEFAULT_PHONE_REGIONS,
            strict_types=bool(types),
            detector=detector,
            model=model,
        )
        job = ScrubJob(
            inputs=list(inputs),
            output=output,
            options=options,
            fmt=fmt,
            findings=findings,
            report=report,
            quarantine=quarantine,
            engine=engine,
            workers=workers,
            dedup=dedup,
            decontaminate=list(decontaminate or ()),
            ngram=ngram,
            progress=sys.stderr.isatty() if progress is None else progress,
        )
        result = run_scrub(job)
    except OpenGemmaError as exc:
        typer.echo(f"opengemma: error: {exc}", err=True)
        raise typer.Exit(1) from None
    if result.skipped_detectors:
        for type_, why in result.skipped_detectors.items():
            typer.echo(f"opengemma scrub: warning: {type_} not scanned: {why}", err=True)
    if result.quarantined:
        typer.echo(
            f"opengemma scrub: warning: {result.quarantined} record(s) quarantined in "
            f"{job.quarantine}",
            err=True,
        )
