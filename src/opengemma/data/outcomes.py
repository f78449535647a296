"""How one record is reported: its id in findings, its quarantine entry, the text dedup sees.

Shared by the local pipeline and the Ray shard tasks so both write the same bytes.
"""

from __future__ import annotations

import base64
from typing import Any

from opengemma.data.formats import Record
from opengemma.data.scrub import Scrubber


def record_id(rec: Record) -> Any:
    """The record's `id` field when it is a string or an int, else its 0-based index."""
    value = rec.value or {}
    rid = value.get("id")
    return rid if isinstance(rid, str | int) and not isinstance(rid, bool) else rec.index


def has_own_id(rec: Record) -> bool:
    """True when `record_id` comes from the record (not from its position)."""
    rid = (rec.value or {}).get("id")
    return isinstance(rid, str | int) and not isinstance(rid, bool)


def quarantine_entry(rec: Record, reason: str) -> dict[str, Any]:
    """The quarantine line of an unreadable record: where it was, why, and its bytes."""
    entry: dict[str, Any] = {"file": rec.source, "line": rec.line, "index": rec.index,
                             "reason": reason}  # fmt: skip
    if rec.raw is not None:
        try:
            entry["raw"] = rec.raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_base64"] = base64.b64encode(rec.raw).decode("ascii")
    elif rec.value is not None:
        entry["value"] = rec.value
    return entry


def finding_entries(rid: Any, out: Any) -> list[dict[str, Any]]:
    """The findings-file lines of one record's `Outcome` (never the found values)."""
    return [{"record": rid, "field": path, "start": f.start, "end": f.end, "type": f.type,
             "score": f.score, "detector": f.detector} for path, f in out.findings]  # fmt: skip


def scanned_text(scrubber: Scrubber, value: dict[str, Any]) -> str:
    """The text decontamination and deduplication compare: the scanned fields, joined."""
    found = scrubber.targets(value)
    return "\n".join(t for _, t in found) if not isinstance(found, str) else ""
