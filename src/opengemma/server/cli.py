"""`opengemma serve`: load a model and serve it until SIGTERM/SIGINT, draining gracefully.

On SIGTERM the server keeps listening but /ready answers 503 and new generation requests get
503 + Retry-After; requests in flight get up to --drain-timeout seconds to finish, then the
process exits 0. A second SIGINT (Ctrl-C) exits at once.
"""

from __future__ import annotations

import signal
import threading
import time

import typer

from opengemma.cli_support import DTYPE_HELP, MODEL_HELP, QUANT_HELP, cli_errors, eprint

DEAD_GRACE = 3.0  # seconds a dead engine is reported before the process exits

app = typer.Typer(add_completion=False, help="Serve a model over the OpenAI API (and Vertex AI).")


def _server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn.Server whose SIGTERM drains the engine before the listener closes."""

        state = None
        _draining = False

        def handle_exit(self, sig: int, frame) -> None:
            if sig == signal.SIGINT and self._draining:
                self.force_exit = True
                self.should_exit = True
                return
            if self._draining:
                return
            self._draining = True
            self.state.draining = True
            self.state.engine.close()
            threading.Thread(target=self._drain, name="opengemma-drain", daemon=True).start()

        def _drain(self) -> None:
            cfg = self.state.config
            if not self.state.engine.wait_idle(cfg.drain_timeout):
                eprint(f"opengemma: drain timeout ({cfg.drain_timeout}s): aborting requests")
                self.state.engine.abort_all()
                self.state.engine.wait_idle(5.0)
            self.should_exit = True

    return DrainingServer


def serve(config) -> None:
    """Run the server in the foreground until drained (blocking)."""
    import uvicorn

    from opengemma.server.app import build_state, create_app

    state = build_state(config)
    eprint(
        f"opengemma: serving {state.model_id} on http://{config.host}:{config.port} "
        f"(batch {config.max_batch}, queue {config.max_queue})"
    )
    uv_config = uvicorn.Config(
        create_app(state),
        host=config.host,
        port=config.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = _server_class()(uv_config)
    server.state = state
    watch = threading.Thread(target=_watch_engine, args=(server,), name="opengemma-watch")
    watch.daemon = True
    watch.start()
    try:
        server.run()
    finally:
        state.engine.shutdown()
    if state.engine.fatal is not None:
        eprint(f"opengemma: error: the engine stopped ({state.engine.fatal}); exiting")
        raise SystemExit(1)
    eprint("opengemma: stopped")


def _watch_engine(server) -> None:
    """When the engine thread dies, /ready and /health answer 503 for a few seconds (so probes
    see it and open responses end), then the server exits; `serve` then exits 1."""
    engine = server.state.engine
    while not server.should_exit:
        if engine.fatal is not None:
            time.sleep(DEAD_GRACE)
            server.should_exit = True
            return
        time.sleep(0.2)


def _speculative_method(value: str | None) -> str | None:
    if value is None or value == "ngram":
        return value
    raise typer.BadParameter(f"{value!r} is not a speculative method; use ngram")


@app.command()
@cli_errors
def main(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    host: str = typer.Option(
        None,
        help="Address to listen on [default: 127.0.0.1, or 0.0.0.0 when $AIP_HTTP_PORT is set]",
    ),
    port: int = typer.Option(None, min=1, max=65535, help="Port [default: $AIP_HTTP_PORT or 8000]"),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    quant: str = typer.Option("auto", help=QUANT_HELP),
    device: str = typer.Option("cpu", help="cpu, or cuda on a GPU machine."),
    served_model_name: str = typer.Option(
        None, help="Model id clients send [default: from the file name]"
    ),
    max_batch: int = typer.Option(8, min=1, help="Requests decoding together."),
    max_queue: int = typer.Option(64, min=0, help="Requests waiting; beyond: 503."),
    prefill_chunk: int = typer.Option(256, min=1, help="Prompt tokens per engine step."),
    prefix_cache_mb: int = typer.Option(
        512, min=0, help="Memory for cached prompt prefixes (K/V reused by later requests), MiB."
    ),
    no_prefix_cache: bool = typer.Option(False, help="Turn automatic prefix caching off."),
    speculative: str = typer.Option(
        None, callback=_speculative_method,
        help="ngram: prompt-lookup speculative decoding for a request decoding alone (exact).",
    ),  # fmt: skip
    max_model_len: int = typer.Option(
        None, min=2, help="Longest prompt + completion accepted [default: the model's context]"
    ),
    default_max_tokens: int = typer.Option(1024, min=1, help="Chat max_tokens when absent."),
    request_timeout: float = typer.Option(600.0, help="Per-request deadline (seconds)."),
    drain_timeout: float = typer.Option(30.0, help="SIGTERM grace for in-flight requests (s)."),
    max_body_bytes: int = typer.Option(1_500_000, min=1, help="Largest request body."),
    guard: str = typer.Option(
        None, help="Policy checks: input, output or input,output (ShieldGemma prompt format)."
    ),
    guard_model: str = typer.Option(None, help="Classifier checkpoint [default: the model]."),
    guard_policy: list[str] = typer.Option(  # noqa: B008
        None, help="Policy name or JSON file (repeatable) [default: the four standard ones]."
    ),
    guard_threshold: float = typer.Option(0.5, help="Block at or above this P(violation)."),
    watermark: str = typer.Option(
        None, help="SynthID Text key file: watermark every sampled (temperature > 0) response."
    ),
    api_key: list[str] = typer.Option(  # noqa: B008
        None,
        help="Require `Authorization: Bearer KEY` "
        "(repeatable; also $OPENGEMMA_API_KEYS, comma-separated)",
    ),
) -> None:
    """Serve a Gemma model over the OpenAI API with continuous batching."""
    from opengemma.server.state import ServerConfig

    config = ServerConfig.from_env(
        model=model,
        model_id=served_model_name,
        dtype=dtype,
        quant=quant,
        guard=_guard_stages(guard),
        guard_model=guard_model,
        guard_policies=tuple(guard_policy or ()),
        guard_threshold=guard_threshold,
        watermark=watermark,
        device=device,
        host=host,
        port=port,
        max_batch=max_batch,
        max_queue=max_queue,
        prefill_chunk=prefill_chunk,
        prefix_cache_bytes=0 if no_prefix_cache else prefix_cache_mb << 20,
        speculative=speculative,
        max_model_len=max_model_len,
        default_max_tokens=default_max_tokens,
        request_timeout=request_timeout,
        drain_timeout=drain_timeout,
        max_body_bytes=max_body_bytes,
    )
    if api_key:
        config.api_keys = tuple(config.api_keys) + tuple(api_key)
    serve(config)


def _guard_stages(spec: str | None) -> tuple[str, ...]:
    from opengemma.errors import InvalidRequestError

    stages = tuple(s.strip() for s in (spec or "").split(",") if s.strip())
    unknown = set(stages) - {"input", "output"}
    if unknown:
        raise InvalidRequestError(f"--guard takes input, output or input,output, not {spec!r}")
    return stages
