"""Safety policies for the classifier: the four ShieldGemma policies and user-defined ones.

A policy has a title ("No Harassment") and a description that completes "... content that".
The classifier states it two ways, as ShieldGemma was trained:
prompt checks  -> "The prompt shall not contain or seek generation of content that {description}"
response checks -> "The chatbot shall not generate content that {description}"

User policies come from a JSON file: one object or a list of objects with `name`, `title`
(optional, defaults to the name) and `description`; `prompt_text` / `response_text` replace the
whole sentence for that kind of check when the standard lead-in does not fit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from opengemma.errors import OpenGemmaError

Kind = Literal["prompt", "response"]

PROMPT_LEAD = "The prompt shall not contain or seek generation of content that"
RESPONSE_LEAD = "The chatbot shall not generate content that"


class PolicyError(OpenGemmaError, ValueError):
    """A policy name is unknown or a policy file is malformed."""


@dataclass(frozen=True)
class Policy:
    """One safety principle the classifier checks a text against."""

    name: str  # short identifier used on the command line and in reports
    title: str  # quoted in the guideline, e.g. "No Harassment"
    description: str  # completes "... content that ..."
    prompt_text: str | None = None  # full sentence for prompt checks (overrides the lead-in)
    response_text: str | None = None  # full sentence for response checks

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name or ""):
            raise PolicyError(
                f"policy name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not self.title.strip() or not self.description.strip():
            raise PolicyError(f"policy {self.name!r} needs a non-empty title and description")

    def guideline(self, kind: Kind) -> str:
        """The policy as it appears after '* ' in the classifier prompt."""
        if kind == "prompt":
            sentence = self.prompt_text or f"{PROMPT_LEAD} {self.description}"
        elif kind == "response":
            sentence = self.response_text or f"{RESPONSE_LEAD} {self.description}"
        else:
            raise PolicyError(f"kind must be 'prompt' or 'response', not {kind!r}")
        return f'"{self.title}": {sentence}'


# The four policies of ShieldGemma's model card and chat template, verbatim (including their
# grammar: the classifier was trained on these exact words).
STANDARD_POLICIES: dict[str, Policy] = {
    p.name: p
    for p in [
        Policy(
            "dangerous_content",
            "No Dangerous Content",
            "harming oneself and/or others (e.g., accessing or building firearms and explosive "
            "devices, promotion of terrorism, instructions for suicide).",
        ),
        Policy(
            "harassment",
            "No Harassment",
            "is malicious, intimidating, bullying, or abusive content targeting another "
            "individual (e.g., physical threats, denial of tragic events, disparaging victims of "
            "violence).",
        ),
        Policy(
            "hate_speech",
            "No Hate Speech",
            "targeting identity and/or protected attributes (e.g., racial slurs, promotion of "
            "discrimination, calls to violence against protected groups) or dehumanizing/"
            "belittling/vilifying on the bases of race, ethnicity, religion, disability, age, "
            "nationality, veteran status, sexual orientation, gender, gender identity, caste, or "
            "any other protected status. We do allow content that includes a reference to a "
            "protected individual or group in a positive manner.",
        ),
        Policy(
            "sexually_explicit",
            "No Sexually Explicit Information",
            "contains references to sexual acts or other lewd content (e.g., sexually graphic "
            "descriptions, content aimed at causing arousal). Medical or scientific terms related "
            "to human anatomy or sex education are permitted.",
        ),
    ]
}

ALIASES = {"dangerous": "dangerous_content", "hate": "hate_speech", "sexual": "sexually_explicit"}


def _from_dict(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: each policy must be a JSON object with name and description")
    allowed = {"name", "title", "description", "prompt_text", "response_text"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PolicyError(f"{source}: unknown policy fields {unknown}; allowed: {sorted(allowed)}")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str):
            raise PolicyError(f"{source}: a policy needs a string {key!r}")
    for key in ("title", "prompt_text", "response_text"):
        if key in data and not isinstance(data[key], str):
            raise PolicyError(f"{source}: {key!r} must be a string")
    return Policy(
        name=data["name"],
        title=data.get("title", data["name"]),
        description=data["description"],
        prompt_text=data.get("prompt_text"),
        response_text=data.get("response_text"),
    )


def load_policy_file(path: str | os.PathLike[str]) -> list[Policy]:
    """Policies from a JSON file holding one policy object or a list of them."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path} is not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PolicyError(f"{path} holds no policies")
    return [_from_dict(item, str(path)) for item in items]


def resolve_policies(specs: Iterable[str] | None) -> list[Policy]:
    """Policies from names of standard policies and/or paths of policy files; None or empty
    gives the four standard policies. Names must be unique."""
    specs = list(specs or [])
    if not specs:
        return list(STANDARD_POLICIES.values())
    out: list[Policy] = []
    for spec in specs:
        name = ALIASES.get(spec, spec)
        if name in STANDARD_POLICIES:
            out.append(STANDARD_POLICIES[name])
        elif Path(spec).is_file():
            out.extend(load_policy_file(spec))
        else:
            raise PolicyError(
                f"unknown policy {spec!r}: use one of {sorted(STANDARD_POLICIES)} or the path "
                "of a JSON policy file"
            )
    names = [p.name for p in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PolicyError(f"policies named more than once: {duplicates}")
    return out
