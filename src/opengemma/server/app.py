"""The FastAPI app: routes, error shapes, and the guard in front of them (body size, API keys,
HTTP metrics). `create_app(state)` takes a ready ServerState; `build_state` loads the model."""

from __future__ import annotations

import hmac
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from opengemma.engine import Engine
from opengemma.errors import InvalidRequestError
from opengemma.server import (
    embed_routes,
    ollama_routes,
    openai_routes,
    vertex,
    watermark_routes,
    webui_routes,
)
from opengemma.server.constrain import JsonGrammar
from opengemma.server.errors import APIError, error_body, error_response, field_name
from opengemma.server.metrics import Metrics
from opengemma.server.state import ServerConfig, ServerState

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def default_model_id(model: str | None) -> str:
    if model is None:
        return "gemma-3-270m"
    path = Path(model)
    return path.stem if path.suffix == ".gguf" else path.name


def build_state(config: ServerConfig) -> ServerState:
    """Load the model and start the engine."""
    from opengemma.api import load

    lm = load(config.model, dtype=config.dtype, device=config.device, quant=config.quant)
    engine = Engine(
        lm.model,
        lm.tokenizer,
        config.max_batch,
        config.max_queue,
        config.prefill_chunk,
        sorted(lm.stop_ids),
        config.prefix_cache_bytes,
        config.speculative,
    )
    model_id = config.model_id or default_model_id(config.model)
    metrics = Metrics(engine, model_id)
    engine.on_finish = metrics.observe
    engine.fault = fault_hook(os.environ.get(FAULT_ENV), lm.tokenizer)
    engine.start()
    grammar = JsonGrammar(lm.tokenizer, sorted(lm.stop_ids))
    threading.Thread(target=grammar.warm, name="opengemma-grammar", daemon=True).start()
    state = ServerState(config, lm, engine, model_id, metrics, grammar, created=int(time.time()))
    state.guard = build_guard(config, lm)
    if config.watermark is not None:
        from opengemma.safety.watermark import WatermarkConfig

        state.watermark = WatermarkConfig.load(config.watermark)
    return state


def build_guard(config: ServerConfig, lm):
    """The policy classifier for --guard: its own checkpoint, or the served model's weights
    (a separate float32 copy when the served weights are int8 blocks)."""
    if not config.guard:
        return None
    from opengemma.safety.classifier import SafetyClassifier
    from opengemma.safety.guard import Guard
    from opengemma.safety.policies import resolve_policies

    if config.guard_model is not None or getattr(lm, "quant", "none") != "none":
        classifier = SafetyClassifier.load(config.guard_model or config.model)
    else:
        classifier = SafetyClassifier(lm)
    policies = resolve_policies(list(config.guard_policies) or None)
    guard = Guard(classifier, policies, config.guard_threshold)
    if guard.note:
        print(f"opengemma serve: {guard.note}", file=sys.stderr, flush=True)
    return guard


FAULT_ENV = "OPENGEMMA_TEST_FAULT"  # failure injection for tests: [fatal:]MARKER


class InjectedFault(RuntimeError):
    """A failure injected by $OPENGEMMA_TEST_FAULT."""


class InjectedFatalFault(BaseException):
    """An injected failure the engine thread cannot survive (not an Exception on purpose)."""


def fault_hook(spec: str | None, tokenizer):
    """$OPENGEMMA_TEST_FAULT=MARKER: every sampling step of a request whose prompt contains
    MARKER raises; `fatal:MARKER` stops the engine thread instead (tests only)."""
    if not spec:
        return None
    fatal = spec.startswith("fatal:")
    marker = spec.removeprefix("fatal:")
    flagged: dict[int, bool] = {}

    def hook(handle) -> None:
        if handle.id not in flagged:
            flagged[handle.id] = marker in tokenizer.decode(handle.request.prompt_ids)
        if flagged[handle.id]:
            raise (InjectedFatalFault if fatal else InjectedFault)(f"injected fault ({marker})")

    return hook


