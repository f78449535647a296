"""The OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from opengemma.engine import TokenEvent
from opengemma.server import chat_tools
from opengemma.server.errors import bad_request, error_body
from opengemma.server.generation import (
    Choice,
    Spec,
    Submitted,
    check_model,
    collect,
    final_error,
    response_grammar,
    sampling_params,
    start,
    token_info,
    usage,
)
from opengemma.server.schemas import ChatCompletionRequest, CompletionRequest
from opengemma.server.state import ServerState

router = APIRouter()


def state_of(request: Request) -> ServerState:
    return request.app.state.server


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    card = {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "opengemma",
        "max_model_len": state.context,
    }
    return {"object": "list", "data": [card]}


def completion_prompts(state: ServerState, body: CompletionRequest) -> list[list[int]]:
    tok = state.lm.tokenizer
    if body.echo:
        raise bad_request("echo is not supported; send the prompt back yourself", "echo")
    if body.suffix:
        raise bad_request("suffix (fill-in-the-middle) is not supported", "suffix")
    if isinstance(body.prompt, str):
        return [tok.encode(body.prompt) if body.prompt else []]
    if all(isinstance(p, int) for p in body.prompt):
        bad = [t for t in body.prompt if t >= tok.vocab_size]
        if bad:
            raise bad_request(
                f"token id {bad[0]} is outside the vocabulary (0..{tok.vocab_size - 1})", "prompt"
            )
        return [list(body.prompt)]
    return [tok.encode(p) if p else [] for p in body.prompt]


def stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def last_user_text(body: ChatCompletionRequest) -> str:
    """The newest user turn: what the input guard judges and the output guard pairs with."""
    for message in reversed(body.messages):
        if message.role == "user":
            content = message.content or ""
            return content if isinstance(content, str) else "".join(p.text for p in content)
    return ""


def chat_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    for m in messages:
        m.setdefault("content", "")
    return messages


def completion_logprobs(tok, events: list[TokenEvent]) -> dict[str, Any]:
    """The legacy completions logprobs object."""
    tokens, offsets, top, offset = [], [], [], 0
    for e in events:
        text, _ = token_info(tok, e.token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(e.text)
        top.append({token_info(tok, t)[0]: lp for t, lp in e.top_logprobs or []})
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in events],
        "top_logprobs": top,
        "text_offset": offsets,
    }


def chat_logprobs(tok, events: list[TokenEvent]) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        text, raw = token_info(tok, token)
        return {"token": text, "logprob": logprob, "bytes": raw}

    content = []
    for e in events:
        item = entry(e.token, e.logprob)
        item["top_logprobs"] = [entry(t, lp) for t, lp in e.top_logprobs or []]
        content.append(item)
    return {"content": content}


async def sse(
    state: ServerState,
    sub: Submitted,
    request: Request,
    include_usage: bool,
    prompt_tokens: int,
    make_chunk: Callable[[int, TokenEvent | None], dict],
    base: dict[str, Any],
) -> AsyncIterator[str]:
    """SSE lines `data: {json}`, ending with `data: [DONE]`; an abnormal end sends an error."""
    generated = 0
    for index in range(len(sub.handles)):
        if (first := make_chunk(index, None)) is not None:
            yield f"data: {json.dumps({**base, **first})}\n\n"
    async for index, event in sub.stream(request):
        if (error := final_error(event)) is not None:
            body = error_body(error.status, error.message, error.param, error.code)
            yield f"data: {json.dumps(body)}\n\n"
            break
        generated += event.token >= 0
        if event.text or event.finish_reason or event.logprob is not None:
            if (part := make_chunk(index, event)) is None:
                continue  # text held back (a tool call being read)
            chunk = {**base, **part}
            if include_usage:
                chunk["usage"] = None
            yield f"data: {json.dumps(chunk)}\n\n"
    else:
        if include_usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage(prompt_tokens, generated, sub)})}\n\n"  # noqa: E501
    yield "data: [DONE]\n\n"


def streaming(gen: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(gen, media_type="text/event-stream", headers=headers)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = state_of(request)
    check_model(state, body.model)
    prompts = completion_prompts(state, body)
    prompt_text = "\n".join(state.lm.tokenizer.decode(p) for p in prompts)
    spec = Spec(
        prompts,
        sampling_params(body),
        body.n,
        body.max_tokens,
        stop=stop_list(body.stop),
        logprobs=body.logprobs,
        grammar=response_grammar(state, body.response_format),
        guard_text=prompt_text,
    )
    sub = await start(state, spec)
    prompt_tokens = sum(len(p) for p in prompts)
    base = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": state.model_id,
    }
    tok = state.lm.tokenizer

    def choice(index: int, event: TokenEvent | None, c: Choice | None = None) -> dict | None:
        if event is None and c is None:
            return None
        events = c.events if c else ([event] if event.token >= 0 else [])
        text = "".join(c.text) if c else event.text
        logprobs = completion_logprobs(tok, events) if body.logprobs is not None else None
        reason = c.finish_reason if c else event.finish_reason
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}

    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        chunk = lambda i, e: None if e is None else {"choices": [choice(i, e)]}  # noqa: E731
        return streaming(sse(state, sub, request, include, prompt_tokens, chunk, base))
    choices = await collect(sub, request)
    generated = sum(len(c.events) for c in choices)
    return {
        **base,
        "choices": [choice(i, None, c) for i, c in enumerate(choices)],
        "usage": usage(prompt_tokens, generated, sub),
    }


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = state_of(request)
    check_model(state, body.model)
    messages = chat_messages(body)
    tools = chat_tools.tool_plan(
        state,
        [t.model_dump() for t in body.tools or ()],
        body.tool_choice,
        body.parallel_tool_calls,
        messages,
    )
    ids = (
        chat_tools.plain_prompt(state, messages)
        if tools is None
        else chat_tools.prompt_ids(state, tools, messages)
    )
    top = (body.top_logprobs or 0) if body.logprobs else None
    spec = Spec(
        [ids],
        sampling_params(body),
        body.n,
        body.max_completion_tokens or body.max_tokens,
        state.config.default_max_tokens,
        stop_list(body.stop),
        top,
        response_grammar(state, body.response_format),
        last_user_text(body),
        "messages",
        "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
    )
    if tools is not None:
        chat_tools.apply(state, tools, spec)
    sub = await start(state, spec)
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_id,
    }
    tok = state.lm.tokenizer
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        base["object"] = "chat.completion.chunk"

        streams = [chat_tools.ToolStream(tools) for _ in range(body.n)] if tools else None

        chunk = functools.partial(chat_chunk, streams, tok, top)
        return streaming(sse(state, sub, request, include, len(ids), chunk, base))
    choices = await collect(sub, request)
    out = []
    for i, c in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(c.text)}
        reason = c.finish_reason
        if tools is not None:
            message["content"], calls = tools.split(message["content"])
            if calls:
                message["tool_calls"] = chat_tools.openai_calls(calls)
                reason = "tool_calls"
        lp = chat_logprobs(tok, c.events) if top is not None else None
        out.append({"index": i, "message": message, "logprobs": lp, "finish_reason": reason})
    generated = sum(len(c.events) for c in choices)
    return {**base, "choices": out, "usage": usage(len(ids), generated, sub)}


def chat_chunk(
    streams: list | None, tok: Any, top: int | None, index: int, event: TokenEvent | None
) -> dict | None:
    """One streamed chat chunk of choice `index`: the opening role delta (event None), a token's
    text and logprobs, or (with tools) what the choice's ToolStream releases."""
    if event is not None and streams is not None:
        return tool_chunk(streams[index], index, event)
    if event is None:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        return {"choices": [choice]}
    delta = {"content": event.text} if event.text else {}
    lp = chat_logprobs(tok, [event]) if top is not None and event.token >= 0 else None
    choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": event.finish_reason}
    return {"choices": [choice]}


def tool_chunk(stream: chat_tools.ToolStream, index: int, event: TokenEvent) -> dict | None:
    """A streamed chat chunk of a request with tools: text as it comes, calls at the end."""
    text, reason = stream.feed(event.text), event.finish_reason
    delta: dict[str, Any] = {}
    if reason is not None:
        rest, calls = stream.finish()
        text += rest
        if calls:
            delta["tool_calls"] = chat_tools.openai_calls(calls, streamed=True)
            reason = "tool_calls"
    if text:
        delta["content"] = text
    if not delta and reason is None:
        return None
    return {
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]
    }
