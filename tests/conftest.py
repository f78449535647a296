"""Shared fixtures. Expensive objects (the embedded model, transformers' reference loading the
same GGUF) are built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    from opengemma.api import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def lm():
    import opengemma

    return opengemma.load(dtype="float32")


@pytest.fixture(scope="session")
def hf_gguf_model(embedded_path):
    """transformers' Gemma 3 loaded from the embedded GGUF (dequantized to float32; ~40-80 s)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(embedded_path.parent), gguf_file=embedded_path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def rules():
    """The PII scanner with every detector (strict: a missing model or analyser fails)."""
    from opengemma.safety.pii import Scanner

    return Scanner(strict=True)


@pytest.fixture(scope="session")
def values(rules):
    """`values(text, TYPE)`: the values of that type the scanner finds in `text`, in order."""

    def found(text: str, type_: str) -> list[str]:
        return [text[f.start : f.end] for f in rules.scan([text])[0] if f.type == type_]

    return found
