"""Many completions at once on the continuous-batching engine (greedy unless told otherwise)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opengemma.engine import Engine, GenerationRequest, TokenEvent
from opengemma.eval import EvalError
from opengemma.sampling import SamplingParams


@dataclass(frozen=True)
class Job:
    """One completion: prompt token ids (BOS included), at most `max_tokens` new tokens, cut
    before the first of `stop` (strings)."""

    prompt_ids: Sequence[int]
    max_tokens: int
    stop: Sequence[str] = ()
    params: SamplingParams = field(default_factory=SamplingParams)


def generate_many(
    lm,
    jobs: Sequence[Job],
    max_batch: int = 8,
    on_done: Callable[[int], None] | None = None,
) -> list[str]:
    """The completion text of every job, in order; `max_batch` rows decode together.

    on_done(i) is called (on this thread) as job i's result is collected.
    """
    if not jobs:
        return []
    engine = Engine(lm.model, lm.tokenizer, max_batch=max(1, max_batch), max_queue=len(jobs))
    engine.start()
    try:
        inboxes: list[queue.Queue[TokenEvent]] = []
        for job in jobs:
            inbox: queue.Queue[TokenEvent] = queue.Queue()
            request = GenerationRequest(
                list(job.prompt_ids), job.max_tokens, job.params, stop=list(job.stop)
            )
            engine.submit(request, inbox.put)
            inboxes.append(inbox)
        out = []
        for i, inbox in enumerate(inboxes):
            out.append(_collect(inbox))
            if on_done is not None:
                on_done(i)
        return out
    finally:
        engine.shutdown()


def _collect(inbox: queue.Queue[TokenEvent]) -> str:
    parts = []
    while True:
        event = inbox.get()
        if event.error is not None:
            raise EvalError(f"generation failed: {event.error}")
        parts.append(event.text)
        if event.finish_reason is not None:
            return "".join(parts)
