"""`opengemma scrub`: personal data and secrets out of training corpora."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from opengemma.cli_support import cli_errors
from opengemma.data.formats import ScrubError

app = typer.Typer(add_completion=False, help=__doc__)

KEY_ENV = "OPENGEMMA_SCRUB_KEY"
RAY_ONLY = ("shards", "resume", "address")  # options that only the Ray engine has

Opt = typer.Option
Inputs = Annotated[list[Path], typer.Argument(help="Input files (JSONL, Parquet, CSV, TXT).")]
Output = Annotated[Path, Opt("-o", "--output", help="Output file (a folder with --shards).")]
Fields = Annotated[
    list[str] | None, Opt("--field", help="Field to scan (dotted path, repeatable); default: all.")
]
Quarantine = Annotated[
    Path | None, Opt(help="Malformed records go here (default OUTPUT.quarantine.jsonl).")
]
Decontam = Annotated[list[Path] | None, Opt(help="Evaluation set to decontaminate against "
                                                 "(repeatable).")]  # fmt: skip
KeyFile = Annotated[Path | None, Opt(help=f"HMAC key for --operator hash (else ${KEY_ENV}).")]
Regions = Annotated[str | None, Opt(help="Regions for national phone formats, e.g. US,GB,DE.")]
Detector = Annotated[str, Opt(help="rules|gemma (a Gemma model's second pass after the rules).")]
GemmaModel = Annotated[str | None, Opt(help="Model for --detector gemma (default: embedded).")]
Shards = Annotated[bool, Opt("--shards", help="Ray: write OUTPUT/part-NNNNN.ext per input file "
                                              "plus manifest.json.")]  # fmt: skip
Resume = Annotated[bool, Opt("--resume", help="Ray: skip the shards an interrupted run "
                                              "finished.")]  # fmt: skip
Address = Annotated[str | None, Opt(help="Ray: join this cluster (e.g. auto, ray://host:10001); "
                                         "default: start a local one.")]  # fmt: skip
ORDER_HELP = "Ray, one-file output: records in input order (else as shards finish)."
Ordered = Annotated[bool, Opt("--preserve-order", help=ORDER_HELP)]


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


def _options(types: str | None, operator: str, field: list[str] | None, key_file: Path | None,
             phone_regions: str | None, detector: str, model: str | None) -> Any:  # fmt: skip
    from opengemma.data.scrub import ScrubOptions
    from opengemma.safety.pii import DEFAULT_PHONE_REGIONS, parse_types

    return ScrubOptions(
        types=parse_types(types) if types else frozenset(), operator=operator,
        fields=tuple(field or ()), hash_key=_hash_key(key_file, operator),
        phone_regions=tuple(phone_regions.split(",")) if phone_regions else DEFAULT_PHONE_REGIONS,
        strict_types=bool(types), detector=detector, model=model,
    )  # fmt: skip


def _check_engine(engine: str, given: dict[str, Any]) -> None:
    used = [f"--{name}" for name in RAY_ONLY if given[name]]
    if engine != "ray" and used:
        raise typer.BadParameter(f"{' and '.join(used)} work only with --engine ray",
                                 param_hint="--engine")  # fmt: skip


@app.command()
@cli_errors
def scrub(
    inputs: Inputs,
    output: Output,
    fmt: Annotated[str | None, Opt("--format", help="jsonl|parquet|csv|txt")] = None,
    field: Fields = None,
    types: Annotated[str | None, Opt(help="Comma-separated types; default all.")] = None,
    operator: Annotated[str, Opt(help="replace|mask|hash|redact|drop")] = "replace",
    findings: Annotated[Path | None, Opt(help="Write findings (JSONL).")] = None,
    report: Annotated[Path | None, Opt(help="Write the run report (JSON).")] = None,
    quarantine: Quarantine = None,
    engine: Annotated[str, Opt(help="local|ray")] = "local",
    workers: Annotated[int, Opt(help="Worker processes (Ray: CPUs of a local cluster).")] = 1,
    hash_key_file: KeyFile = None,
    phone_regions: Regions = None,
    dedup: Annotated[bool, Opt("--dedup", help="Drop exact and near duplicates.")] = False,
    decontaminate: Decontam = None,
    ngram: Annotated[int, Opt(help="Decontamination n-gram length.")] = 13,
    progress: Annotated[bool | None, Opt("--progress/--no-progress")] = None,
    detector: Detector = "rules",
    model: GemmaModel = None,
    shards: Shards = False,
    resume: Resume = False,
    address: Address = None,
    preserve_order: Ordered = False,
) -> None:
    """Scrub personal data and secrets from INPUT files into OUTPUT."""
    from opengemma.data.pipeline import ScrubJob, run_scrub

    _check_engine(engine, {"shards": shards, "resume": resume, "address": address})
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    job = ScrubJob(
        inputs=list(inputs), output=output,
        options=_options(types, operator, field, hash_key_file, phone_regions, detector, model),
        fmt=fmt, findings=findings, report=report, quarantine=quarantine, engine=engine,
        workers=workers, dedup=dedup, decontaminate=list(decontaminate or ()), ngram=ngram,
        progress=sys.stderr.isatty() if progress is None else progress, address=address,
        shards=shards, resume=resume, preserve_order=preserve_order,
    )  # fmt: skip
    result = run_scrub(job)
    for type_, why in result.skipped_detectors.items():
        typer.echo(f"opengemma scrub: warning: {type_} not scanned: {why}", err=True)
    if result.quarantined:
        typer.echo(
            f"opengemma scrub: warning: {result.quarantined} record(s) quarantined in "
            f"{job.quarantine}",
            err=True,
        )
