"""EmbedEngine: one worker thread that embeds the inputs of all waiting requests together.

Requests arrive from many server tasks at once; the worker takes every job waiting in the queue
(up to `max_rows` inputs), runs their inputs as one length-sorted, batched pass of the Embedder
and hands each job its rows (Matryoshka-truncated to the job's own `dimensions`).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from opengemma.embed.embedder import Embedder
from opengemma.embed.head import matryoshka


@dataclass
class EmbedJob:
    ids: list[list[int]]  # checked, fitted token ids, one list per input
    dimensions: int | None = None
    prompt_len: int = 0  # tokens of the task prompt (<bos> included) before each input
    future: Future = field(default_factory=Future)


class EmbedEngine:
    def __init__(self, embedder: Embedder, max_rows: int = 256):
        self.embedder, self.max_rows = embedder, max_rows
        self.batches = 0  # passes run (a pass serves one or more jobs)
        self._queue: queue.Queue[EmbedJob] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="opengemma-embed", daemon=True)
        self._thread.start()

    def submit(self, ids: list[list[int]], dimensions: int | None = None,
               prompt_len: int = 0) -> Future:  # fmt: skip
        """A Future of the (len(ids), dimensions or dim) float32 embeddings."""
        job = EmbedJob(ids, dimensions, prompt_len)
        self._queue.put(job)
        return job.future

    def _take(self) -> list[EmbedJob]:
        jobs = [self._queue.get()]
        rows = len(jobs[0].ids)
        while rows < self.max_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            rows += len(job.ids)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            # inputs with the same prompt length pool the same way: one pass per length
            for prompt_len in sorted({j.prompt_len for j in jobs}):
                group = [j for j in jobs if j.prompt_len == prompt_len]
                try:
                    rows = [ids for j in group for ids in j.ids]
                    full = self.embedder.embed_ids(rows, None, prompt_len)
                    self.batches += 1
                except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                at = 0
                for j in group:
                    part = full[at : at + len(j.ids)]
                    at += len(j.ids)
                    j.future.set_result(_narrow(part, j.dimensions, self.embedder))


def _narrow(rows: np.ndarray, dimensions: int | None, embedder: Embedder) -> np.ndarray:
    if dimensions is None:
        return rows
    import torch

    return matryoshka(torch.from_numpy(rows), dimensions, embedder.head.normalize).numpy()
