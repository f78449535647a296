"""Fixtures of the tuning tests: one thread (training on a shared 2-core machine is much
slower with two competing OpenMP pools), a tiny random Gemma 3 checkpoint, the Gemma tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tune.helpers import tiny_checkpoint


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OPENGEMMA_THREADS", "1")  # what opengemma.load() applies
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, gemma_tokenizer) -> Path:
    """A tiny random Gemma 3 (HF safetensors dir + tokenizer.model); loads with opengemma.load."""
    d = tmp_path_factory.mktemp("tiny_gemma3")
    tiny_checkpoint(d, gemma_tokenizer)
    return d


@pytest.fixture(scope="session")
def gemma_tokenizer(embedded_path):
    from opengemma.tokenizer import Tokenizer

    return Tokenizer.from_gguf(embedded_path)
