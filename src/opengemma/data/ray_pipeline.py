"""The whole scrub pipeline on Ray Data: every input file is a shard, every stage a Ray job.

    scrub   one task per shard: read, scrub, decontaminate, stage survivors + dedup keys
    dedup   a hash shuffle through the work folder: the scrub tasks write their records'
            exact and MinHash-band keys partitioned by hash, one task per partition then
            drops every key occurrence but the first in input order
    finish  one task per shard: drop what dedup marked, write the output part

The driver sees counts per shard, never records: the report adds up `ShardSummary`s, and the
one-file output, findings and quarantine are byte copies of the parts in shard order. The
records kept are those of the local engine (`pipeline.run_scrub`), and with `--preserve-order`
(always, for `--shards`) in the same order. Ray Data retries a task whose worker died (its
default for tasks; their files are written atomically, so a retry never duplicates a record);
a failed job keeps its work folder and `--resume` reruns only the shards without a
`.done.json` marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from opengemma.data.formats import AtomicFile, ScrubError, _csv_line, csv_header
from opengemma.data.progress import progress_bar
from opengemma.data.ray_shards import (
    FAULT_ENV,
    ShardSummary,
    ShardTask,
    finish_shard,
    part_name,
    reduce_partition,
    scrub_shard,
    staged,
)
from opengemma.data.scrub_report import Report
from opengemma.errors import OpenGemmaError
from opengemma.safety.pii import TYPES

log = logging.getLogger("opengemma.data")

PARTITION_BYTES = 16 << 20  # input bytes per dedup hash partition (reducer input <~ 40 MB)
COPY_CHUNK = 64 << 10  # bytes per read when parts are copied into one file (driver memory)


def connect(address: str | None, workers: int) -> tuple[Any, bool]:
    """Ray, initialised (joins `address`, else a local instance of `workers` CPUs); the flag
    says whether we started it (and must shut it down)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ScrubError("--engine ray needs Ray Data: pip install 'opengemma[ray]'") from None
    # Ray Data narrates every dataset at INFO and warns that its progress bars are off (ours
    # are on): keep its warnings and errors only
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray, True


