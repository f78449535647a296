"""Batch jobs on Ray Data: one actor per worker, each holding one model (and, to generate,
the continuous-batching engine); a chunk per call, its part written by the actor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from opengemma.batch.jobs import BatchError, BatchJob, Chunk, Worker, run_chunk


class ChunkActor:
    """Ray Data callable class: builds its `Worker` once, then runs chunks."""

    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self.worker = Worker(job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        counts = []
        for i in range(len(batch["index"])):
            chunk = Chunk(*(int(batch[k][i]) for k in ("index", "start", "end", "first",
                                                       "records")))  # fmt: skip
            counts.append(run_chunk(self.worker, self.job, chunk))
        return {"index": batch["index"], "records": counts}


def run_on_ray(job: BatchJob, chunks: list[Chunk]) -> Iterator[int]:
    """Records done per finished chunk, as chunks finish."""
    from opengemma.data.ray_pipeline import connect, ray_error

    try:
        ray, owns = connect(job.address, job.workers * job.threads)
    except Exception as exc:
        raise BatchError(str(exc)) from None
    import ray.data

    try:
        if not chunks:
            return
        items = [asdict(c) for c in chunks]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(ChunkActor, fn_constructor_kwargs={"job": job}, batch_size=1,
                            batch_format="numpy", num_cpus=job.threads,
                            compute=ray.data.ActorPoolStrategy(size=job.workers))  # fmt: skip
        try:
            for row in ds.iter_rows():
                yield int(row["records"])
        except Exception as exc:  # a worker's error, or Ray's: one of ours, saying what to do
            raise ray_error(exc, BatchError, "parts") from None
    finally:
        if owns:
            ray.shutdown()
