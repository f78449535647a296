"""Vertex AI custom-container predict: `{"instances": [...], "parameters": {...}}` in,
`{"predictions": [...]}` out, on the route Vertex names in $AIP_PREDICT_ROUTE.

Two instance shapes, as Model Garden's Gemma containers accept them:
- plain: `{"prompt", "max_tokens", "temperature", "top_p", "top_k", "raw_response"}` -> a string,
  `"Prompt:\\n{prompt}\\nOutput:\\n{text}"`, or the bare text with `raw_response: true`;
- chat: `{"@requestFormat": "chatCompletions", "messages": [...], ...}` -> a chat.completion object.
`parameters` fill in fields an instance leaves out. All instances run concurrently.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from opengemma.server.errors import APIError, bad_request, field_name
from opengemma.server.generation import Spec, collect, sampling_params, start
from opengemma.server.openai_routes import chat_completions, stop_list
from opengemma.server.schemas import ChatCompletionRequest, CompletionRequest
from opengemma.server.state import ServerState

MAX_INSTANCES = 64


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    instances: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_INSTANCES)
    parameters: dict[str, Any] = Field(default_factory=dict)


def _parse(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = field_name(err["loc"])
        param = f"{where}.{name}" if name else where
        raise bad_request(f"{param}: {err['msg']}", param) from None


async def _plain(state: ServerState, data: dict[str, Any], where: str, request: Request) -> str:
    raw = bool(data.pop("raw_response", False))
    if not isinstance(data.get("prompt"), str):
        raise bad_request(f"{where}.prompt must be a string", f"{where}.prompt")
    body = _parse(CompletionRequest, {"max_tokens": 256, **data, "stream": False, "n": 1}, where)
    ids = state.lm.tokenizer.encode(body.prompt) if body.prompt else []
    spec = Spec([ids], sampling_params(body), 1, body.max_tokens, stop=stop_list(body.stop),
                guard_text=body.prompt, prompt_param=f"{where}.prompt",
                max_tokens_param=f"{where}.max_tokens")  # fmt: skip
    choices = await collect(await start(state, spec), request)
    text = "".join(choices[0].text)
    return text if raw else f"Prompt:\n{body.prompt}\nOutput:\n{text}"


async def _chat(state: ServerState, data: dict[str, Any], where: str, request: Request) -> Any:
    data.pop("@requestFormat", None)
    body = _parse(ChatCompletionRequest, {**data, "stream": False}, where)
    return await chat_completions(body, request)


async def predict(request: Request) -> JSONResponse:
    """POST $AIP_PREDICT_ROUTE."""
    state: ServerState = request.app.state.server
    try:
        payload = await request.json()
    except ValueError:
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise bad_request('the body must be {"instances": [...], "parameters": {...}}')
    req = _parse(PredictRequest, payload, "body")
    jobs = []
    for i, instance in enumerate(req.instances):
        data = {**req.parameters, **instance}
        where = f"instances[{i}]"
        fmt = data.get("@requestFormat")
        if fmt == "chatCompletions":
            jobs.append(_chat(state, data, where, request))
        elif fmt is None:
            jobs.append(_plain(state, data, where, request))
        else:
            raise bad_request(
                f"{where}.@requestFormat {fmt!r} is unknown; use 'chatCompletions' or leave it out",
                f"{where}.@requestFormat",
            )
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, APIError):
            raise result
        if isinstance(result, BaseException):
            raise result
    return JSONResponse({"predictions": results})
