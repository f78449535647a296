"""What goes into the engine and what comes out: requests, token events, handles, errors.

A `GenerationRequest` says what to generate (prompt ids, length, sampling, stops, a grammar, a
deadline); `Engine.submit` returns its `RequestHandle` (timings, counters, `abort`) and delivers
`TokenEvent`s to the request's sink. The engine re-exports all of these.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from opengemma.errors import OpenGemmaError
from opengemma.sampling import SamplingParams

FinishReason = str  # "stop" | "length" | "abort" | "timeout" | "error"


class EngineError(OpenGemmaError):
    """The engine cannot take a request (queue full, shutting down)."""


class QueueFullError(EngineError):
    """The waiting queue is full; retry after a short pause."""


class EngineClosedError(EngineError):
    """The engine is draining or stopped and takes no new requests."""


class EngineDeadError(EngineClosedError):
    """The engine thread stopped after an internal error; the process must be restarted."""


class Constraint(Protocol):
    """Restricts which tokens may come next (e.g. a JSON-schema grammar)."""

    def allowed(self) -> torch.Tensor:
        """Boolean (vocab,) tensor: True where the token keeps the output valid."""

    def advance(self, token: int) -> None:
        """Record that `token` was generated."""


@dataclass
class GenerationRequest:
    """One completion to generate. Lengths are in tokens; `deadline` is `time.monotonic()` s."""

    prompt_ids: Sequence[int]
    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    stop_ids: frozenset[int] | None = None  # None: the engine's default (EOS, <end_of_turn>)
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's and k alternatives'
    constraint: Constraint | None = None
    deadline: float | None = None
    watermark: Any = None  # a safety.watermark.WatermarkConfig: SynthID Text on sampled output
    special_text: bool = False  # control tokens appear in the text (tool-call markup)


@dataclass
class TokenEvent:
    """One generated token and the text it made final (possibly empty, see stream_generate).

    `logprob` and `top_logprobs` (token id, log-probability) come from the distribution the
    token was drawn from (after penalties, temperature and truncation). The last event of a
    request has `finish_reason`; an "error" event carries `error` and no token (token = -1).
    """

    text: str
    token: int
    finish_reason: FinishReason | None = None
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    error: str | None = None


class RequestHandle:
    """A submitted request: its timings (monotonic seconds) and a way to abort it."""

    _ids = itertools.count()

    def __init__(self, request: GenerationRequest, sink: Callable[[TokenEvent], None]):
        self.id = next(self._ids)
        self.request = request
        self.sink = sink
        self.arrival = time.monotonic()
        self.first_token: float | None = None
        self.finished: float | None = None
        self.generated = 0
        self.finish_reason: FinishReason | None = None
        self.aborted = threading.Event()
        self.cached_tokens = 0  # prompt tokens taken from the prefix cache
        self.drafted = 0  # speculative decoding: tokens proposed for this request
        self.accepted = 0  # ... and those the sampler chose too

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_ids)

    def abort(self) -> None:
        """Stop generating at the next step and free the cache (safe from any thread)."""
        self.aborted.set()
