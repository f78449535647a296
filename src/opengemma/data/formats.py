"""Streaming readers and atomic writers for JSONL, CSV, plain text and Parquet corpora.

Readers yield one `Record` at a time (memory bounded by one line or one Parquet batch), keep
the original bytes of line formats so unchanged records are written back byte for byte, and
turn anything unreadable into a `Record` with an `error` (the pipeline quarantines it) instead
of stopping. Writers write to a temporary file next to the target and rename it on `commit`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from opengemma.atomic import AtomicPath
from opengemma.errors import OpenGemmaError

FORMATS = ("jsonl", "parquet", "csv", "txt")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
             ".csv": "csv", ".txt": "txt", ".text": "txt"}  # fmt: skip


class ScrubError(OpenGemmaError):
    """A scrub run cannot start or finish: bad arguments, missing input, unwritable output."""


@dataclass(slots=True)
class Record:
    """One input record. `value` is None exactly when `error` says why it could not be read."""

    index: int  # 0-based position among all input records, across all inputs
    source: str  # the input file
    line: int  # 1-based line (JSONL, TXT), data row (CSV) or row (Parquet)
    value: dict[str, Any] | None
    raw: bytes | None = None  # original bytes of line formats, written back when unchanged
    error: str | None = None
    nbytes: int = 0  # input bytes this record covers (progress)


def detect_format(paths: Sequence[Path], fmt: str | None) -> str:
    """The format named by `fmt`, else the one all input suffixes agree on."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ScrubError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return fmt
    found = {_SUFFIXES.get(p.suffix.lower()) for p in paths}
    if len(found) != 1 or None in found:
        names = ", ".join(p.name for p in paths)
        raise ScrubError(f"cannot tell the format of {names}; pass --format {'|'.join(FORMATS)}")
    return found.pop()  # type: ignore[return-value]


def read_records(paths: Sequence[Path], fmt: str) -> Iterator[Record]:
    """All records of all inputs, in order, numbered across inputs."""
    reader = {"jsonl": _read_jsonl, "txt": _read_txt, "csv": _read_csv, "parquet": _read_parquet}
    index = 0
    for path in paths:
        for rec in reader[fmt](path):
            rec.index = index
            index += 1
            yield rec


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for no, line in enumerate(fh, 1):
            if no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            yield no, line


def _decode(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start}"


def _read_jsonl(path: Path) -> Iterator[Record]:
    for no, line in _lines(path):
        if not line.strip():
            continue  # blank lines are not records
        rec = Record(0, str(path), no, None, raw=line, nbytes=len(line))
        text, rec.error = _decode(line)
        if text is not None:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:  # the message holds positions, not content
                rec.error = f"invalid JSON: {exc.msg} at column {exc.colno}"
            else:
                if isinstance(value, dict):
                    rec.value = value
                else:
                    rec.error = f"not a JSON object (a {type(value).__name__})"
        yield rec


def _read_txt(path: Path) -> Iterator[Record]:
    for no, line in _lines(path):
        rec = Record(0, str(path), no, None, raw=line, nbytes=len(line))
        text, rec.error = _decode(line)
        if text is not None:
            rec.value = {"text": text.rstrip("\r\n")}
        yield rec


def _read_csv(path: Path) -> Iterator[Record]:
    with open(path, "rb") as raw_fh:
        fh = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            return
        if any(_has_surrogates(h) for h in header):
            raise ScrubError(f"{path}: the CSV header is not valid UTF-8")
        pos = raw_fh.tell()
        for no, row in enumerate(rows, 1):
            now = raw_fh.tell()
            rec = Record(0, str(path), no, None, nbytes=max(0, now - pos))
            pos = now
            rec.raw = _csv_line(row)
            if any(_has_surrogates(c) for c in row):
                rec.error = "invalid UTF-8"
            elif len(row) != len(header):
                rec.error = f"expected {len(header)} columns, got {len(row)}"
            else:
                rec.value = dict(zip(header, row, strict=True))
            yield rec


def _csv_line(row: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    return buf.getvalue().encode("utf-8", "surrogateescape")


def _has_surrogates(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s)


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ScrubError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    total = max(1, pf.metadata.num_rows)
    size = os.path.getsize(path)
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            row += 1
            yield Record(0, str(path), row, value, nbytes=size // total)


def parquet_schema(path: Path) -> Any:
    """The Arrow schema of a Parquet input (the output keeps it)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV input (the output keeps it)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return next(csv.reader(fh), [])


# ---------------------------------------------------------------------------- writers


class AtomicFile:
    """A binary file written under a temporary name (opengemma.atomic) and renamed into place
    on `commit`; `mode` is its final permissions (the temporary folder is private meanwhile)."""

    def __init__(self, path: Path, mode: int = 0o644) -> None:
        self.path = path
        try:
            self._out = AtomicPath(path, mode=mode)
        except OSError as exc:
            raise ScrubError(f"cannot write {path}: {exc.strerror}") from None
        self.fh: BinaryIO = open(self._out.path, "wb")  # noqa: SIM115 (closed by commit/abort)

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self._out.commit()

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self._out.abort()


class RecordWriter:
    """Writes records in the output format; `commit` makes the output appear, `abort` not."""

    def __init__(self, path: Path, fmt: str, template: Path | None = None) -> None:
        self.fmt, self.file = fmt, AtomicFile(path)
        self._csv: csv.DictWriter[str] | None = None
        self._text: io.TextIOWrapper | None = None
        self._rows: list[dict[str, Any]] = []
        self._pq: Any = None
        if fmt == "csv":
            self._text = io.TextIOWrapper(self.file.fh, encoding="utf-8", newline="")
            header = csv_header(template) if template else []
            self._csv = csv.DictWriter(self._text, fieldnames=header, extrasaction="ignore")
            self._csv.writeheader()
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            self._schema = parquet_schema(template) if template else None
            self._pq = pq.ParquetWriter(self.file.fh, self._schema)

    def write(self, rec: Record, value: dict[str, Any], changed: bool) -> None:
        """Write one record: its original bytes when unchanged (line formats), else `value`."""
        if self.fmt == "jsonl":
            line = (
                rec.raw
                if not changed and rec.raw is not None
                else (json.dumps(value, ensure_ascii=False).encode("utf-8"))
            )
            self.file.fh.write(line if line.endswith(b"\n") else line + b"\n")
        elif self.fmt == "txt":
            line = rec.raw if not changed and rec.raw else value["text"].encode("utf-8")
            self.file.fh.write(line if line.endswith(b"\n") else line + b"\n")
        elif self._csv is not None:
            self._csv.writerow(value)
        else:
            self._rows.append(value)
            if len(self._rows) >= 1024:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._pq.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def commit(self) -> None:
        if self._text is not None:
            self._text.flush()
            self._text.detach()
        if self._pq is not None:
            self._flush_parquet()
            self._pq.close()
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()


class JsonLinesWriter:
    """An atomic JSON-lines side file (findings, quarantine)."""

    def __init__(self, path: Path, mode: int = 0o644) -> None:
        self.file = AtomicFile(path, mode)
        self.count = 0

    def write(self, obj: dict[str, Any]) -> None:
        self.file.fh.write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def commit(self) -> None:
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()
