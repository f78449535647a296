"""The work of one input shard, as run inside a Ray task (no Ray import here).

Two passes per shard, each idempotent: everything it writes goes to a temporary file renamed
into place, and a `.done.json` marker (written last) says the pass finished, so a task that
dies half way and is retried, or a job restarted with `--resume`, rewrites or skips whole files
and never duplicates a record.

1. `scrub_shard`: read the shard, scrub, decontaminate; stage the surviving records, findings
   and quarantine entries (pickle stream) and their dedup keys (exact hash and MinHash band
   keys, each with the record's global order key `shard << 32 | row`) in one file per shard,
   sorted by hash partition, with the partitions' bounds beside it: the map side of the dedup
   shuffle (2 files per shard, however many partitions).
2. `reduce_partition` (one task per partition): reads its slice of every shard's key file
   (memory-mapped); every key occurrence but the first in input order marks its record as a
   duplicate (exact key) or near duplicate (a MinHash band).
3. `finish_shard`: drop the records the dedup shuffle marked, write the output part, findings
   and quarantine parts, with record indices shifted by the shard's offset among all inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opengemma.data.decontam import Decontaminator
from opengemma.data.dedup import Deduplicator, normalize
from opengemma.data.formats import (
    AtomicFile,
    JsonLinesWriter,
    Record,
    RecordWriter,
    read_records,
)
from opengemma.data.outcomes import (
    finding_entries,
    has_own_id,
    quarantine_entry,
    record_id,
    scanned_text,
)
from opengemma.data.scrub import Scrubber, ScrubOptions

FAULT_ENV = "OPENGEMMA_DATA_FAULT"  # test hook: "kill|raise:STAGE:SHARD:AFTER_RECORDS:MARKER"
EXACT = 0  # `kind` of an exact-duplicate key; MinHash band b has kind b + 1
ROW_BITS = 32
KEY_DTYPE = np.dtype([("kind", "u1"), ("key", "<u8"), ("order", "<u8")])  # 17 bytes a key


@dataclass(frozen=True)
class ShardTask:
    """What every shard task of one job shares (sent to the workers once per task)."""

    inputs: tuple[str, ...]
    fmt: str
    work: str  # the job's work folder (a file system every worker sees)
    options: ScrubOptions
    dedup: bool
    decontaminate: tuple[str, ...]
    ngram: int
    chunk_size: int
    template: str  # the input whose header/schema the output keeps (the first one)
    parts: int = 1  # hash partitions of the dedup shuffle
    fault: tuple[str, str, int, int, str] | None = None


@dataclass
class ShardSummary:
    """Counts of one shard (all the driver ever receives about its records)."""

    shard: int
    read: int = 0
    bytes_read: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    records_with_findings: int = 0
    kept: int = 0  # records entering deduplication
    written: int = 0
    part_bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ShardSummary:
        d = json.loads(text)
        for k in ("quarantine_reasons", "dropped", "findings"):
            d[k] = Counter(d[k])
        return cls(**d)


def staged(work: str, kind: str, shard: int, suffix: str) -> Path:
    return Path(work) / kind / f"{shard:05d}{suffix}"


def part_name(shard: int, fmt: str) -> str:
    return f"part-{shard:05d}.{fmt}"


def _maybe_fault(task: ShardTask, stage: str, shard: int, done: int) -> None:
    if task.fault is None:
        return
    mode, f_stage, f_shard, after, marker = task.fault
    if (f_stage, f_shard, after) != (stage, shard, done) or os.path.exists(marker):
        return
    Path(marker).write_text(f"{mode} {stage} shard {shard} after {done} records\n")
    if mode == "kill":
        os._exit(1)  # the worker process dies: Ray retries the task elsewhere
    raise RuntimeError(f"injected fault in {stage} of shard {shard}")


_cache: dict[bytes, Any] = {}


def _cached(key: tuple, build: Any) -> Any:
    """One Scrubber/Decontaminator per worker process and job (detectors load once)."""
    k = pickle.dumps(key)
    if k not in _cache:
        _cache[k] = build()
    return _cache[k]


def _done(task: ShardTask, kind: str, shard: int) -> ShardSummary | None:
    marker = staged(task.work, kind, shard, ".done.json")
    return ShardSummary.from_json(marker.read_text()) if marker.is_file() else None


def _mark_done(task: ShardTask, kind: str, summary: ShardSummary) -> None:
    out = AtomicFile(staged(task.work, kind, summary.shard, ".done.json"))
    out.fh.write(summary.to_json().encode("utf-8"))
    out.commit()


def scrub_shard(row: dict[str, Any], task: ShardTask, resume: bool) -> dict[str, Any]:
    """Pass 1 of shard `row["shard"]`; returns {"shard", "summary"} (JSON counts)."""
    shard = int(row["shard"])
    if resume and (prev := _done(task, "scrub", shard)) is not None:
        return {"shard": shard, "summary": prev.to_json(), "resumed": True}
    scrubber = _cached(("scrub", task.options), lambda: Scrubber(task.options))
    decontam = None
    if task.decontaminate:
        decontam = _cached(("decontam", task.decontaminate, task.ngram),
                           lambda: Decontaminator([Path(p) for p in task.decontaminate],
                                                  task.ngram))  # fmt: skip
    dedup = Deduplicator() if task.dedup else None
    summary = ShardSummary(shard)
    stage = AtomicFile(staged(task.work, "scrub", shard, ".pkl"))
    # 8-byte machine integers, not Python ints: 11 keys per kept record
    keys = {"kind": array("B"), "key": array("Q"), "order": array("Q")}
    try:
        batch: list[Record] = []
        for rec in read_records([Path(task.inputs[shard])], task.fmt):
            batch.append(rec)
            if len(batch) == task.chunk_size:
                _scrub_batch(batch, scrubber, decontam, dedup, summary, stage.fh, keys)
                batch = []
                _maybe_fault(task, "scrub", shard, summary.read)
        _scrub_batch(batch, scrubber, decontam, dedup, summary, stage.fh, keys)
        if dedup is not None:
            _write_keys(task, shard, keys)
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    _mark_done(task, "scrub", summary)
    return {"shard": shard, "summary": summary.to_json(), "resumed": False}


def _scrub_batch(batch: list[Record], scrubber: Scrubber, decontam: Decontaminator | None,
                 dedup: Deduplicator | None, summary: ShardSummary, fh: Any,
                 keys: dict[str, array]) -> None:  # fmt: skip
    """Route one chunk as the local pipeline's `_Run.handle` does, deferring dedup."""
    if not batch:
        return
    outcomes = scrubber.process([r.value for r in batch])
    for rec, out in zip(batch, outcomes, strict=True):
        summary.read += 1
        summary.bytes_read += rec.nbytes
        error = rec.error or out.error
        if error is not None:
            summary.quarantined += 1
            summary.quarantine_reasons[error.split(" at ")[0]] += 1
            pickle.dump(("q", quarantine_entry(rec, error)), fh)
            continue
        if out.findings:
            summary.records_with_findings += 1
            for _, f in out.findings:
                summary.findings[f.type] += 1
            own = has_own_id(rec)
            pickle.dump(("f", finding_entries(record_id(rec), out), own), fh)
        if out.dropped:
            summary.dropped["pii"] += 1
            continue
        if decontam is not None and decontam.contaminated(scanned_text(scrubber, rec.value)):
            summary.dropped["contaminated"] += 1
            continue
        if dedup is not None:
            _add_keys(keys, dedup, scanned_text(scrubber, out.value), rec.index)
        summary.kept += 1
        pickle.dump(("r", rec.index, rec.line, rec.raw, out.value, out.changed), fh)


