"""Embedding routes: OpenAI's POST /v1/embeddings and Ollama's POST /api/embed.

Both feed one EmbedEngine (built on the first request), which embeds the inputs of all
requests waiting at that moment in one batched pass. Rules for bad input, the same on both:
an empty string, an empty list or an empty token list is a 400 naming `input[i]`;
`dimensions` outside 1..dim is a 400 naming `dimensions`; an input longer than the model's
limit is a 400 on /v1/embeddings (as OpenAI does) unless the body says `"truncate": true`, and
is cut to the limit (keeping <eos>) on /api/embed unless it says `"truncate": false` (as Ollama
does). /v1/embeddings answers errors in OpenAI's shape, /api/embed in Ollama's
(`{"error": "..."}`).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opengemma.errors import InvalidRequestError
from opengemma.server.errors import APIError, bad_request
from opengemma.server.generation import check_model

router = APIRouter()
ROUTES = ("/v1/embeddings", "/api/embed")
MAX_INPUTS = 2048  # per request (OpenAI's limit)
_LOCK = threading.Lock()


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings. `input`: a text, texts, token ids, or lists of token ids."""

    model_config = ConfigDict(extra="ignore")
    input: str | list[Any]
    model: str | None = None
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    task: str | None = Field(None, description="opengemma: a task prompt name (query, ...)")
    truncate: bool = Field(False, description="opengemma: cut over-long inputs instead of 400")


class OllamaEmbedRequest(BaseModel):
    """POST /api/embed (Ollama). `options` and `keep_alive` are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[Any]
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: Any = None


def engine_of(request: Request):
    """The app's EmbedEngine, built (with its Embedder) on first use."""
    app_state = request.app.state
    with _LOCK:
        if getattr(app_state, "embed_engine", None) is None:
            from opengemma.embed import Embedder
            from opengemma.embed.engine import EmbedEngine

            start = time.perf_counter()
            app_state.embed_engine = EmbedEngine(Embedder(app_state.server.lm))
            app_state.embed_load_ns = int((time.perf_counter() - start) * 1e9)
            return app_state.embed_engine, app_state.embed_load_ns
    return app_state.embed_engine, 0


def token_lists(embedder, items: str | list[Any], truncate: bool, task: str | None):
    """(token-id lists, task prompt length) of a body's `input`: texts or token ids."""
    if isinstance(items, str):
        items = [items]
    if not items:
        raise InvalidRequestError("input is an empty list; give at least one text")
    if len(items) > MAX_INPUTS:
        raise InvalidRequestError(f"input holds {len(items)} items; send at most {MAX_INPUTS}")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in items):
        items = [items]  # one input given as token ids
    if all(isinstance(t, list) for t in items):
        if task is not None:
            raise InvalidRequestError("task: a task prompt applies to text input, not token ids")
        return embedder.check_ids(items, truncate), 0
    prefix = embedder.prompt(task)
    ids = embedder.tokenize(items, task, truncate)
    return ids, (len(embedder.tokenizer.encode(prefix)) if prefix else 0)


async def _embed(request: Request, items, dimensions, truncate, task):
    engine, load_ns = engine_of(request)
    embedder = engine.embedder
    dims = embedder.check_dimensions(dimensions)
    ids, prompt_len = token_lists(embedder, items, truncate, task)
    vectors = await asyncio.wrap_future(engine.submit(ids, dims, prompt_len))
    return vectors, sum(len(i) for i in ids), load_ns


def _param(message: str) -> str:
    """The field an Embedder message names first (they start with it)."""
    return next((name for name in ("dimensions", "task") if message.startswith(name)), "input")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state = request.app.state.server
    check_model(state, body.model)
    try:
        vectors, tokens, _ = await _embed(request, body.input, body.dimensions, body.truncate,
                                          body.task)  # fmt: skip
    except InvalidRequestError as exc:
        raise bad_request(str(exc), _param(str(exc))) from None
    data = []
    for i, row in enumerate(vectors):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(row.astype("<f4").tobytes()).decode()
        else:
            value = row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": state.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def _ollama_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post("/api/embed")
async def ollama_embed(request: Request):
    state = request.app.state.server
    start = time.perf_counter_ns()
    try:
        body = OllamaEmbedRequest.model_validate(await request.json())
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return _ollama_error(400, f"{where}: {err['msg']}" if where else err["msg"])
    except ValueError:
        return _ollama_error(400, "the body is not valid JSON")
    if body.model not in (state.model_id, f"{state.model_id}:latest"):
        return _ollama_error(404, f"model {body.model!r} not found; this server serves "
                             f"{state.model_id!r}")  # fmt: skip
    try:
        vectors, tokens, load_ns = await _embed(request, body.input, body.dimensions,
                                                body.truncate, None)  # fmt: skip
    except (InvalidRequestError, APIError) as exc:
        return _ollama_error(400, str(exc))
    return {"model": body.model, "embeddings": vectors.tolist(),
            "total_duration": time.perf_counter_ns() - start, "load_duration": load_ns,
            "prompt_eval_count": tokens}  # fmt: skip
