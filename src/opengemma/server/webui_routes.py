"""The chat page: `/` and its assets (shipped inside the package, nothing fetched from elsewhere),
and `GET /v1/info`, what this server runs with (authentication, guard, watermark), which the
page reads to show its badges."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from opengemma.server.errors import APIError
from opengemma.server.state import ServerState

router = APIRouter()

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Scripts, styles and requests from this origin only; no inline script, no plugins, no framing:
# a second wall behind the page's own sanitizer.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=1)
def assets() -> dict[str, bytes]:
    """File name -> bytes of every asset in the package's `webui` folder."""
    folder = resources.files("opengemma.server") / "webui"
    out = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            out[entry.name] = entry.read_bytes()
    return out


def asset_response(name: str) -> Response:
    body = assets().get(name)
    if body is None:
        raise APIError(404, f"no web UI asset {name!r}", None, "not_found")
    media = TYPES["." + name.rpartition(".")[2]]
    return Response(body, media_type=media, headers=HEADERS)


@router.get("/", include_in_schema=False)
async def index() -> Response:
    """The chat page."""
    return asset_response("index.html")


@router.get("/webui/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    return asset_response(name)


def server_info(state: ServerState) -> dict[str, Any]:
    cfg = state.config
    guard = state.guard
    return {
        "object": "server.info",
        "model": state.model_id,
        "max_model_len": state.context,
        "default_max_tokens": cfg.default_max_tokens,
        "auth_required": bool(cfg.api_keys),
        "guard": {
            "stages": list(cfg.guard) if guard is not None else [],
            "policies": [p.name for p in guard.policies] if guard is not None else [],
            "threshold": cfg.guard_threshold if guard is not None else None,
        },
        "watermark": {
            "enabled": state.watermark is not None,
            "applies_to": "responses sampled with temperature > 0",
            "detect_route": "/v1/watermark/detect" if state.watermark is not None else None,
        },
    }


@router.get("/v1/info")
async def info(request: Request) -> dict[str, Any]:
    """What this server runs with: authentication, guard stages and policies, watermarking."""
    return server_info(request.app.state.server)