def _add_keys(keys: dict[str, array], dedup: Deduplicator, text: str, row: int) -> None:
    norm = normalize(text)
    exact = hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest()
    found = [exact] + (dedup.band_keys(norm) if dedup.near else [])
    for kind, k in enumerate(found):
        keys["kind"].append(kind)
        keys["key"].append(int.from_bytes(k, "little"))
        keys["order"].append(row)


def partition_of(kind: np.ndarray, key: np.ndarray, parts: int) -> np.ndarray:
    """The hash partition of each (kind, key): every occurrence of a key meets in one."""
    mixed = key ^ (kind.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return (mixed % np.uint64(parts)).astype(np.int64)


def _write_keys(task: ShardTask, shard: int, keys: dict[str, array]) -> None:
    """The map side of the dedup shuffle: this shard's keys sorted by hash partition
    (`NNNNN.keys.npy`) and where each partition starts (`NNNNN.bounds.npy`, parts + 1)."""
    kind = np.frombuffer(keys["kind"], np.uint8)
    key = np.frombuffer(keys["key"], np.uint64)
    part = partition_of(kind, key, task.parts)
    idx = np.argsort(part, kind="stable")
    rows = np.empty(len(idx), KEY_DTYPE)
    rows["kind"], rows["key"] = kind[idx], key[idx]
    rows["order"] = (np.uint64(shard) << np.uint64(ROW_BITS)) | np.frombuffer(
        keys["order"], np.uint64
    )[idx]
    bounds = np.searchsorted(part[idx], np.arange(task.parts + 1)).astype(np.int64)
    folder = Path(task.work) / "keys"
    folder.mkdir(exist_ok=True)
    for name, data in ((f"{shard:05d}.bounds.npy", bounds), (f"{shard:05d}.keys.npy", rows)):
        out = AtomicFile(folder / name)
        try:
            np.save(out.fh, data)
            out.commit()
        except BaseException:
            out.abort()
            raise


def shard_drops(work: str, shard: int) -> dict[int, str]:
    """row -> "duplicate" | "near_duplicate" for shard `shard`, from every dedup partition's
    sorted (order, kind) file (memory: this shard's dropped rows only)."""
    lo, hi = shard << ROW_BITS, (shard + 1) << ROW_BITS
    drops: dict[int, str] = {}
    folder = Path(work) / "drops"
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        with np.load(path) as z:
            order, kind = z["order"], z["kind"]
        a, b = np.searchsorted(order, [lo, hi])
        for o, k in zip(order[a:b].tolist(), kind[a:b].tolist(), strict=True):
            if k == EXACT:
                drops[o - lo] = "duplicate"  # an exact duplicate is never called a near one
            else:
                drops.setdefault(o - lo, "near_duplicate")
    return drops


def finish_shard(row: dict[str, Any], task: ShardTask, resume: bool, offset: int,
                 part_dir: str, findings: bool) -> dict[str, Any]:  # fmt: skip
    """Pass 2 of shard `row["shard"]`: the output part and its side parts."""
    shard = int(row["shard"])
    if resume and (prev := _done(task, "final", shard)) is not None:
        return {"shard": shard, "summary": prev.to_json(), "resumed": True}
    drops = shard_drops(task.work, shard) if task.dedup else {}
    summary = ShardSummary(shard)
    part = Path(part_dir) / part_name(shard, task.fmt)
    writers = [
        RecordWriter(part, task.fmt, Path(task.template)),
        JsonLinesWriter(staged(task.work, "final", shard, ".quarantine.jsonl"), 0o600),
    ]
    if findings:
        writers.append(JsonLinesWriter(staged(task.work, "final", shard, ".findings.jsonl")))
    try:
        with open(staged(task.work, "scrub", shard, ".pkl"), "rb") as fh:
            _route_staged(fh, writers, drops, summary, offset, task, shard)
        for w in writers:
            w.commit()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    summary.part_bytes = part.stat().st_size
    _mark_done(task, "final", summary)
    return {"shard": shard, "summary": summary.to_json(), "resumed": False}


def _route_staged(fh: Any, writers: list[Any], drops: dict[int, str], summary: ShardSummary,
                  offset: int, task: ShardTask, shard: int) -> None:  # fmt: skip
    out, quarantine = writers[0], writers[1]
    findings = writers[2] if len(writers) > 2 else None
    while True:
        try:
            item = pickle.load(fh)
        except EOFError:
            return
        if item[0] == "r":
            _, index, line, raw, value, changed = item
            if index in drops:
                summary.dropped[drops[index]] += 1
                continue
            out.write(Record(index + offset, task.inputs[shard], line, value, raw), value,
                      changed)  # fmt: skip
            summary.written += 1
            if summary.written % task.chunk_size == 0:
                _maybe_fault(task, "final", shard, summary.written)
        elif item[0] == "f" and findings is not None:
            for entry in item[1]:
                if not item[2]:
                    entry["record"] += offset
                findings.write(entry)
        elif item[0] == "q":
            item[1]["index"] += offset
            quarantine.write(item[1])


def first_only(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dedup reducer for one hash partition: every (kind, key) occurrence but the first in
    global order, as (order, kind) rows -- the records an earlier record already covers."""
    kind, key, order = batch["kind"], batch["key"], batch["order"]
    idx = np.lexsort((order, key, kind))  # by kind, then key, then order
    k, h = kind[idx], key[idx]
    later = np.zeros(len(idx), dtype=bool)
    later[1:] = (k[1:] == k[:-1]) & (h[1:] == h[:-1])
    return {"order": order[idx][later], "kind": k[later]}


def reduce_partition(row: dict[str, Any], work: str) -> dict[str, Any]:
    """The reduce side of the dedup shuffle, for hash partition `row["part"]`: gather its
    keys from every shard, save the dropped (order, kind) rows sorted by order (a retried
    task writes the same file again); returns how many."""
    p = int(row["part"])
    slices = []
    folder = Path(work) / "keys"
    for path in sorted(folder.glob("*.keys.npy")) if folder.is_dir() else []:
        bounds = np.load(path.with_name(path.name.replace(".keys.", ".bounds.")))
        rows = np.load(path, mmap_mode="r")  # only this partition's slice is read
        slices.append(np.array(rows[bounds[p] : bounds[p + 1]]))
    if not slices or not sum(len(x) for x in slices):
        return {"part": p, "dropped": 0}
    keys = np.concatenate(slices)
    later = first_only({k: keys[k] for k in ("kind", "key", "order")})
    idx = np.argsort(later["order"], kind="stable")
    out = AtomicFile(Path(work) / "drops" / f"{p:05d}.npz")
    try:
        np.savez(out.fh, order=later["order"][idx], kind=later["kind"][idx])
        out.commit()
    except BaseException:
        out.abort()
        raise
    return {"part": p, "dropped": len(idx)}
