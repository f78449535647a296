"""Container entrypoint: turn the environment into an `opengemma serve` command and exec it.

Environment (all optional):
  OPENGEMMA_MODEL      a path inside the container (a mounted volume), `hf://OWNER/REPO[/FILE]`
                       (pulled at start with $HF_TOKEN), or `gs://...` (copied at start);
                       absent: $AIP_STORAGE_URI (Vertex AI model artifacts), else the embedded model
  OPENGEMMA_MODEL_DIR  where pulled models go (default /models)
  AIP_HTTP_PORT / PORT the port (default 8080); the server listens on 0.0.0.0
  OPENGEMMA_DTYPE, OPENGEMMA_DEVICE, OPENGEMMA_MAX_BATCH, OPENGEMMA_MAX_QUEUE,
  OPENGEMMA_DRAIN_TIMEOUT, OPENGEMMA_SERVED_MODEL_NAME: the matching `serve` options
  OPENGEMMA_SERVE_ARGS extra `serve` arguments, shell-quoted
Vertex AI's AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE and OPENGEMMA_API_KEYS are read by the server.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

OPTIONS = {
    "OPENGEMMA_DTYPE": "--dtype",
    "OPENGEMMA_DEVICE": "--device",
    "OPENGEMMA_MAX_BATCH": "--max-batch",
    "OPENGEMMA_MAX_QUEUE": "--max-queue",
    "OPENGEMMA_DRAIN_TIMEOUT": "--drain-timeout",
    "OPENGEMMA_SERVED_MODEL_NAME": "--served-model-name",
}


class EntrypointError(Exception):
    """The environment asks for something the container cannot do."""


def pull_hf(spec: str, dest: Path, env: Mapping[str, str]) -> Path:
    """hf://OWNER/REPO[/FILE] -> a local path (huggingface_hub, token from $HF_TOKEN)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    parts = spec.removeprefix("hf://").split("/")
    if len(parts) < 2:
        raise EntrypointError(f"{spec}: use hf://OWNER/REPO or hf://OWNER/REPO/FILE.gguf")
    repo, token = "/".join(parts[:2]), env.get("HF_TOKEN")
    if len(parts) > 2:
        return Path(hf_hub_download(repo, "/".join(parts[2:]), local_dir=dest, token=token))
    return Path(snapshot_download(repo, local_dir=dest / parts[1], token=token))


def pull_gcs(uri: str, dest: Path, env: Mapping[str, str]) -> Path:
    """gs://BUCKET/PATH -> a local copy (the gcloud CLI, present in Google's base images)."""
    target = dest / uri.rstrip("/").rsplit("/", 1)[-1]
    subprocess.run(["gcloud", "storage", "cp", "-r", uri, str(dest)], check=True)
    return target


Fetcher = Callable[[str, Path, Mapping[str, str]], Path]


def resolve_model(
    env: Mapping[str, str], fetchers: Mapping[str, Fetcher] | None = None
) -> str | None:
    """The local model path `serve` gets, pulling remote models first; None: embedded."""
    fetchers = {"hf://": pull_hf, "gs://": pull_gcs, **(fetchers or {})}
    spec = env.get("OPENGEMMA_MODEL") or env.get("AIP_STORAGE_URI")
    if not spec:
        return None
    for scheme, fetch in fetchers.items():
        if spec.startswith(scheme):
            dest = Path(env.get("OPENGEMMA_MODEL_DIR", "/models"))
            dest.mkdir(parents=True, exist_ok=True)
            return str(fetch(spec, dest, env))
    if "://" in spec:
        raise EntrypointError(f"{spec}: unsupported scheme; use a path, hf:// or gs://")
    if not Path(spec).exists():
        raise EntrypointError(f"{spec} does not exist in the container; mount the model volume")
    return spec


def build_command(env: Mapping[str, str], model: str | None) -> list[str]:
    """The `opengemma serve` argv for this environment."""
    port = env.get("AIP_HTTP_PORT") or env.get("PORT") or "8080"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EntrypointError(f"port {port!r} is not a TCP port number")
    cmd = ["opengemma", "serve", "--host", "0.0.0.0", "--port", port]
    if model is not None:
        cmd += ["--model", model]
    for var, flag in OPTIONS.items():
        if env.get(var):
            cmd += [flag, env[var]]
    cmd += shlex.split(env.get("OPENGEMMA_SERVE_ARGS", ""))
    return cmd


def main() -> None:
    try:
        cmd = build_command(os.environ, resolve_model(os.environ))
    except EntrypointError as exc:
        print(f"entrypoint: {exc}", file=sys.stderr)
        sys.exit(2)
    print("entrypoint: " + shlex.join(cmd), file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)  # the server becomes PID 1's child-free process and gets SIGTERM


if __name__ == "__main__":
    main()
