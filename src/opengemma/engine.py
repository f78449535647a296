"""Continuous batching: many generation requests share one model, one decode step at a time.

Requests wait in a bounded queue, join the running batch as soon as a slot is free, and leave it
the step they finish, so a short request never waits for a long one. Each engine iteration
spends a bounded budget of prompt tokens on prefill (new rows, in arrival order) and then runs
one batched decode step for every row that is generating: `model(tokens (B, 1), [cache_0, ...,
cache_B-1], last_only=True)` reads the weights once for all rows. Prefill in chunks between
decode steps keeps running streams flowing while a long prompt is read.

The loop runs in one background thread (torch releases the GIL during compute). Results leave
as `TokenEvent`s through a per-request sink, a plain callable invoked on the engine thread; the
server forwards them into asyncio, `Engine.generate` into a blocking iterator.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import torch

from opengemma.engine_requests import (
    Constraint,
    EngineClosedError,
    EngineDeadError,
    EngineError,
    FinishReason,
    GenerationRequest,
    QueueFullError,
    RequestHandle,
    TokenEvent,
)
from opengemma.generate import TextRelease, check_lengths, prefill
from opengemma.model import GemmaModel
from opengemma.prefix_cache import PrefixCache
from opengemma.sampling import Sampler
from opengemma.speculative import METHODS, DraftPolicy, rewind, unsupported, widen_rings

__all__ = ["Constraint", "Engine", "EngineClosedError", "EngineDeadError", "EngineError",
           "FinishReason", "GenerationRequest", "QueueFullError", "RequestHandle", "TokenEvent"]

log = logging.getLogger("opengemma.engine")
MAX_DRAFT = 8  # most drafted tokens verified in one step

class _Row:
    """Engine-thread state of a running request."""

    def __init__(self, handle: RequestHandle, model: GemmaModel, tokenizer, stop_ids: set[int]):
        req = handle.request
        self.handle = handle
        self.budget = check_lengths(model, len(req.prompt_ids), req.max_tokens)
        self.cache = model.new_cache(len(req.prompt_ids) + self.budget)
        self.tokens = torch.empty(len(req.prompt_ids) + self.budget, dtype=torch.long)
        self.tokens[: len(req.prompt_ids)] = torch.tensor(list(req.prompt_ids), dtype=torch.long)
        self.n = len(req.prompt_ids)  # tokens in `tokens` so far
        self.prefilled = 0  # prompt tokens already in the cache
        extra = []
        if req.watermark is not None and not req.params.greedy:  # greedy text cannot carry one
            from opengemma.safety.watermark import WatermarkProcessor

            extra.append(WatermarkProcessor(req.watermark))
        self.sampler = Sampler(req.params, extra=extra, prompt_len=len(req.prompt_ids))
        stop_ids = set(req.stop_ids) if req.stop_ids is not None else stop_ids
        self.release = TextRelease(tokenizer, req.stop, stop_ids, not req.special_text)
        self.last_token: int | None = None  # sampled, not yet fed to the model
        self.drafts: DraftPolicy | None = None  # speculative decoding, once the prompt is read

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.handle.request.prompt_ids)


class Engine:
    """The continuous-batching scheduler. Start it, `submit` requests, `shutdown` at the end.

    max_batch: rows generating at once (each holds its own KV cache).
    max_queue: requests allowed to wait for a slot; beyond it `submit` raises QueueFullError.
    prefill_chunk: prompt tokens read per engine iteration, between two decode steps.
    prefix_cache_bytes: bound of the automatic prefix cache (0: off); see opengemma.prefix_cache.
    speculative: "ngram" verifies prompt-lookup drafts (opengemma.speculative) for a request that
    decodes alone, with the native int8 step; the tokens are exactly those of plain decoding.
    """

    def __init__(
        self,
        model: GemmaModel,
        tokenizer,
        max_batch: int = 8,
        max_queue: int = 64,
        prefill_chunk: int = 256,
        stop_ids: Sequence[int] | None = None,
        prefix_cache_bytes: int = 0,
        speculative: str | None = None,
    ):
        if max_batch < 1 or max_queue < 0 or prefill_chunk < 1:
            raise EngineError("max_batch and prefill_chunk must be >= 1, max_queue >= 0")
        if speculative is not None and speculative not in METHODS:
            raise EngineError(f"unknown speculative method {speculative!r}; use {METHODS[0]}")
        self.speculative = speculative
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        default_stops = {tokenizer.eos_id, tokenizer.end_of_turn_id}
        self.stop_ids = set(stop_ids) if stop_ids is not None else default_stops - {None}
        self.prefix_cache = PrefixCache(model.config, prefix_cache_bytes)  # 0 bytes: off
        self.on_finish: Callable[[RequestHandle], None] | None = None  # called on engine thread
        self._waiting: deque[RequestHandle] = deque()
        self._running: list[_Row] = []
        self._cond = threading.Condition()
        self._closed = False
        self._stop = False
        self._thread: threading.Thread | None = None
        # test hook: called with each request's handle before each of its sampling steps; an
        # exception it raises is that step failing
        self.fault: Callable[[RequestHandle], None] | None = None
        self.fatal: str | None = None  # why the engine thread stopped for good (None: it runs)

    # ---- public surface (any thread) ------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._waiting and not self._running

    @property
    def alive(self) -> bool:
        """The engine thread runs and can take work."""
        return self.fatal is None and self._thread is not None and self._thread.is_alive()

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="opengemma-engine", daemon=True)
            self._thread.start()
        return self

    def submit(
        self, request: GenerationRequest, sink: Callable[[TokenEvent], None]
    ) -> RequestHandle:
        """Queue a request; its events go to `sink` (called on the engine thread)."""
        check_lengths(self.model, len(request.prompt_ids), request.max_tokens)
        handle = RequestHandle(request, sink)
        with self._cond:
            if self.fatal is not None:
                raise EngineDeadError(
                    f"the engine stopped after an internal error ({self.fatal}); "
                    "the server must be restarted"
                )
            if self._closed:
                raise EngineClosedError("the server is shutting down; send the request elsewhere")
            if len(self._waiting) >= self.max_queue and len(self._running) >= self.max_batch:
                raise QueueFullError(
                    f"{len(self._waiting)} requests are already waiting; retry in a few seconds"
                )
            self._waiting.append(handle)
            self._cond.notify()
        return handle

    def generate(self, request: GenerationRequest) -> Iterator[TokenEvent]:
        """Blocking iterator over a request's events (for batch jobs and scripts)."""
        events: queue.Queue[TokenEvent] = queue.Queue()
        handle = self.submit(request, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            handle.abort()

    def close(self) -> None:
        """Refuse new requests; the ones already submitted run to completion."""
        with self._cond:
            self._closed = True

    def abort_all(self) -> None:
        with self._cond:
            for handle in list(self._waiting) + [r.handle for r in self._running]:
                handle.abort()
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is waiting or running; False if `timeout` s passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.idle:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Abort everything and stop the engine thread."""
        self.close()
        self.abort_all()
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- engine thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        reason, error = "abort", None
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not self._stop and not self._waiting and not self._running:
                            self._cond.wait()
                        if self._stop:
                            break
                    try:
                        self._iteration()
                    except Exception as exc:  # a step no single request owns: fail its rows
                        message = self._log_failure(exc, "an engine step")
                        for row in list(self._running):
                            self._finish(row, "error", message)
        except BaseException as exc:  # the loop itself cannot go on: say so, fail everything
            reason, error = "error", self._log_failure(exc, "the engine loop")
            self.fatal = error
        finally:
            with self._cond:
                if self.fatal is not None:
                    self._closed = True
                waiting = list(self._waiting)
                self._waiting.clear()
            for row in list(self._running):
                self._finish(row, reason, error)
            for handle in waiting:
                self._emit_final(handle, TokenEvent("", -1, reason, error=error), reason)

    @staticmethod
    def _log_failure(exc: BaseException, where: str) -> str:
        """Log an unexpected exception once, with its traceback; the message for clients."""
        message = f"{type(exc).__name__}: {exc}"
        log.error("opengemma engine: %s failed: %s", where, message, exc_info=exc)
        return message

    def _iteration(self) -> None:
        self._drop_expired()
        self._admit()
        self._prefill_step()
        self._decode_step()

    def _drop_expired(self) -> None:
        now = time.monotonic()
        with self._cond:
            waiting = list(self._waiting)
        for handle in waiting:
            reason = self._cut_reason(handle, now)
            if reason is not None:
                with self._cond:
                    self._waiting.remove(handle)
                self._emit_final(handle, TokenEvent("", -1, reason), reason)
        for row in list(self._running):
            reason = self._cut_reason(row.handle, now)
            if reason is not None:
                self._finish(row, reason)

    @staticmethod
    def _cut_reason(handle: RequestHandle, now: float) -> FinishReason | None:
        if handle.aborted.is_set():
            return "abort"
        deadline = handle.request.deadline
        return "timeout" if deadline is not None and now >= deadline else None

    def _admit(self) -> None:
        while len(self._running) < self.max_batch:
            with self._cond:
                if not self._waiting:
                    return
                handle = self._waiting.popleft()
            try:
                self._running.append(_Row(handle, self.model, self.tokenizer, self.stop_ids))
            except Exception as exc:  # bad request or out of memory: fail this one only
                self._emit_final(handle, TokenEvent("", -1, "error", error=str(exc)), "error")

    def _prefill_step(self) -> None:
        """Spend up to `prefill_chunk` prompt tokens on rows still reading their prompt."""
        budget = self.prefill_chunk
        for row in [r for r in self._running if r.prefilling]:
            if budget <= 0:
                return
            ids = row.handle.request.prompt_ids
            try:
                if row.prefilled == 0:
                    restored = self.prefix_cache.restore(ids, row.cache)
                    row.prefilled = row.handle.cached_tokens = restored
                take = ids[row.prefilled : row.prefilled + budget]
                logits = prefill(self.model, take, row.cache, chunk=self.prefill_chunk)
                row.prefilled += len(take)
                if not row.prefilling:
                    self.prefix_cache.store(ids, row.cache)
                    self._start_drafting(row)
            except Exception as exc:
                self._fail(row, exc)
                continue
            budget -= len(take)
            if not row.prefilling:
                self._sample(row, logits)

    def _start_drafting(self, row: _Row) -> None:
        """Give a row whose prompt is read what speculation needs: ring layers `MAX_DRAFT`
        slots wider (a verify chunk never evicts a key it still needs) and a draft policy."""
        if self.speculative is not None and unsupported(self.model) is None:
            widen_rings(row.cache, MAX_DRAFT)
            row.drafts = DraftPolicy(row.handle.request.prompt_ids, MAX_DRAFT)

    def _decode_step(self) -> None:
        rows = [r for r in self._running if r.last_token is not None]
        if not rows:
            return
        if len(rows) == 1 and rows[0].drafts is not None:  # alone: the weights' reads are free
            self._speculate(rows[0])
            return
        device = self.model.device
        step = torch.tensor([[r.last_token] for r in rows], dtype=torch.long, device=device)
        try:
            logits = self.model(step, [r.cache for r in rows], last_only=True)[:, -1]  # (B, V)
        except Exception as exc:
            if len(rows) == 1:
                self._fail(rows[0], exc)
                return
            # find the rows it concerns: each row alone (caches advance only on success)
            for row in rows:
                self._decode_alone(row)
            return
        for row, row_logits in zip(rows, logits, strict=True):
            self._sample(row, row_logits)

    def _decode_alone(self, row: _Row) -> None:
        step = torch.tensor([[row.last_token]], dtype=torch.long, device=self.model.device)
        try:
            logits = self.model(step, [row.cache], last_only=True)[0, -1]
        except Exception as exc:
            self._fail(row, exc)
            return
        self._sample(row, logits)

    def _speculate(self, row: _Row) -> None:
        """One native call runs the last token and a draft; the sampler then picks each next
        token from those rows in turn while it agrees with the draft (see opengemma.speculative);
        the drafted positions after its first own choice leave the cache."""
        handle = row.handle
        draft = row.drafts.draft(row.budget - handle.generated - 1)
        chunk = torch.tensor([row.last_token, *draft], dtype=torch.long)
        try:
            rows = self.model.native_decoder.step_chunk(chunk, row.cache)
        except Exception as exc:
            self._fail(row, exc)
            return
        if rows is None:  # the weights changed under the decoder: decode plainly from now on
            row.drafts = None
            self._decode_alone(row)
            return
        accepted = 0
        for i, logits in enumerate(rows):
            self._sample(row, logits)
            if row not in self._running:  # it finished (or failed) at this token
                break
            if i == len(draft) or row.last_token != draft[i]:
                break
            accepted += 1
        if row.cache is not None:  # still running
            rewind(row.cache, len(draft) - accepted)
        row.drafts.settle(len(draft), accepted)
        handle.drafted += len(draft)
        handle.accepted += accepted

    def _fail(self, row: _Row, exc: Exception) -> None:
        """An exception while stepping `row`: that request ends with an error, nothing else."""
        self._finish(row, "error", self._log_failure(exc, f"request {row.handle.id}"))

    def _sample(self, row: _Row, logits: torch.Tensor) -> None:
        """Draw the next token from float32 `logits` (vocab,), emit it, handle stops."""
        try:
            event = self._next_event(row, logits)
        except Exception as exc:  # sampling, a grammar, decoding an id the tokenizer lacks...
            self._fail(row, exc)
            return
        handle = row.handle
        if event.finish_reason is not None:
            reason = event.finish_reason
            self._finish(row, reason, event=event)
        else:
            row.last_token = event.token
            _deliver(handle, event)

    def _next_event(self, row: _Row, logits: torch.Tensor) -> TokenEvent:
        req, handle = row.handle.request, row.handle
        if self.fault is not None:
            self.fault(handle)
        logits = logits.float().cpu()  # samplers, constraints and seeds live on the CPU
        if req.constraint is not None:
            logits = logits.masked_fill(~req.constraint.allowed(), float("-inf"))
        processed = row.sampler.process(row.tokens[: row.n], logits)
        token = row.sampler.choose(processed)
        if req.constraint is not None:
            req.constraint.advance(token)
        logprob, top = _logprobs(processed, token, req.logprobs)
        text, reason = row.release.add(token, last=handle.generated + 1 >= row.budget)
        if row.drafts is not None:
            row.drafts.append(token)
        row.tokens[row.n] = token
        row.n += 1
        handle.generated += 1
        if handle.first_token is None:
            handle.first_token = time.monotonic()
        return TokenEvent(text, token, reason, logprob, top)

    def _finish(
        self,
        row: _Row,
        reason: FinishReason,
        error: str | None = None,
        event: TokenEvent | None = None,
    ) -> None:
        if row in self._running:
            self._running.remove(row)
        if reason in ("stop", "length") and row.cache is not None:
            fed = row.n - 1  # the last sampled token was never fed; a verify chunk's drafts were
            if row.cache.length > fed:
                rewind(row.cache, row.cache.length - fed)
            try:  # prompt + generated tokens, for the next turn of a chat
                self.prefix_cache.store(row.tokens, row.cache)
            except Exception as exc:
                self._log_failure(exc, "storing a prefix")
        row.cache = None  # free the KV cache now, not when the handle is collected
        if event is None:
            event = TokenEvent("", -1, reason, error=error)
        self._emit_final(row.handle, event, reason)

    def _emit_final(self, handle: RequestHandle, event: TokenEvent, reason: FinishReason) -> None:
        handle.finished = time.monotonic()
        handle.finish_reason = reason
        _deliver(handle, event)
        if self.on_finish is not None:
            try:
                self.on_finish(handle)
            except Exception:  # a metrics hook must never stop the engine
                pass


def _deliver(handle: RequestHandle, event: TokenEvent) -> None:
    """Hand an event to the request's sink; a consumer that went away aborts its request."""
    try:
        handle.sink(event)
    except Exception:
        handle.abort()


def _logprobs(
    processed: torch.Tensor, token: int, k: int | None
) -> tuple[float | None, list[tuple[int, float]] | None]:
    """log P(token) and the k most likely (id, log P) under the processed logits (vocab,)."""
    if k is None:
        return None, None
    logp = torch.log_softmax(processed, dim=-1)
    top: list[tuple[int, float]] = []
    if k > 0:
        values, ids = torch.topk(logp, k)
        top = [(int(i), float(v)) for i, v in zip(ids, values, strict=True)]
    return float(logp[token]), top
