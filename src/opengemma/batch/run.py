"""Run a `BatchJob`: chunks -> workers -> part files, a manifest, resumable."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from opengemma.atomic import write_atomic
from opengemma.batch.jobs import BatchError, BatchJob, Chunk, Worker, part_path, run_chunk, scan
from opengemma.data.progress import progress_bar


def _fingerprint(job: BatchJob) -> str:
    st = job.input.stat()
    fields = {"task": job.task, "input": [str(job.input.resolve()), st.st_size, st.st_mtime_ns],
              "model": job.model, "max_tokens": job.max_tokens, "sampling": job.sampling,
              "policies": list(job.policies), "chunk_size": job.chunk_size,
              "embed": [job.dimensions, job.prompt, job.pooling]}  # fmt: skip
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _prepare(job: BatchJob) -> list[Chunk]:
    if job.workers < 1 or job.chunk_size < 1 or job.threads < 1:
        raise BatchError("--workers, --chunk-size and --threads must be at least 1")
    if job.engine not in ("local", "ray"):
        raise BatchError(f"unknown engine {job.engine!r}; choose local or ray")
    chunks = scan(job)
    stamp = _fingerprint(job)
    marker = job.output / ".job"
    if job.output.exists() and not job.output.is_dir():
        raise BatchError(f"--output {job.output} is a file; give a folder")
    if job.output.is_dir() and any(job.output.iterdir()):
        if not job.resume:
            raise BatchError(f"output folder {job.output} is not empty; pass --resume to "
                             "continue it or choose another")  # fmt: skip
        if not marker.is_file() or marker.read_text() != stamp:
            raise BatchError(f"{job.output} holds a different job (input, model or parameters "
                             "changed); choose another folder")  # fmt: skip
    if not job.output.parent.is_dir():
        raise BatchError(f"output's parent folder does not exist: {job.output.parent}")
    job.output.mkdir(exist_ok=True)
    write_atomic(marker, stamp)
    return chunks


def run_batch(job: BatchJob) -> dict[str, Any]:
    """Run the job; returns the manifest (also written to OUTPUT/manifest.json)."""
    started = time.perf_counter()
    chunks = _prepare(job)
    todo = [c for c in chunks if not (job.resume and part_path(job.output, c).is_file())]
    total = sum(c.records for c in chunks)
    skipped = total - sum(c.records for c in todo)
    with progress_bar(job.progress, "records") as bar:
        task = bar.add_task(job.task, total=total, completed=skipped)
        if job.engine == "ray":
            from opengemma.batch.ray_batch import run_on_ray

            for n in run_on_ray(job, todo):
                bar.advance(task, n)
        else:
            worker = Worker(job)
            try:
                for chunk in todo:
                    bar.advance(task, run_chunk(worker, job, chunk))
            finally:
                worker.close()
    elapsed = time.perf_counter() - started
    done = total - skipped
    manifest = {"task": job.task, "input": str(job.input), "model": job.model or "default",
                "engine": job.engine, "workers": job.workers, "records": total,
                "resumed_records": skipped, "elapsed_s": round(elapsed, 3),
                "records_per_s": round(done / max(elapsed, 1e-9), 3),
                "parts": [part_path(job.output, c).name for c in chunks]}  # fmt: skip
    write_atomic(job.output / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
