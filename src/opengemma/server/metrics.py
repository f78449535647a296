"""Prometheus metrics, named like vLLM's under an `opengemma:` prefix.

Gauges read the engine when scraped; counters and histograms are fed as requests finish (on the
engine thread: prometheus_client is thread-safe). Each app has its own registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from opengemma.engine import Engine, RequestHandle

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5)


class Metrics:
    """The server's metrics; `render()` gives the text exposition format."""

    def __init__(self, engine: Engine, model_name: str):
        self.registry = reg = CollectorRegistry()
        self.label = label = {"model_name": model_name}
        p = "opengemma:"
        live = {  # read from the engine at scrape time
            "num_requests_running": ("Requests in the running batch.", lambda: engine.num_running),
            "num_requests_waiting": (
                "Requests waiting for a batch slot.", lambda: engine.num_waiting
            ),
            "prefix_cache_bytes": (
                "Bytes of K/V held by the automatic prefix cache.",
                lambda: engine.prefix_cache.nbytes,
            ),
        }
        for name, (doc, read) in live.items():
            gauge = Gauge(f"{p}{name}", doc, ["model_name"], registry=reg)
            gauge.labels(**label).set_function(read)
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"{p}{name}", doc, list(labels), registry=reg)

        model = "model_name"
        self.prefix_hits = counter(
            "prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache instead of computed.", model)
        self.http = counter("http_requests", "HTTP requests by route and status code.",
                            "route", "status")
        self.finished = counter("request_success", "Finished requests by finish reason.",
                                model, "finished_reason")
        self.guard_blocked = counter(
            "guard_blocked",
            "Prompts (stage=input) and responses (stage=output) blocked by the policy guard.",
            model, "stage")
        self.aborted = counter("num_requests_aborted",
                               "Requests cut short: client disconnect or deadline.",
                               model, "reason")
        self.drafted = counter("spec_decode_num_draft_tokens",
                               "Speculative tokens proposed (n-gram drafts).", model)
        self.accepted = counter("spec_decode_num_accepted_tokens",
                                "Proposed tokens the sampler chose too.", model)
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens processed.", model)
        self.generation_tokens = counter("generation_tokens", "Tokens generated.", model)
        self.ttft = Histogram(
            f"{p}time_to_first_token_seconds",
            "Arrival to first token.",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.tpot = Histogram(
            f"{p}time_per_output_token_seconds",
            "Mean time between output tokens of a request.",
            ["model_name"],
            buckets=TPOT_BUCKETS,
            registry=reg,
        )
        self.e2e = Histogram(
            f"{p}e2e_request_latency_seconds",
            "Arrival to last token.",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

    def observe(self, handle: RequestHandle) -> None:
        """Record a finished engine request (the engine's `on_finish` hook)."""
        reason = handle.finish_reason or "error"
        if reason in ("abort", "timeout"):
            self.aborted.labels(reason=reason, **self.label).inc()
        else:
            self.finished.labels(finished_reason=reason, **self.label).inc()
        self.prompt_tokens.labels(**self.label).inc(handle.prompt_tokens)
        self.prefix_hits.labels(**self.label).inc(handle.cached_tokens)
        self.generation_tokens.labels(**self.label).inc(handle.generated)
        self.drafted.labels(**self.label).inc(handle.drafted)
        self.accepted.labels(**self.label).inc(handle.accepted)
        if handle.first_token is not None:
            self.ttft.labels(**self.label).observe(handle.first_token - handle.arrival)
            if handle.finished is not None:
                if handle.generated > 1:
                    per_token = (handle.finished - handle.first_token) / (handle.generated - 1)
                    self.tpot.labels(**self.label).observe(per_token)
                self.e2e.labels(**self.label).observe(handle.finished - handle.arrival)

    def render(self) -> bytes:
        return generate_latest(self.registry)
