"""opengemma: an open, responsible Gemma stack — run, serve, adapt and safeguard Gemma models.

    import opengemma
    lm = opengemma.load()          # the embedded Gemma 3 270M; or a .gguf / HF directory path
    print(lm.generate("The capital of France is", max_tokens=16))

Heavy modules (torch) load on first use, so `opengemma scrub` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LM", "load", "GemmaConfig", "PRESETS", "OpenGemmaError", "__version__"]

_LAZY = {
    "LM": "opengemma.api",
    "load": "opengemma.api",
    "GemmaConfig": "opengemma.config",
    "PRESETS": "opengemma.config",
    "OpenGemmaError": "opengemma.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'opengemma' has no attribute {name!r}")
