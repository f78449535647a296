"""From a validated request body to engine requests, and from engine events to OpenAI objects.

Everything that can be refused is checked before the first byte of a response is sent: a
stream never starts for a request that was going to fail validation.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request

from opengemma.engine import (
    EngineClosedError,
    EngineDeadError,
    GenerationRequest,
    QueueFullError,
    TokenEvent,
)
from opengemma.errors import InvalidRequestError
from opengemma.generate import ContextLengthError, fit_lengths
from opengemma.sampling import SamplingParams
from opengemma.server.errors import APIError, bad_request
from opengemma.server.schemas import ResponseFormat, _Sampling
from opengemma.server.state import ServerState

_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
TOP_P_FLOOR = 1e-6


def check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model != state.model_id:
        raise APIError(
            404,
            f"model {model!r} does not exist; this server serves "
            f"{state.model_id!r} (see GET /v1/models)",
            "model",
            "model_not_found",
        )


def sampling_params(body: _Sampling) -> SamplingParams:
    """SamplingParams of an OpenAI-style body (choice i of n gets seed + i: see `plan`)."""
    # top_p below float32's resolution would also drop the most likely token (all -inf): any
    # top_p <= TOP_P_FLOOR keeps the most likely token only, so the floor changes nothing else
    top_p = max(body.top_p, TOP_P_FLOOR)
    try:
        return SamplingParams(
            temperature=body.temperature,
            top_k=max(body.top_k, 0),
            top_p=top_p,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            seed=body.seed,
        )
    except InvalidRequestError as exc:
        raise bad_request(str(exc)) from None


def response_grammar(state: ServerState, fmt: ResponseFormat | None) -> Grammar | None:
    """The grammar of an OpenAI `response_format` (None: free text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_grammar(state, None, "response_format")
    if fmt.json_schema is None:
        raise bad_request(
            "response_format of type json_schema needs a json_schema object",
            "response_format.json_schema",
        )
    return json_grammar(state, fmt.json_schema.schema_, "response_format.json_schema.schema")


def json_grammar(state: ServerState, schema: dict | None, param: str) -> Grammar:
    return lambda: state.json_grammar.constraint(schema, param)


Grammar = Callable[[], Any]  # a fresh engine Constraint per choice


@dataclass
class Spec:
    """What one HTTP request asks for, whatever API it came through: the single input of
    `start`. Lengths in tokens; `max_tokens` None means `default_max_tokens` (or all that fit),
    and an explicit `max_tokens` that does not fit is refused."""

    prompts: list[list[int]]
    params: SamplingParams
    n: int = 1
    max_tokens: int | None = None
    default_max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    grammar: Grammar | None = None
    guard_text: str = ""  # what --guard judges (the newest user turn, or the prompt)
    prompt_param: str = "prompt"  # field names for error messages
    max_tokens_param: str = "max_tokens"
    special_text: bool = False  # control tokens kept in the text (tool-call markup)
    stop_ids: frozenset[int] | None = None  # None: the model's end-of-turn tokens


def plan(state: ServerState, spec: Spec) -> list[GenerationRequest]:
    """Engine requests for every prompt x choice, in OpenAI's index order."""
    deadline = time.monotonic() + state.config.request_timeout
    out = []
    for ids in spec.prompts:
        n_tokens = budget(state, spec, len(ids))
        for i in range(spec.n):
            seed = spec.params.seed
            params = spec.params if seed is None else replace(spec.params, seed=(seed + i) % 2**64)
            out.append(
                GenerationRequest(
                    list(ids),
                    n_tokens,
                    params,
                    spec.stop,
                    spec.stop_ids,
                    spec.logprobs,
                    spec.grammar() if spec.grammar is not None else None,
                    deadline,
                    state.watermark,
                    spec.special_text,
                )
            )
    return out


def budget(state: ServerState, spec: Spec, prompt_len: int) -> int:
    """Tokens to generate (the shared length check, answered as HTTP 400)."""
    asked = spec.max_tokens
    if asked is None and spec.default_max_tokens is not None:
        asked = min(spec.default_max_tokens, max(state.context - prompt_len, 1))
    try:
        return fit_lengths(
            state.context, prompt_len, asked, spec.max_tokens is not None, spec.max_tokens_param
        )
    except ContextLengthError as exc:
        raise bad_request(str(exc), spec.max_tokens_param, exc.code) from None
    except InvalidRequestError as exc:
        raise bad_request(str(exc), spec.prompt_param) from None


async def start(state: ServerState, spec: Spec) -> Submitted:
    """Guard the input, queue every generation, guard the output: the one path of every
    generation route. Everything that can be refused is refused here, before any output."""
    await check_input(state, spec.guard_text, spec.prompt_param)
    sub = submit(state, plan(state, spec))
    guard_output(state, sub, spec.guard_text)
    return sub


@dataclass
class Submitted:
    """Engine requests of one HTTP request, their events merged into one asyncio queue."""

    handles: list = field(default_factory=list)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    # response text -> True when the output guard blocks it; events of a choice are then held
    # back until it finishes (the policy classifier needs the whole response)
    blocks_output: Callable[[str], bool] | None = None

    def abort(self) -> None:
        for handle in self.handles:
            if handle.finish_reason is None:
                handle.abort()

    async def stream(self, request: Request | None = None) -> AsyncIterator[tuple[int, TokenEvent]]:
        """(choice index, event) until every choice has finished; watches for disconnects."""
        left = len(self.handles)
        held: dict[int, list[TokenEvent]] = {}
        try:
            while left:
                try:
                    index, event = await asyncio.wait_for(self.events.get(), timeout=0.5)
                except (TimeoutError, asyncio.TimeoutError):  # distinct types on Python 3.10
                    if request is not None and await request.is_disconnected():
                        return
                    continue
                if event.finish_reason is not None:
                    left -= 1
                if self.blocks_output is None:
                    yield index, event
                    continue
                held.setdefault(index, []).append(event)
                if event.finish_reason is None:
                    continue
                for out in await self._screen(held.pop(index)):
                    yield index, out
        finally:
            self.abort()

    async def _screen(self, events: list[TokenEvent]) -> list[TokenEvent]:
        """A finished choice's events, or one `content_filter` ending if the guard blocks it."""
        if events[-1].finish_reason not in ("stop", "length"):
            return events  # errors, aborts and timeouts pass through as they are
        text = "".join(e.text for e in events)
        if await asyncio.to_thread(self.blocks_output, text):
            return [TokenEvent("", -1, "content_filter")]
        return events


def submit(state: ServerState, requests: list[GenerationRequest]) -> Submitted:
    """Queue every request or none: a full queue is 503 with Retry-After."""
    if state.draining:
        raise draining_error(state)
    capacity = state.config.max_batch + state.config.max_queue
    if len(requests) > capacity:
        raise bad_request(
            f"this request needs {len(requests)} generations (prompts x n) but "
            f"the server holds at most {capacity}; lower n or split the prompts",
            "n",
        )
    loop = asyncio.get_running_loop()
    sub = Submitted()
    try:
        for index, req in enumerate(requests):

            def sink(event: TokenEvent, index: int = index) -> None:
                loop.call_soon_threadsafe(sub.events.put_nowait, (index, event))

            sub.handles.append(state.engine.submit(req, sink))
    except EngineDeadError as exc:
        sub.abort()
        raise APIError(503, str(exc), None, "engine_dead") from None
    except QueueFullError as exc:
        sub.abort()
        raise APIError(
            503, str(exc), None, "queue_full", {"Retry-After": str(state.config.retry_after)}
        ) from None
    except EngineClosedError:
        sub.abort()
        raise draining_error(state) from None
    except InvalidRequestError as exc:
        sub.abort()
        raise bad_request(str(exc)) from None
    return sub


def draining_error(state: ServerState) -> APIError:
    return APIError(
        503,
        "the server is shutting down; retry on another replica",
        None,
        "draining",
        {"Retry-After": str(state.config.retry_after)},
    )


def final_error(event: TokenEvent) -> APIError | None:
    """The HTTP error an abnormal finish means (None for stop/length)."""
    if event.finish_reason == "timeout":
        return APIError(
            504,
            "the request ran past the server's deadline; ask for fewer tokens",
            None,
            "deadline_exceeded",
        )
    if event.finish_reason == "error":
        return APIError(500, f"generation failed: {event.error}", None, "engine_error")
    if event.finish_reason == "abort":
        return APIError(503, "the request was aborted", None, "aborted")
    return None


def token_info(tokenizer, token: int) -> tuple[str, list[int]]:
    """A token's text and UTF-8 bytes (a byte token <0xNN> shows as `bytes:\\xNN`)."""
    piece = tokenizer.id_to_piece(token)
    if m := _BYTE.fullmatch(piece):
        value = int(m.group(1), 16)
        return f"bytes:\\x{value:02x}", [value]
    text = tokenizer.decode([token], skip_special=False)
    return text, list(text.encode())


@dataclass
class Choice:
    """A choice being assembled from events."""

    text: list[str] = field(default_factory=list)
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str | None = None


async def collect(sub: Submitted, request: Request) -> list[Choice]:
    """Run to completion; raises the HTTP error of the first abnormal finish."""
    choices = [Choice() for _ in sub.handles]
    async for index, event in sub.stream(request):
        if (error := final_error(event)) is not None:
            raise error
        choice = choices[index]
        choice.text.append(event.text)
        if event.token >= 0:
            choice.events.append(event)
        if event.finish_reason is not None:
            choice.finish_reason = event.finish_reason
    if any(c.finish_reason is None for c in choices):
        raise APIError(503, "the client went away", None, "aborted")
    return choices


def usage(prompt_tokens: int, completion_tokens: int, sub: Submitted | None = None) -> dict:
    """OpenAI's usage object; `cached_tokens`: prompt tokens the prefix cache served."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if sub is not None:
        cached = max((h.cached_tokens for h in sub.handles), default=0)  # one prompt, n choices
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


async def check_input(state: ServerState, text: str, param: str) -> None:
    """--guard input: a prompt that violates a policy is refused with 400."""
    if state.guard is None or "input" not in state.config.guard:
        return
    verdict = await asyncio.to_thread(state.guard.check_prompt, text)
    if verdict.blocked:
        state.metrics.guard_blocked.labels(**state.metrics.label, stage="input").inc()
        raise APIError(400, verdict.message(), param, "content_policy_violation")


def guard_output(state: ServerState, sub: Submitted, prompt: str) -> None:
    """--guard output: a response that violates a policy ends with finish_reason content_filter."""
    if state.guard is None or "output" not in state.config.guard:
        return
    guard, metrics = state.guard, state.metrics

    def blocks(text: str) -> bool:
        blocked = guard.check_response(prompt, text).blocked
        if blocked:
            metrics.guard_blocked.labels(**metrics.label, stage="output").inc()
        return blocked

    sub.blocks_output = blocks
