"""Offline batch jobs over a JSONL file of records: generation, safety scoring, embedding.

The input is cut into chunks of `chunk_size` records (byte ranges found by one streaming scan
that also validates every line); each chunk becomes one output part `part-NNNNN.jsonl`,
written under a temporary name and renamed when whole, so `--resume` skips the parts that
exist and a retried chunk never duplicates a record. Output lines are keyed by the record's
`id` (else its 0-based line number among records) and keep the input order within a part.

A `Worker` holds one model: for generation, the continuous-batching `Engine` runs inside it and
takes a whole chunk at once; for embedding, an `Embedder` embeds the chunk batched by length
(every row equals that text embedded alone). The local engine runs one worker in this
process; the Ray engine (`batch.ray_batch`) one per actor.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opengemma.atomic import write_atomic
from opengemma.errors import OpenGemmaError

SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                   "presence_penalty", "frequency_penalty", "seed")  # fmt: skip


class BatchError(OpenGemmaError):
    """A batch job cannot start or go on: bad input, a changed job under --resume."""


@dataclass
class BatchJob:
    """One `opengemma batch` run."""

    task: str  # "generate" | "guard" | "embed"
    input: Path
    output: Path  # a folder: part files + manifest.json
    model: str | None = None
    max_tokens: int = 64
    sampling: dict[str, Any] = field(default_factory=dict)  # defaults for every record
    policies: tuple[str, ...] = ()  # guard: policy names (default: the standard four)
    dimensions: int | None = None  # embed: Matryoshka width (None: the model's)
    prompt: str | None = None  # embed: task prompt name ("query", "document", ...)
    pooling: str | None = None  # embed, causal decoders only: "mean" | "lasttoken"
    engine: str = "local"
    workers: int = 1
    threads: int = 1  # torch threads per worker
    max_batch: int = 8  # rows the engine decodes together
    chunk_size: int = 64
    address: str | None = None
    resume: bool = False
    progress: bool = False


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # byte offset of its first line
    end: int
    first: int  # record number of its first record
    records: int


def scan(job: BatchJob) -> list[Chunk]:
    """Validate every input line and cut the file into chunks (memory: one line)."""
    if not job.input.is_file():
        raise BatchError(f"input not found: {job.input}")
    chunks: list[Chunk] = []
    start = pos = count = 0
    with open(job.input, "rb") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                _check(line, no, job)
                if count % job.chunk_size == 0 and count:  # this line opens a new chunk
                    chunks.append(Chunk(len(chunks), start, pos, len(chunks) * job.chunk_size,
                                        job.chunk_size))  # fmt: skip
                    start = pos
                count += 1
            pos += len(line)
    if count:
        first = len(chunks) * job.chunk_size
        chunks.append(Chunk(len(chunks), start, pos, first, count - first))
    return chunks


def _check(line: bytes, no: int, job: BatchJob) -> None:
    where = f"{job.input}:{no}"
    try:
        rec = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchError(f"{where}: not a JSON line ({exc})") from None
    if not isinstance(rec, dict):
        raise BatchError(f"{where}: a record must be a JSON object")
    if job.task == "generate":
        ok = isinstance(rec.get("prompt"), str) or isinstance(rec.get("messages"), list)
        if not ok:
            raise BatchError(f'{where}: a record needs "prompt" (a string) or "messages"')
    elif job.task == "embed":
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BatchError(f'{where}: a record needs "text" (a non-empty string)')
    elif not isinstance(rec.get("prompt"), str):
        raise BatchError(f'{where}: a record needs "prompt" (and may have "response")')


def read_chunk(path: Path, chunk: Chunk) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(record id, record) for the records of one chunk."""
    with open(path, "rb") as fh:
        fh.seek(chunk.start)
        n = chunk.first
        for line in fh.read(chunk.end - chunk.start).splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            rid = rec.get("id")
            yield (rid if isinstance(rid, str | int) and not isinstance(rid, bool) else n), rec
            n += 1