class Guard:
    """Pure ASGI middleware: body-size limit (413), API keys (401), HTTP request counts."""

    def __init__(self, app, state: ServerState, protected: set[str]):
        self.app, self.state, self.protected = app, state, protected
        self.keys = [k.encode() for k in state.config.api_keys]

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status_box = {"status": 500}

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        try:
            if self.keys and path in self.protected and not self._authorized(scope):
                msg = "a valid API key is required: send `Authorization: Bearer KEY`"
                exc = APIError(401, msg, None, "invalid_api_key")
                return await error_response(exc)(scope, receive, counted_send)
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive)
                if body is None:
                    limit = self.state.config.max_body_bytes
                    exc = APIError(
                        413,
                        f"the request body exceeds {limit} bytes; send less",
                        None,
                        "request_too_large",
                    )
                    return await error_response(exc)(scope, receive, counted_send)
                receive = _replay(body, receive)
            await self.app(scope, receive, counted_send)
        finally:
            route = path if path in self.protected or path in _PUBLIC else "other"
            self.state.metrics.http.labels(route=route, status=str(status_box["status"])).inc()

    def _authorized(self, scope: dict) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        ok = False
        for key in self.keys:  # compare against every key: no timing hint of which one matched
            ok |= hmac.compare_digest(token.strip(), key)
        return ok and scheme.lower() == b"bearer"

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        limit = self.state.config.max_body_bytes
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


_PUBLIC = {"/health", "/ready", "/metrics", "/v1/models", "/v1/info", "/", "/openapi.json", "/docs"}


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(InvalidRequestError)
    async def invalid(request: Request, exc: InvalidRequestError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if err.get("type") == "json_invalid":
            body = error_body(
                400, "the body is not valid JSON: " + str(err.get("msg")), None, "invalid_json"
            )
            return JSONResponse(body, status_code=400)
        param = field_name(err["loc"])
        message = f"{param}: {err['msg']}" if param else str(err["msg"])
        return JSONResponse(error_body(400, message, param, err.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such route; see /docs" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            error_body(exc.status_code, message),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def create_app(state: ServerState) -> FastAPI:
    """The ASGI app around a loaded model and a running engine."""
    app = FastAPI(
        title="opengemma",
        version="1",
        description="OpenAI-compatible Gemma server "
        "with continuous batching, Vertex AI routes and Prometheus metrics.",
    )
    app.state.server = state
    _install_errors(app)
    app.include_router(openai_routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(embed_routes.router)
    app.include_router(watermark_routes.router)
    app.include_router(webui_routes.router)

    @app.get("/health", response_class=PlainTextResponse)
    async def health() -> Response:
        """Alive: the process answers and its engine runs (503 once the engine has stopped)."""
        if not state.engine.alive:
            return PlainTextResponse(f"engine stopped: {state.engine.fatal}", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/ready", response_class=PlainTextResponse)
    async def ready() -> Response:
        """Model loaded, engine running and not draining: 200, else 503."""
        if not state.engine.alive:
            return PlainTextResponse(f"engine stopped: {state.engine.fatal}", status_code=503)
        if state.draining:
            return PlainTextResponse("draining", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    protected = {"/v1/completions", "/v1/chat/completions", watermark_routes.ROUTE}
    cfg = state.config
    if cfg.health_route and cfg.health_route not in ("/health", "/ready"):
        app.add_api_route(cfg.health_route, ready, methods=["GET"], include_in_schema=False)
    predict_route = cfg.predict_route or "/predict"
    app.add_api_route(
        predict_route,
        vertex.predict,
        methods=["POST"],
        tags=["vertex"],
        openapi_extra=_predict_schema(),
    )
    protected.add(predict_route)
    protected.update(ollama_routes.GENERATION_ROUTES)
    protected.update(embed_routes.ROUTES)
    return Guard(app, state, protected)  # type: ignore[return-value]


def _predict_schema() -> dict:
    schema = vertex.PredictRequest.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
