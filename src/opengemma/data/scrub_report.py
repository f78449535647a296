"""The scrub report: where every input record went, what was found, what ran, how fast."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opengemma.data.formats import AtomicFile


@dataclass
class Report:
    """Accounting of one run. Invariant: read == written + dropped + quarantined."""

    inputs: list[str]
    output: str
    format: str
    engine: str
    workers: int
    operator: str
    types: list[str]
    read: int = 0
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> records
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)  # type -> findings
    records_with_findings: int = 0
    detectors: list[dict[str, Any]] = field(default_factory=list)
    skipped_detectors: dict[str, str] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    bytes_read: int = 0
    elapsed_s: float = 0.0
    side_files: dict[str, str] = field(default_factory=dict)
    resumed_shards: int = 0  # shard passes a Ray `--resume` run found finished (and skipped)

    @property
    def accounted(self) -> bool:
        return self.read == self.written + sum(self.dropped.values()) + self.quarantined

    def to_dict(self) -> dict[str, Any]:
        secs = max(self.elapsed_s, 1e-9)
        return {
            "inputs": self.inputs,
            "output": self.output,
            "format": self.format,
            "engine": self.engine,
            "workers": self.workers,
            "operator": self.operator,
            "types": self.types,
            "stages": self.stages,
            "records": {
                "read": self.read,
                "written": self.written,
                "dropped": dict(sorted(self.dropped.items())),
                "quarantined": self.quarantined,
                "accounted": self.accounted,
            },
            "quarantine_reasons": dict(self.quarantine_reasons.most_common()),
            "findings": dict(sorted(self.findings.items())),
            "findings_total": sum(self.findings.values()),
            "records_with_findings": self.records_with_findings,
            "detectors": self.detectors,
            "skipped_detectors": self.skipped_detectors,
            "files": self.side_files,
            "resumed_shards": self.resumed_shards,
            "bytes_read": self.bytes_read,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.read / secs, 1),
            "mb_per_s": round(self.bytes_read / 1e6 / secs, 3),
        }

    def summary(self) -> str:
        """One line for the terminal: counts and types only, never values."""
        kinds = ", ".join(f"{t} {n}" for t, n in sorted(self.findings.items())) or "none"
        dropped = sum(self.dropped.values())
        return (
            f"{self.read} records: {self.written} written, {dropped} dropped, "
            f"{self.quarantined} quarantined; findings: {kinds}"
        )

    def write(self, path: Path) -> None:
        out = AtomicFile(path)
        try:
            out.fh.write(json.dumps(self.to_dict(), indent=2).encode("utf-8") + b"\n")
            out.commit()
        except BaseException:
            out.abort()
            raise
