"""`POST /v1/watermark/detect`: is a text watermarked with this server's `--watermark` keys?

The text is tokenized as plain text with the served model's tokenizer (the one that generated
it) and scored by `opengemma.safety.watermark.detect_ids`; the answer carries the p-value (how
likely a text without this watermark scores this high) and the scores behind it."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from opengemma.safety.watermark import DEFAULT_ALPHA, detect_ids
from opengemma.server.errors import APIError, bad_request
from opengemma.server.state import ServerState

router = APIRouter()
ROUTE = "/v1/watermark/detect"


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="The text to test (the generated part, not the prompt).")
    alpha: float = Field(DEFAULT_ALPHA, gt=0, lt=1, description="Call it watermarked below this.")


def detection(state: ServerState, body: DetectRequest) -> dict[str, Any]:
    if state.watermark is None:
        raise APIError(
            400,
            "this server runs without a watermark; start it with `opengemma serve --watermark "
            "KEYS` to detect (or use `opengemma watermark detect --keys KEYS`)",
            None,
            "watermark_disabled",
        )
    if not body.text.strip():
        raise bad_request("text is empty; give the text to test", "text")
    ids = state.lm.tokenizer.encode_plain(body.text)
    found = detect_ids(ids, state.watermark, alpha=body.alpha).to_dict()
    # JSON has no NaN: a text too short to score has no score
    out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in found.items()}
    return {"object": "watermark.detection", "num_tokens": len(ids), **out}


@router.post(ROUTE)
async def detect(body: DetectRequest, request: Request) -> dict[str, Any]:
    """Score a text for this server's watermark: p-value, weighted mean, n-grams scored."""
    state: ServerState = request.app.state.server
    return await asyncio.to_thread(detection, state, body)
