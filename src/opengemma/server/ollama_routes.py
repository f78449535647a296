"""The Ollama API on the same server: /api/generate, /api/chat (with tools), /api/tags,
/api/show, /api/ps, /api/version.

Requests become the same generation Spec as the OpenAI routes; only the shapes differ: NDJSON
streaming (one JSON object per line, the last with `done: true`), durations in nanoseconds,
`options` for sampling (`num_predict`, `repeat_penalty`, ...), `format` ("json" or a JSON
schema), errors as `{"error": "..."}`. `keep_alive` is accepted; the one model stays loaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opengemma.engine import TokenEvent
from opengemma.errors import InvalidRequestError
from opengemma.sampling import SamplingParams
from opengemma.server import chat_tools
from opengemma.server.errors import APIError, bad_request, field_name
from opengemma.server.generation import Spec, Submitted, final_error, json_grammar, start
from opengemma.server.model_info import model_details, model_digest, model_info
from opengemma.server.state import ServerState

router = APIRouter()
GENERATION_ROUTES = ("/api/generate", "/api/chat")  # behind --api-key, as the OpenAI routes
VERSION = "0.12.0"  # the Ollama API version these routes follow
# Gemma's recommended sampling (the parameters Ollama's Gemma 3 models ship with)
DEFAULTS = {"temperature": 1.0, "top_k": 64, "top_p": 0.95}


class Options(BaseModel):
    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0.0, le=100.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, lt=1.0)
    seed: int | None = None
    num_predict: int | None = Field(None, ge=-2)
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    num_ctx: int | None = Field(None, ge=1)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = None


class GenerateRequest(_Request):
    prompt: str = ""
    system: str | None = None
    raw: bool = False


class ChatRequest(_Request):
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise bad_request(f"{field_name(err['loc']) or 'body'}: {err['msg']}") from None
    state: ServerState = request.app.state.server
    if parsed.model not in (state.model_id, f"{state.model_id}:latest"):
        raise APIError(404, f"model '{parsed.model}' not found; this server serves "
                       f"'{state.model_id}' (see /api/tags)")  # fmt: skip
    return parsed


def _spec(state: ServerState, body: _Request, prompt: list[int], guard_text: str) -> Spec:
    o = body.options
    values = {k: getattr(o, k) for k in DEFAULTS if getattr(o, k) is not None}
    try:
        params = SamplingParams(
            **{**DEFAULTS, **values},
            min_p=o.min_p or 0.0,
            repetition_penalty=o.repeat_penalty or 1.0,
            presence_penalty=o.presence_penalty or 0.0,
            frequency_penalty=o.frequency_penalty or 0.0,
            seed=None if o.seed is None else o.seed % 2**64,
        )
    except InvalidRequestError as exc:
        raise bad_request(str(exc)) from None
    asked = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
    if o.num_ctx is not None and asked is None:  # generate up to num_ctx in all
        asked = max(min(o.num_ctx, state.context) - len(prompt), 1)
    spec = Spec([prompt], params, 1, None, asked, list(o.stop or ()), guard_text=guard_text,
                max_tokens_param="options.num_predict")  # fmt: skip
    if body.format == "json":
        spec.grammar = json_grammar(state, None, "format")
    elif isinstance(body.format, dict):
        spec.grammar = json_grammar(state, body.format, "format")
    elif body.format not in (None, ""):
        raise bad_request("format must be 'json' or a JSON schema object", "format")
    return spec


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _stats(sub: Submitted, reason: str | None) -> dict[str, Any]:
    """The final object's fields: done_reason, token counts, durations in nanoseconds."""
    h = sub.handles[0]
    end = h.finished or time.monotonic()
    first = h.first_token or end
    return {
        "done": True,
        "done_reason": {"length": "length"}.get(reason or "", "stop"),
        "total_duration": int((end - h.arrival) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": h.prompt_tokens,
        "prompt_eval_duration": int((first - h.arrival) * 1e9),
        "eval_count": h.generated,
        "eval_duration": int((end - first) * 1e9),
    }


async def _events(sub: Submitted, request: Request) -> AsyncIterator[TokenEvent]:
    async for _, event in sub.stream(request):
        if (error := final_error(event)) is not None:
            raise error
        yield event


def _ndjson(gen: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        try:
            async for obj in gen:
                yield json.dumps(obj) + "\n"
        except APIError as exc:
            yield json.dumps({"error": exc.message}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/api/generate")
async def generate(request: Request):
    state: ServerState = request.app.state.server
    try:
        body = await _parse(request, GenerateRequest)
        tok = state.lm.tokenizer
        if body.raw:
            ids = tok.encode(body.prompt) if body.prompt else []
        else:
            messages = [{"role": "system", "content": body.system}] if body.system else []
            messages.append({"role": "user", "content": body.prompt})
            ids = chat_tools.plain_prompt(state, messages)
        sub = await start(state, _spec(state, body, ids, body.prompt))
    except APIError as exc:
        return _error(exc)
    base = {"model": body.model}

    async def objects() -> AsyncIterator[dict[str, Any]]:
        async for event in _events(sub, request):
            if event.finish_reason is None:
                if event.text:
                    yield {**base, "created_at": _now(), "response": event.text, "done": False}
                continue
            last = {**base, "created_at": _now(), "response": event.text}
            yield {**last, **_stats(sub, event.finish_reason)}

    if body.stream:
        return _ndjson(objects())
    return await _whole(objects(), "response")


async def _whole(gen: AsyncIterator[dict[str, Any]], key: str) -> JSONResponse:
    """A non-streamed answer: the text of every object joined into the last one."""
    text, last = [], None
    try:
        async for obj in gen:
            part = obj.get(key)
            text.append(part if isinstance(part, str) else (part or {}).get("content") or "")
            last = obj
    except APIError as exc:
        return _error(exc)
    if last is None:
        return _error(APIError(503, "the client went away"))
    if key == "response":
        last["response"] = "".join(text)
    else:
        last["message"]["content"] = "".join(text)
    return JSONResponse(last)


@router.post("/api/chat")
async def chat(request: Request):
    state: ServerState = request.app.state.server
    try:
        body = await _parse(request, ChatRequest)
        messages = [_openai_message(m, i) for i, m in enumerate(body.messages)]
        plan = chat_tools.tool_plan(state, body.tools, None, True, messages)
        if plan is None:
            ids = chat_tools.plain_prompt(state, messages)
        else:
            ids = chat_tools.prompt_ids(state, plan, messages)
        users = [m for m in messages if m["role"] == "user"]
        spec = _spec(state, body, ids, str(users[-1]["content"]) if users else "")
        if plan is not None:
            chat_tools.apply(state, plan, spec)
        sub = await start(state, spec)
    except APIError as exc:
        return _error(exc)
    base = {"model": body.model}
    stream = chat_tools.ToolStream(plan) if plan is not None else None

    async def objects() -> AsyncIterator[dict[str, Any]]:
        async for event in _events(sub, request):
            text = stream.feed(event.text) if stream else event.text
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if event.finish_reason is None:
                if text:
                    yield {**base, "created_at": _now(), "message": message, "done": False}
                continue
            if stream is not None:
                rest, calls = stream.finish()
                message["content"] += rest
                if calls:
                    message["tool_calls"] = [
                        {"function": {"name": c.name, "arguments": c.arguments}} for c in calls
                    ]
            yield {**base, "created_at": _now(), "message": message,
                   **_stats(sub, event.finish_reason)}  # fmt: skip

    if body.stream:
        return _ndjson(objects())
    return await _whole(objects(), "message")


def _openai_message(m: dict[str, Any], i: int) -> dict[str, Any]:
    """An Ollama chat message in the OpenAI shape the prompt formats read."""
    if not isinstance(m, dict) or "role" not in m:
        raise bad_request(f"messages[{i}] needs a role and a content", f"messages[{i}]")
    if m.get("images"):
        raise bad_request("images are not supported by Gemma text models", f"messages[{i}]")
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
    if m.get("tool_calls"):
        out["tool_calls"] = [
            {"id": f"call_{i}_{j}", "type": "function",
             "function": {"name": c["function"]["name"],
                          "arguments": json.dumps(c["function"].get("arguments") or {})}}
            for j, c in enumerate(m["tool_calls"])
        ]  # fmt: skip
    if m.get("tool_name"):
        out["name"] = m["tool_name"]
    return out


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": VERSION}


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return {"models": [_card(state)]}


def _card(state: ServerState) -> dict[str, Any]:
    path = state.lm.path
    modified = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()
    return {
        "name": state.model_id,
        "model": state.model_id,
        "modified_at": modified,
        "size": model_info(state.lm)["bytes"],
        "digest": model_digest(state),
        "details": model_details(state.lm),
    }


@router.post("/api/show")
async def show(request: Request):
    state: ServerState = request.app.state.server
    try:
        payload = await request.json()
    except ValueError:
        return _error(bad_request("the body is not valid JSON"))
    name = payload.get("model") or payload.get("name") if isinstance(payload, dict) else None
    if name not in (state.model_id, f"{state.model_id}:latest"):
        return _error(APIError(404, f"model '{name}' not found"))
    card = _card(state)
    params = "\n".join(f"{k:<16}{v}" for k, v in DEFAULTS.items())
    return {
        "modelfile": f"FROM {state.lm.path}\n" + "\n".join(
            f"PARAMETER {k} {v}" for k, v in DEFAULTS.items()),
        "parameters": params,
        "template": "{{ .Prompt }}",
        "details": card["details"],
        "model_info": model_info(state.lm)["model_info"],
        "capabilities": ["completion", "tools"],
        "modified_at": card["modified_at"],
    }  # fmt: skip


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    card = _card(state)
    on_gpu = state.config.device != "cpu"
    return {
        "models": [
            {
                **{k: card[k] for k in ("name", "model", "size", "digest", "details")},
                "expires_at": "2318-01-01T00:00:00Z",  # loaded for the life of the process
                "size_vram": card["size"] if on_gpu else 0,
                "context_length": state.context,
            }
        ]
    }
