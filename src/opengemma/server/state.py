"""Server settings and the objects every route shares (model, engine, metrics)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from opengemma.engine import Engine
from opengemma.server.constrain import JsonGrammar
from opengemma.server.metrics import Metrics

VERTEX_BODY_LIMIT = 1_500_000  # bytes: Vertex AI's request size limit


@dataclass
class ServerConfig:
    """How the server runs. Times in seconds, sizes in bytes, lengths in tokens."""

    model: str | None = None  # .gguf / HF dir; None: the embedded default model
    model_id: str | None = None  # the id clients send as `model`; default from the file name
    dtype: str | None = None  # None: float32 activations
    quant: str = "auto"  # q8 weights for quantized GGUFs (fast CPU decoding), else as stored
    device: str = "cpu"  # "cuda" on a GPU node
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8  # rows decoding together
    max_queue: int = 64  # requests waiting for a row; beyond: 503 + Retry-After
    prefill_chunk: int = 256  # prompt tokens read between two decode steps
    prefix_cache_bytes: int = 512 << 20  # K/V of prompt prefixes kept for reuse; 0: off
    speculative: str | None = None  # "ngram": prompt-lookup drafts for a request decoding alone
    max_model_len: int | None = None  # prompt + max_tokens accepted; None: the model's context
    default_max_tokens: int = 1024  # chat completions without max_tokens (capped by context)
    request_timeout: float = 600.0  # per-request deadline from arrival
    drain_timeout: float = 30.0  # on SIGTERM: time in-flight requests get to finish
    max_body_bytes: int = VERTEX_BODY_LIMIT
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    health_route: str | None = None  # Vertex AI: $AIP_HEALTH_ROUTE
    predict_route: str | None = None  # Vertex AI: $AIP_PREDICT_ROUTE
    retry_after: int = 2  # seconds suggested to clients turned away (queue full, draining)
    guard: tuple[str, ...] = ()  # "input" and/or "output": policy checks on prompts / responses
    guard_model: str | None = None  # the classifier checkpoint; None: the served model
    guard_policies: tuple[str, ...] = ()  # names or JSON files; empty: the four standard ones
    guard_threshold: float = 0.5  # P(violation) at or above which a text is blocked
    watermark: str | None = None  # SynthID Text key file: watermark every sampled response

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> ServerConfig:
        """Defaults from the environment: Vertex AI's AIP_* variables, OPENGEMMA_API_KEYS."""
        env = dict(os.environ if env is None else env)
        values: dict = {}
        if env.get("AIP_HTTP_PORT"):
            values.update(port=int(env["AIP_HTTP_PORT"]), host="0.0.0.0")
        values["health_route"] = env.get("AIP_HEALTH_ROUTE") or None
        values["predict_route"] = env.get("AIP_PREDICT_ROUTE") or None
        keys = [k.strip() for k in env.get("OPENGEMMA_API_KEYS", "").split(",") if k.strip()]
        values["api_keys"] = tuple(keys)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class ServerState:
    """What the routes share. `draining` flips on SIGTERM: /ready fails, new work is refused."""

    config: ServerConfig
    lm: object  # opengemma.api.LM
    engine: Engine
    model_id: str
    metrics: Metrics
    json_grammar: JsonGrammar
    draining: bool = False
    created: int = field(default=0)
    guard: object | None = None  # opengemma.safety.guard.Guard when config.guard is set
    watermark: object | None = None  # the loaded WatermarkConfig when config.watermark is set

    @property
    def context(self) -> int:
        """Longest prompt + completion accepted, in tokens."""
        model_len = self.lm.config.max_position_embeddings
        return min(self.config.max_model_len or model_len, model_len)