class Worker:
    """One model and what one chunk needs from it (build it once per process or actor)."""

    def __init__(self, job: BatchJob) -> None:
        import opengemma

        self.job = job
        if job.task == "guard":
            from opengemma.safety.classifier import SafetyClassifier

            self.classifier = SafetyClassifier.load(job.model)
            self.lm = self.classifier.lm
        elif job.task == "embed":
            from opengemma.embed import Embedder

            self.lm = opengemma.load(job.model, threads=job.threads)
            self.embedder = Embedder(self.lm, pooling=job.pooling)
            self.embedder.check_dimensions(job.dimensions, "--dimensions")
            self.embedder.prompt(job.prompt)  # an unknown task name fails here, not per chunk
        else:
            from opengemma.engine import Engine

            self.lm = opengemma.load(job.model, threads=job.threads)
            self.engine = Engine(self.lm.model, self.lm.tokenizer, max_batch=job.max_batch,
                                 max_queue=max(job.chunk_size, 1)).start()  # fmt: skip
        if job.task == "guard":
            from opengemma.threads import configure_threads

            configure_threads(self.lm.model, job.threads)

    def run(self, records: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
        if self.job.task == "guard":
            return [self._score(rid, rec) for rid, rec in records]
        if self.job.task == "embed":
            return self._embed(records)
        return self._generate(records)

    def _embed(self, records: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
        """One vector per record (float32, written with its shortest round-trip digits)."""
        vectors = self.embedder.embed([rec["text"] for _, rec in records], self.job.dimensions,
                                      self.job.prompt)  # fmt: skip
        return [{"id": rid, "embedding": [float(str(v)) for v in row]}
                for (rid, _), row in zip(records, vectors, strict=True)]  # fmt: skip

    def _score(self, rid: Any, rec: dict[str, Any]) -> dict[str, Any]:
        try:
            scores = self.classifier.score(rec["prompt"], rec.get("response"),
                                           list(self.job.policies) or None)  # fmt: skip
        except OpenGemmaError as exc:
            return {"id": rid, "error": str(exc)}
        return {"id": rid, "scores": {s.policy: round(s.p_yes, 6) for s in scores}}

    def _request(self, rec: dict[str, Any]) -> Any:
        from opengemma.chat import chat_prompt_ids
        from opengemma.engine import GenerationRequest
        from opengemma.sampling import SamplingParams

        tok = self.lm.tokenizer
        ids = (chat_prompt_ids(tok, rec["messages"]) if "messages" in rec
               else tok.encode(rec["prompt"]))  # fmt: skip
        params = {**self.job.sampling, **{k: rec[k] for k in SAMPLING_FIELDS if k in rec}}
        stop = rec.get("stop") or ()
        return GenerationRequest(ids, int(rec.get("max_tokens", self.job.max_tokens)),
                                 SamplingParams(**params),
                                 stop=[stop] if isinstance(stop, str) else list(stop))  # fmt: skip

    def _generate(self, records: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Submit the whole chunk; the engine batches it; results in input order."""
        out: list[dict[str, Any]] = [{} for _ in records]
        done = [threading.Event() for _ in records]
        texts: list[list[str]] = [[] for _ in records]
        tokens = [0] * len(records)
        for i, (rid, rec) in enumerate(records):
            try:
                req = self._request(rec)
            except (OpenGemmaError, TypeError, ValueError) as exc:
                out[i] = {"id": rid, "error": str(exc)}
                done[i].set()
                continue

            def sink(event: Any, i: int = i, rid: Any = rid, n: int = len(req.prompt_ids)) -> None:
                texts[i].append(event.text)
                tokens[i] += event.token >= 0
                if event.finish_reason is not None:
                    out[i] = {"id": rid, "text": "".join(texts[i]),
                              "finish_reason": event.finish_reason, "prompt_tokens": n,
                              "completion_tokens": tokens[i]}  # fmt: skip
                    if event.error:
                        out[i]["error"] = event.error
                    done[i].set()

            try:
                self.engine.submit(req, sink)
            except OpenGemmaError as exc:
                out[i] = {"id": rid, "error": str(exc)}
                done[i].set()
        for ev in done:
            ev.wait()
        return out

    def close(self) -> None:
        if self.job.task == "generate":
            self.engine.shutdown()


def part_path(output: Path, chunk: Chunk) -> Path:
    return output / f"part-{chunk.index:05d}.jsonl"


def run_chunk(worker: Worker, job: BatchJob, chunk: Chunk) -> int:
    """Generate (or score) one chunk and write its part atomically; returns its records."""
    rows = worker.run(list(read_chunk(job.input, chunk)))
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_atomic(part_path(job.output, chunk), data)
    return len(rows)
