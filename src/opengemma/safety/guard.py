"""Guardrails: block prompts and responses that a safety classifier scores as violations.

`Guard` is what a server or an application calls around generation:

    guard = Guard.load(model="shieldgemma-2b.gguf", policies=["hate_speech"], threshold=0.5)
    v = guard.check_prompt(user_text)            # before generating
    if v.blocked: ...                            # e.g. HTTP 400, content-policy error
    v = guard.check_response(user_text, answer)  # after generating
    if v.blocked: ...                            # e.g. finish_reason "content_filter"

A text is blocked when P(Yes) reaches the threshold for at least one policy.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opengemma.errors import OpenGemmaError
from opengemma.safety.classifier import EMBEDDED_NOTE, SafetyClassifier
from opengemma.safety.policies import Kind, Policy, resolve_policies

DEFAULT_THRESHOLD = 0.5


class GuardError(OpenGemmaError, ValueError):
    """A guard was configured with invalid options."""


@dataclass(frozen=True)
class Verdict:
    """The classifier's view of one prompt (or prompt + response)."""

    kind: Kind  # "prompt" or "response"
    scores: dict[str, float]  # policy name -> P(violation) in [0, 1]
    threshold: float  # a score at or above this blocks
    violated: tuple[str, ...] = field(default=())  # policies at or above the threshold

    @property
    def blocked(self) -> bool:
        return bool(self.violated)

    @property
    def max_score(self) -> float:
        return max(self.scores.values())

    def message(self) -> str:
        """A one-line explanation suitable for an API error or a log."""
        what = "prompt" if self.kind == "prompt" else "response"
        if not self.blocked:
            return f"the {what} passed the safety policies"
        parts = ", ".join(f"{p} ({self.scores[p]:.2f})" for p in self.violated)
        return f"the {what} was blocked by the safety policies: {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "blocked": self.blocked, "threshold": self.threshold,
                "violated": list(self.violated), "scores": dict(self.scores)}  # fmt: skip


class Guard:
    """Checks prompts and responses against policies with one classifier model.

    Thread-safe: calls are serialised (one forward pass at a time on the classifier model)."""

    def __init__(
        self,
        classifier: SafetyClassifier,
        policies: Sequence[Policy] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ):
        if not 0.0 < threshold <= 1.0:
            raise GuardError(f"the guard threshold must be in (0, 1], got {threshold}")
        self.classifier = classifier
        self.policies = list(policies) if policies else resolve_policies(None)
        self.threshold = float(threshold)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        policies: Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        dtype: str = "float32",
    ) -> Guard:
        """Build from options: a checkpoint (None = embedded model, mechanics only), policy
        names or JSON policy files (None = the four standard ones) and a threshold."""
        pols = resolve_policies(policies)
        return cls(SafetyClassifier.load(model, dtype=dtype), pols, threshold)

    @property
    def note(self) -> str | None:
        """A warning to show users when the classifier is not a trained safety model."""
        return EMBEDDED_NOTE if self.classifier.is_embedded_default else None

    def _verdict(self, kind: Kind, prompt: str, response: str | None) -> Verdict:
        with self._lock:
            scores = self.classifier.score(prompt, response, self.policies)
        by_name = {s.policy: s.p_yes for s in scores}
        violated = tuple(n for n, p in by_name.items() if p >= self.threshold)
        return Verdict(kind, by_name, self.threshold, violated)

    def check_prompt(self, text: str) -> Verdict:
        """Does the user's prompt violate (or seek content violating) a policy?"""
        return self._verdict("prompt", text, None)

    def check_response(self, prompt: str, response: str) -> Verdict:
        """Does the model's response to `prompt` violate a policy?"""
        return self._verdict("response", prompt, response)
