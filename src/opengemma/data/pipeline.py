"""The scrub pipeline: read -> scrub (engine) -> decontaminate -> deduplicate -> write.

Streaming end to end: records flow in chunks, an engine keeps a few chunks in flight, and the
only state that grows is the deduplication index (see `dedup`). Every output file is written
under a temporary name and renamed only when the whole run succeeded; every input record ends
up written, dropped with a reason, or quarantined with its line number, and the report adds
them up.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opengemma.data.decontam import Decontaminator
from opengemma.data.dedup import Deduplicator
from opengemma.data.engines import LocalEngine, make_engine
from opengemma.data.formats import (
    JsonLinesWriter,
    Record,
    RecordWriter,
    ScrubError,
    detect_format,
    read_records,
)
from opengemma.data.outcomes import finding_entries, quarantine_entry, record_id, scanned_text
from opengemma.data.scrub import Outcome, ScrubOptions
from opengemma.data.scrub_report import Report
from opengemma.safety.pii import TYPES

log = logging.getLogger("opengemma.data")


@dataclass
class ScrubJob:
    """Everything one `opengemma scrub` run needs."""

    inputs: list[Path]
    output: Path
    options: ScrubOptions = field(default_factory=ScrubOptions)
    fmt: str | None = None
    findings: Path | None = None
    report: Path | None = None
    quarantine: Path | None = None  # default: OUTPUT.quarantine.jsonl
    engine: str = "local"
    workers: int = 1
    dedup: bool = False
    decontaminate: list[Path] = field(default_factory=list)
    ngram: int = 13
    chunk_size: int = 256
    progress: bool = False
    address: str | None = None  # Ray cluster to join (engine "ray"); None: a local one
    shards: bool = False  # write OUTPUT as a folder of part files plus manifest.json (Ray)
    resume: bool = False  # reuse the finished shards of an interrupted Ray run
    preserve_order: bool = False  # one-file Ray output in input order (else as shards finish)

    def validate(self) -> str:
        """Check paths before anything is written; return the record format."""
        if not self.inputs:
            raise ScrubError("no input files given")
        for path in self.inputs:
            if not path.is_file():
                raise ScrubError(f"input not found: {path}")
            if path.resolve() == self.output.resolve():
                raise ScrubError(f"output {self.output} would overwrite input {path}")
        if not self.output.parent.is_dir():
            raise ScrubError(f"output directory does not exist: {self.output.parent}")
        if self.workers < 1:
            raise ScrubError(f"--workers must be at least 1, got {self.workers}")
        if self.quarantine is None:
            self.quarantine = self.output.with_name(self.output.name + ".quarantine.jsonl")
        return detect_format(self.inputs, self.fmt)


class _Run:
    """One execution of a job: the open writers, the stages and the running report."""

    def __init__(self, job: ScrubJob, fmt: str, engine: LocalEngine) -> None:
        self.job, self.fmt, self.engine = job, fmt, engine
        opts = job.options
        self.report = Report(
            inputs=[str(p) for p in job.inputs], output=str(job.output), format=fmt,
            engine=engine.name, workers=job.workers, operator=opts.operator,
            types=sorted(opts.types or TYPES), detectors=engine.describe(),
            skipped_detectors=dict(engine.skipped()),
        )  # fmt: skip
        self.report.stages = ["scrub"]
        self.decontam = None
        if job.decontaminate:
            self.decontam = Decontaminator(job.decontaminate, job.ngram)
            self.report.stages.append("decontaminate")
        self.dedup = Deduplicator() if job.dedup else None
        if self.dedup:
            self.report.stages.append("dedup")
        self.writers: list[Any] = []
        try:
            self.out = self._open(RecordWriter(job.output, fmt, job.inputs[0]))
            assert job.quarantine is not None
            self.quarantine = self._open(JsonLinesWriter(job.quarantine, 0o600))
            self.report.side_files["quarantine"] = str(job.quarantine)
            self.findings = None
            if job.findings is not None:
                self.findings = self._open(JsonLinesWriter(job.findings))
                self.report.side_files["findings"] = str(job.findings)
        except BaseException:
            self.abort()  # no temporary file outlives a failed start
            raise

    def _open(self, writer: Any) -> Any:
        self.writers.append(writer)
        return writer

    def handle(self, rec: Record, out: Outcome) -> None:
        """Route one record to the output, a drop counter or the quarantine."""
        rep = self.report
        rep.read += 1
        rep.bytes_read += rec.nbytes
        error = rec.error or out.error
        if error is not None:
            rep.quarantined += 1
            rep.quarantine_reasons[error.split(" at ")[0]] += 1
            self.quarantine.write(quarantine_entry(rec, error))
            return
        self._log_findings(rec, out)
        if out.dropped:
            rep.dropped["pii"] += 1
            return
        assert out.value is not None and rec.value is not None
        if self.decontam is not None and self.decontam.contaminated(self._text(rec.value)):
            rep.dropped["contaminated"] += 1
            return
        if self.dedup is not None:
            verdict = self.dedup.check(self._text(out.value))
            if verdict is not None:
                rep.dropped[verdict] += 1
                return
        self.out.write(rec, out.value, out.changed)
        rep.written += 1

    def _text(self, value: dict[str, Any]) -> str:
        return scanned_text(self.engine.scrubber, value)

    def _log_findings(self, rec: Record, out: Outcome) -> None:
        if not out.findings:
            return
        self.report.records_with_findings += 1
        for _, f in out.findings:
            self.report.findings[f.type] += 1
        if self.findings is not None:
            for entry in finding_entries(record_id(rec), out):
                self.findings.write(entry)

    def commit(self) -> None:
        for w in self.writers:
            w.commit()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


def _progress(enabled: bool, total: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled, transient=True,
    )  # fmt: skip


def run_scrub(job: ScrubJob) -> Report:
    """Run a job to completion and return its report; on failure no output file appears."""
    if job.engine == "ray":
        from opengemma.data.ray_pipeline import run_ray

        return run_ray(job)
    if job.shards or job.resume or job.address:
        raise ScrubError("--shards, --resume and --address need --engine ray")
    fmt = job.validate()
    started = time.perf_counter()
    engine = make_engine(job.engine, job.options, job.workers)
    run = _Run(job, fmt, engine)
    pending: deque[list[Record]] = deque()

    def chunks() -> Iterator[list[dict[str, Any] | None]]:
        batch: list[Record] = []
        for rec in read_records(job.inputs, fmt):
            batch.append(rec)
            if len(batch) == job.chunk_size:
                pending.append(batch)
                yield [r.value for r in batch]
                batch = []
        if batch:
            pending.append(batch)
            yield [r.value for r in batch]

    total = sum(p.stat().st_size for p in job.inputs)
    try:
        with _progress(job.progress, total) as bar:
            task = bar.add_task("scrub", total=total)
            for outcomes in engine.map(chunks()):
                recs = pending.popleft()
                for rec, out in zip(recs, outcomes, strict=True):
                    run.handle(rec, out)
                bar.update(task, advance=sum(r.nbytes for r in recs))
        run.report.elapsed_s = time.perf_counter() - started
        if not run.report.accounted:
            raise ScrubError("internal error: records unaccounted for; nothing was written")
        run.commit()
    except BaseException:
        run.abort()
        raise
    if job.report is not None:
        run.report.write(job.report)
    log.info("scrub: %s", run.report.summary())
    return run.report
