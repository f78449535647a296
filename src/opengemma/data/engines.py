"""Engines: run the scrub stage over chunks of records, returning results in input order.

`LocalEngine` runs in this process or in a pool of worker processes; `RayEngine` runs the same
stage as Ray Data `map_batches` tasks (a local Ray instance, or the cluster `ray.init` finds).
Both keep at most a few chunks in flight, so memory stays bounded however large the input.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from opengemma.data.formats import ScrubError
from opengemma.data.scrub import Outcome, Scrubber, ScrubOptions

Chunk = list[dict[str, Any] | None]

_worker_scrubber: Scrubber | None = None


def _init_worker(options: ScrubOptions) -> None:
    global _worker_scrubber
    _worker_scrubber = Scrubber(options)


def _work(chunk: Chunk) -> list[Outcome]:
    assert _worker_scrubber is not None, "worker initializer did not run"
    return _worker_scrubber.process(chunk)


class LocalEngine:
    """In-process (`workers <= 1`) or a spawn-started process pool."""

    name = "local"

    def __init__(self, options: ScrubOptions, workers: int = 1) -> None:
        self.options, self.workers = options, max(1, workers)
        self.scrubber = Scrubber(options)  # validates options and loads detectors up front

    def describe(self) -> list[dict[str, Any]]:
        return self.scrubber.scanner.describe()

    def skipped(self) -> dict[str, str]:
        return self.scrubber.scanner.skipped

    def map(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]:
        if self.workers == 1:
            for chunk in chunks:
                yield self.scrubber.process(chunk)
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(self.workers, _init_worker, (self.options,)) as pool:
            pending: deque[Any] = deque()
            for chunk in chunks:
                pending.append(pool.apply_async(_work, (chunk,)))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()


_ray_cache: dict[bytes, Scrubber] = {}


def _ray_scrub(batch: dict[str, Any], options: ScrubOptions) -> dict[str, Any]:
    """Ray Data task: pickled chunks in, pickled outcomes out. Ray reuses worker processes,
    so each keeps its Scrubber (and NER model) across tasks and windows."""
    key = pickle.dumps(options)
    if key not in _ray_cache:
        _ray_cache[key] = Scrubber(options)
    scrubber = _ray_cache[key]
    out = [pickle.dumps(scrubber.process(pickle.loads(b))) for b in batch["chunk"]]
    return {"seq": batch["seq"], "result": out}


class RayEngine(LocalEngine):
    """The scrub stage on Ray Data, `window` chunks per dataset so memory stays bounded."""

    name = "ray"

    def __init__(self, options: ScrubOptions, workers: int = 1, window: int = 64) -> None:
        super().__init__(options, 1)
        try:
            import ray
        except ImportError:
            raise ScrubError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
        self.ray, self.workers, self.window = ray, max(1, workers), window
        if not ray.is_initialized():
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
            self._owns_ray = True
        else:
            self._owns_ray = False

    def map(self, chunks: Iterable[Chunk]) -> Iterator[list[Outcome]]:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        window: list[Chunk] = []
        try:
            for chunk in chunks:
                window.append(chunk)
                if len(window) == self.window:
                    yield from self._run(window)
                    window = []
            if window:
                yield from self._run(window)
        finally:
            if self._owns_ray:
                self.ray.shutdown()

    def _run(self, window: list[Chunk]) -> Iterator[list[Outcome]]:
        import ray.data

        items = [{"seq": i, "chunk": pickle.dumps(c)} for i, c in enumerate(window)]
        ds = ray.data.from_items(items).map_batches(
            _ray_scrub, fn_kwargs={"options": self.options}, batch_size=1,
            batch_format="numpy",
        )  # fmt: skip
        rows = sorted(ds.take_all(), key=lambda r: int(r["seq"]))
        for row in rows:
            yield pickle.loads(row["result"])


def make_engine(name: str, options: ScrubOptions, workers: int) -> LocalEngine:
    """The engine called `name` ("local" or "ray")."""
    if name == "local":
        return LocalEngine(options, workers)
    if name == "ray":
        return RayEngine(options, workers)
    raise ScrubError(f"unknown engine {name!r}; choose local or ray")