def ray_error(exc: BaseException, error: type[OpenGemmaError] = ScrubError,
              kept: str = "shards") -> OpenGemmaError:  # fmt: skip
    """Our own error inside a failed Ray task, else an `error` saying what to do."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OpenGemmaError) and not type(cur).__name__.startswith("RayTaskError"):
            return cur
        inner = getattr(cur, "cause", None)
        cur = inner if isinstance(inner, BaseException) else (cur.__cause__ or cur.__context__)
    first = str(exc).strip().splitlines()
    return error(
        f"a Ray task failed ({type(exc).__name__}: {first[-1] if first else ''}); "
        f"the finished {kept} are kept: rerun with --resume"
    )


def _fault() -> tuple[str, str, int, int, str] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    mode, stage, shard, after, marker = spec.split(":", 4)
    return mode, stage, int(shard), int(after), marker


def _work_dir(job: Any) -> Path:
    if job.shards:
        return job.output / ".opengemma-work"
    return job.output.with_name(f".{job.output.name}.opengemma-work")


def _fingerprint(job: Any, fmt: str) -> str:
    inputs = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in job.inputs]
    secret = hashlib.sha256(pickle.dumps(job.options)).hexdigest()  # never the hash key itself
    return json.dumps({"inputs": inputs, "format": fmt, "options": secret, "dedup": job.dedup,
                       "decontaminate": [str(p) for p in job.decontaminate], "ngram": job.ngram,
                       "chunk_size": job.chunk_size, "shards": job.shards,
                       "findings": job.findings is not None}, indent=1)  # fmt: skip


def _prepare(job: Any, fmt: str) -> Path:
    """Create (or, with --resume, reopen) the work folder; it holds scrubbed records and the
    quarantine (unscrubbed), so it is private to the user."""
    if job.shards:
        if job.output.exists() and not job.output.is_dir():
            raise ScrubError(f"--shards output {job.output} is a file; give a folder")
        if (
            job.output.is_dir()
            and not job.resume
            and any(p.name != ".opengemma-work" for p in job.output.iterdir())
        ):
            raise ScrubError(f"output folder {job.output} is not empty; choose another one")
        job.output.mkdir(exist_ok=True)
    work = _work_dir(job)
    stamp = _fingerprint(job, fmt)
    if work.is_dir() and job.resume:
        found = (work / "job.json").read_text() if (work / "job.json").is_file() else ""
        if found != stamp:
            raise ScrubError(f"{work} belongs to a different job (inputs or options changed); "
                             "rerun without --resume")  # fmt: skip
    else:
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("scrub", "final"):
            (work / sub).mkdir(parents=True, mode=0o700)
        os.chmod(work, 0o700)
        (work / "job.json").write_text(stamp)
    return work


def _describe(options: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    from opengemma.data.scrub import Scrubber

    scanner = Scrubber(options).scanner
    return scanner.describe(), dict(scanner.skipped)


def _shard_stage(fn: Any, shards: list[int], kwargs: dict[str, Any]) -> Any:
    """Rows {"shard", "summary", "resumed"} of one task per shard, as tasks finish."""
    import ray.data

    items = [{"shard": s} for s in shards]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    return ds.map(fn, fn_kwargs=kwargs, num_cpus=1).iter_rows()


def _dedup(task: ShardTask) -> int:
    """The reduce side of the shuffle: returns how many records it marked as repeats."""
    import ray.data

    drops = Path(task.work) / "drops"
    shutil.rmtree(drops, ignore_errors=True)  # never a stale decision from an earlier run
    drops.mkdir()
    items = [{"part": p} for p in range(task.parts)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    rows = ds.map(reduce_partition, fn_kwargs={"work": task.work}, num_cpus=1).iter_rows()
    return sum(int(r["dropped"]) for r in rows)


class _Concat:
    """The one-file output: parts appended as bytes (CSV: one header), Parquet row groups."""

    def __init__(self, path: Path, fmt: str, template: Path) -> None:
        self.fmt, self.file, self.first = fmt, AtomicFile(path), True
        self.header = _csv_line(csv_header(template)) if fmt == "csv" else b""
        self._pq: Any = None

    def append(self, part: Path) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(part)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.file.fh, pf.schema_arrow)
            for i in range(pf.num_row_groups):
                self._pq.write_table(pf.read_row_group(i))
        else:
            with open(part, "rb") as fh:
                if self.fmt == "csv" and not self.first:
                    fh.seek(len(self.header))
                shutil.copyfileobj(fh, self.file.fh, COPY_CHUNK)
        self.first = False

    def commit(self) -> None:
        if self._pq is not None:
            self._pq.close()
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()


def _side_file(dst: Path, parts: list[Path], mode: int) -> None:
    out = AtomicFile(dst, mode)
    try:
        for p in parts:
            with open(p, "rb") as fh:
                shutil.copyfileobj(fh, out.fh, COPY_CHUNK)
        out.commit()
    except BaseException:
        out.abort()
        raise


def _new_report(job: Any, fmt: str, described: tuple) -> Report:
    opts = job.options
    report = Report(
        inputs=[str(p) for p in job.inputs], output=str(job.output), format=fmt, engine="ray",
        workers=job.workers, operator=opts.operator, types=sorted(opts.types or TYPES),
        detectors=described[0], skipped_detectors=described[1],
    )  # fmt: skip
    report.stages = ["scrub"] + ["decontaminate"] * bool(job.decontaminate)
    report.stages += ["dedup"] * job.dedup
    return report


def _add(report: Report, s: ShardSummary) -> None:
    report.read += s.read
    report.written += s.written
    report.bytes_read += s.bytes_read
    report.quarantined += s.quarantined
    report.quarantine_reasons.update(s.quarantine_reasons)
    report.dropped.update(s.dropped)
    report.findings.update(s.findings)
    report.records_with_findings += s.records_with_findings


def run_ray(job: Any) -> Report:
    """Run a `pipeline.ScrubJob` on Ray; on failure no output appears and the work folder
    stays for `--resume`."""
    fmt = job.validate()
    started = time.perf_counter()
    ray, owns = connect(job.address, job.workers)
    try:
        work = _prepare(job, fmt)
        task = ShardTask(
            inputs=tuple(str(p) for p in job.inputs), fmt=fmt, work=str(work),
            options=job.options, dedup=job.dedup,
            decontaminate=tuple(str(p) for p in job.decontaminate), ngram=job.ngram,
            chunk_size=job.chunk_size, template=str(job.inputs[0]), fault=_fault(),
            parts=max(1, math.ceil(sum(p.stat().st_size for p in job.inputs) / PARTITION_BYTES)),
        )  # fmt: skip
        try:
            described = ray.get(ray.remote(_describe).remote(job.options))
            report = _new_report(job, fmt, described)
            _stages(job, task, report)
        except OpenGemmaError:
            raise
        except Exception as exc:
            raise ray_error(exc) from None
        report.elapsed_s = time.perf_counter() - started
        shutil.rmtree(work, ignore_errors=True)
    finally:
        if owns:
            ray.shutdown()
    if job.report is not None:
        report.write(job.report)
    log.info("scrub: %s", report.summary())
    return report


def _stages(job: Any, task: ShardTask, report: Report) -> None:
    n = len(job.inputs)
    shards = list(range(n))
    scrubbed: dict[int, ShardSummary] = {}
    with progress_bar(job.progress, "shards") as bar:
        t = bar.add_task("scrub", total=n)
        for row in _shard_stage(scrub_shard, shards, {"task": task, "resume": job.resume}):
            scrubbed[int(row["shard"])] = ShardSummary.from_json(row["summary"])
            report.resumed_shards += bool(row["resumed"])
            bar.advance(t)
        if job.dedup:
            bar.update(t, description="dedup")
            _dedup(task)
        bar.update(t, description="write", completed=0)
        _finish(job, task, report, scrubbed, bar, t)


def _finish(job: Any, task: ShardTask, report: Report, scrubbed: dict[int, ShardSummary],
            bar: Any, t: Any) -> None:  # fmt: skip
    n = len(job.inputs)
    offsets, total = {}, 0
    for s in range(n):
        offsets[s], total = total, total + scrubbed[s].read
    part_dir = job.output if job.shards else Path(task.work) / "final"
    concat = None if job.shards else _Concat(job.output, task.fmt, Path(task.template))
    done: dict[int, ShardSummary] = {}
    next_part = 0
    try:
        kwargs = {"task": task, "resume": job.resume, "part_dir": str(part_dir),
                  "findings": job.findings is not None}  # fmt: skip
        for row in _finish_rows(kwargs, offsets):
            shard = int(row["shard"])
            done[shard] = ShardSummary.from_json(row["summary"])
            report.resumed_shards += bool(row["resumed"])
            bar.advance(t)
            if concat is not None and not job.preserve_order:
                concat.append(part_dir / part_name(shard, task.fmt))
            while concat is not None and job.preserve_order and next_part in done:
                concat.append(part_dir / part_name(next_part, task.fmt))
                next_part += 1
        _commit(job, task, report, scrubbed, done, concat)
    except BaseException:
        if concat is not None:
            concat.abort()
        raise


def _finish_rows(kwargs: dict[str, Any], offsets: dict[int, int]) -> Any:
    import ray.data

    items = [{"shard": s, "offset": o} for s, o in offsets.items()]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))

    def fn(row: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return finish_shard(row, offset=int(row["offset"]), **kw)

    return ds.map(fn, fn_kwargs=kwargs, num_cpus=1).iter_rows()


def _commit(job: Any, task: ShardTask, report: Report, scrubbed: dict[int, ShardSummary],
            done: dict[int, ShardSummary], concat: _Concat | None) -> None:  # fmt: skip
    n = len(job.inputs)
    for s in range(n):
        a, b = scrubbed[s], done[s]
        _add(report, ShardSummary(
            s, a.read, a.bytes_read, a.quarantined, a.quarantine_reasons,
            a.dropped + b.dropped, a.findings, a.records_with_findings, a.kept, b.written,
        ))  # fmt: skip
    if not report.accounted:
        raise ScrubError("internal error: records unaccounted for; nothing was written")
    work = Path(task.work)
    _side_file(job.quarantine, [staged(str(work), "final", s, ".quarantine.jsonl")
                                for s in range(n)], 0o600)  # fmt: skip
    report.side_files["quarantine"] = str(job.quarantine)
    if job.findings is not None:
        _side_file(job.findings, [staged(str(work), "final", s, ".findings.jsonl")
                                  for s in range(n)], 0o644)  # fmt: skip
        report.side_files["findings"] = str(job.findings)
    if concat is not None:
        concat.commit()
        return
    parts = [
        {
            "path": part_name(s, task.fmt),
            "source": task.inputs[s],
            "records": done[s].written,
            "bytes": done[s].part_bytes,
        }
        for s in range(n)
    ]
    manifest = {"format": task.fmt, "records": report.written, "parts": parts}
    out = AtomicFile(job.output / "manifest.json")
    out.fh.write(json.dumps(manifest, indent=2).encode("utf-8") + b"\n")
    out.commit()
