"""Scrub one batch of records: find personal data in their text fields and apply an operator.

This is the per-record stage both engines run (in-process, in worker processes, or inside Ray
tasks): it is a pure function of `ScrubOptions` and the records, so every engine gives the
same output for the same input.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opengemma.data.formats import ScrubError
from opengemma.safety.pii import DEFAULT_PHONE_REGIONS, Finding, Scanner, parse_types

OPERATORS = ("replace", "mask", "hash", "redact", "drop")
DETECTORS = ("rules", "gemma")


@dataclass(frozen=True)
class ScrubOptions:
    """What to look for, where, and what to do with it."""

    types: frozenset[str] = frozenset()  # empty = every type
    operator: str = "replace"
    fields: tuple[str, ...] = ()  # dotted paths; empty = every string in the record
    hash_key: bytes | None = None  # HMAC key of the `hash` operator
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    strict_types: bool = False  # types were named explicitly: a missing model is an error
    detector: str = "rules"  # "gemma": a Gemma model's second pass after the rules
    model: str | None = None  # the Gemma model of that pass (None = the embedded default)

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ScrubError(f"unknown operator {self.operator!r}; choose from {OPERATORS}")
        if self.detector not in DETECTORS:
            raise ScrubError(f"unknown detector {self.detector!r}; choose from {DETECTORS}")
        if self.operator == "hash" and not self.hash_key:
            raise ScrubError(
                "--operator hash needs a key: --hash-key-file FILE or $OPENGEMMA_SCRUB_KEY"
            )


@dataclass(slots=True)
class Outcome:
    """The scrub result for one record."""

    value: dict[str, Any] | None  # the scrubbed record (None when it failed)
    changed: bool = False
    dropped: bool = False  # by the `drop` operator
    error: str | None = None  # e.g. a missing --field: quarantine
    findings: list[tuple[str, Finding]] = field(default_factory=list)  # (field path, finding)


def iter_strings(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, string) for every string inside a JSON-like value, in document order."""
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_strings(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_strings(v, f"{prefix}.{i}" if prefix else str(i))


_MISSING = object()


def get_path(value: Any, path: str) -> Any:
    """The value at a dotted path (`messages.0.content`), or `_MISSING`."""
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def set_path(value: Any, path: str, new: str) -> None:
    """Replace the string at a dotted path (it exists: `iter_strings` produced it)."""
    *parents, last = path.split(".")
    for part in parents:
        value = value[int(part)] if isinstance(value, list) else value[part]
    if isinstance(value, list):
        value[int(last)] = new
    else:
        value[last] = new


class Scrubber:
    """Detects and rewrites. Build one per process: it loads the detectors (and NER model)."""

    def __init__(self, options: ScrubOptions) -> None:
        self.options = options
        types = options.types or parse_types(None)
        second = []
        if options.detector == "gemma":
            from opengemma.safety.pii_gemma import GemmaPIIDetector  # loads a model: only if asked

            second.append(GemmaPIIDetector(options.model))
        self.scanner = Scanner(
            types,
            phone_regions=options.phone_regions,
            strict=options.strict_types,
            second_pass=second,
        )

    def targets(self, value: dict[str, Any]) -> list[tuple[str, str]] | str:
        """The (path, text) pairs to scan in a record, or an error message."""
        if not self.options.fields:
            return list(iter_strings(value))
        out: list[tuple[str, str]] = []
        for name in self.options.fields:
            got = get_path(value, name)
            if got is _MISSING:
                return f"missing field {name!r}"
            if got is not None:
                out.extend(iter_strings(got, name))
        return out

    def process(self, values: Sequence[dict[str, Any] | None]) -> list[Outcome]:
        """One `Outcome` per value (None values -- unreadable records -- pass through)."""
        outcomes = [Outcome(v) for v in values]
        jobs: list[tuple[int, str, str]] = []
        for i, v in enumerate(values):
            if v is None:
                continue
            found = self.targets(v)
            if isinstance(found, str):
                outcomes[i] = Outcome(None, error=found)
            else:
                jobs.extend((i, path, text) for path, text in found if text)
        results = self.scanner.scan([t for _, _, t in jobs], [p for _, p, _ in jobs])
        for (i, path, text), findings in zip(jobs, results, strict=True):
            if findings:
                self._apply(outcomes[i], path, text, findings)
        return outcomes

    def _apply(self, out: Outcome, path: str, text: str, findings: list[Finding]) -> None:
        out.findings.extend((path, f) for f in findings)
        if self.options.operator == "drop":
            out.dropped = True
            return
        if not out.changed:  # never modify the caller's record: the pipeline still needs it
            out.value = copy.deepcopy(out.value)
        pieces, pos = [], 0
        for f in findings:  # sorted, non-overlapping
            pieces += [text[pos : f.start], self.token(f, text[f.start : f.end])]
            pos = f.end
        pieces.append(text[pos:])
        set_path(out.value, path, "".join(pieces))
        out.changed = True

    def token(self, f: Finding, value: str) -> str:
        """What replaces one found value."""
        op = self.options.operator
        if op == "mask":
            return "".join(c if c.isspace() else "*" for c in value)
        if op == "redact":
            return ""
        if op == "hash":
            key = self.options.hash_key or b""
            digest = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
            return f"<{f.type}:{digest[:16]}>"
        return f"<{f.type}>"
