"""Schema-driven fuzzing of the OpenAPI document: no input may cause a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.server.conftest import API_KEY, ServerProcess


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(tmp_path):
    srv = ServerProcess(
        "--api-key",
        API_KEY,
        "--max-model-len",
        "24",
        "--default-max-tokens",
        "4",
        log=tmp_path / "fuzz.log",
    )
    try:
        exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        cmd = [
            exe,
            "run",
            f"{srv.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
            "--seed",
            "7",
            "--workers",
            "1",
            "--phases",
            "examples,fuzzing",
            "-H",
            f"Authorization: Bearer {API_KEY}",
            "--generation-deterministic",
        ]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert srv.proc.poll() is None  # still serving
    finally:
        srv.stop()
