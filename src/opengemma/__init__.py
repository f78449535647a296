"""opengemma: an open, responsible Gemma stack — run, serve, adapt and safeguard Gemma models."""

from __future__ import annotations

__version__ = "0.1.0"
