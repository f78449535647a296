"""`opengemma serve`: an OpenAI-compatible HTTP server with continuous batching, Vertex AI
custom-container routes, Prometheus metrics and graceful draining.

`ServerConfig` says how it runs, `build_state` loads the model and starts the engine,
`create_app` gives the ASGI app, `serve` runs it under uvicorn until SIGTERM.
"""

from opengemma.server.app import build_state, create_app
from opengemma.server.state import ServerConfig

__all__ = ["ServerConfig", "build_state", "create_app"]
