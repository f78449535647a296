"""CPU thread policy.

A decode step is hundreds of small operations; on some machines (virtual CPUs that are
time-sliced on fewer physical cores) waking a second OpenMP thread for each of them costs
milliseconds, and one thread decodes several times faster than two. Rather than guess, `auto`
times a few real decode steps of the loaded model with one thread and with all of them, once
per process, and keeps the faster. `OPENGEMMA_THREADS=N` (or `threads=N`) fixes the count.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

_chosen: int | None = None


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _time_steps(model, threads: int, steps: int = 3) -> float:
    torch.set_num_threads(threads)
    cache = model.new_cache(steps + 1)
    token = torch.tensor([[model.config.bos_token_id]], device=model.device)
    times = []
    with torch.inference_mode():
        for _ in range(steps):
            start = time.perf_counter()
            model(token, cache, last_only=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def configure_threads(model=None, threads: int | str | None = None) -> int:
    """Set torch's intra-op thread count (from `threads`, $OPENGEMMA_THREADS, or `auto`)."""
    global _chosen
    setting = threads if threads is not None else os.environ.get("OPENGEMMA_THREADS", "auto")
    if setting != "auto":
        n = max(1, int(setting))
        torch.set_num_threads(n)
        return n
    if _chosen is None:
        cpus = available_cpus()
        if cpus == 1 or model is None:
            _chosen = cpus
        else:
            _time_steps(model, 1, steps=1)  # warm-up
            one, many = _time_steps(model, 1), _time_steps(model, cpus)
            _chosen = 1 if one <= many else cpus
    torch.set_num_threads(_chosen)
    return _chosen
