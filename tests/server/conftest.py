"""Real server processes on 127.0.0.1 with free ports, serving the embedded model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key-0123456789"
PREDICT_ROUTE = "/v1/endpoints/e1/deployedModels/m1:predict"
HEALTH_ROUTE = "/v1/endpoints/e1/deployedModels/m1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`opengemma serve` in a child process; `url` once /ready answers 200."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        log: Path,
        dtype: str | None = "float32",
    ):
        """`dtype` None: the default path (int8 weights for the embedded Q4_K_M GGUF)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "opengemma.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # float32: the exact reference, so outputs can be compared with the `lm` fixture
            *(["--dtype", dtype] if dtype else []),
            *args,
        ]
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self._wait_ready(180.0)

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample's values whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The main server: batch 8, an API key, Vertex AI routes from AIP_* variables."""
    env = {
        "AIP_PREDICT_ROUTE": PREDICT_ROUTE,
        "AIP_HEALTH_ROUTE": HEALTH_ROUTE,
        "AIP_HTTP_PORT": "1",
    }  # --port wins over AIP_HTTP_PORT
    srv = ServerProcess(
        "--api-key",
        API_KEY,
        "--max-batch",
        "8",
        "--max-body-bytes",
        "200000",
        env=env,
        log=tmp_path_factory.mktemp("serve") / "server.log",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


FAULT_MARKER = "XYZZY"  # a prompt with it fails in the engine (OPENGEMMA_TEST_FAULT)


@pytest.fixture(scope="session")
def int8_server(tmp_path_factory):
    """The default path (int8 weights of the embedded Q4_K_M GGUF), with failure injection."""
    srv = ServerProcess(
        "--max-batch",
        "4",
        env={"OPENGEMMA_TEST_FAULT": FAULT_MARKER},
        log=tmp_path_factory.mktemp("int8") / "server.log",
        dtype=None,
    )
    yield srv
    srv.stop()
