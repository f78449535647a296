"""Streaming (memory flat while the input grows 10x) and the Ray engine matching the local one."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from opengemma.data import ScrubJob, ScrubOptions, run_scrub


def _corpus(path: Path, n: int) -> Path:
    filler = "lorem ipsum dolor sit amet " * 30
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = f"ticket {i}: mail user{i}@mailbox.org or 4539 1488 0343 6467. {filler}"
            fh.write(json.dumps({"id": i, "text": text}) + "\n")
    return path


def _peak(tmp_path: Path, n: int) -> tuple[int, int]:
    src = _corpus(tmp_path / f"in{n}.jsonl", n)
    job = ScrubJob([src], tmp_path / f"out{n}.jsonl",
                   ScrubOptions(types=frozenset({"EMAIL", "CREDIT_CARD"})),
                   findings=tmp_path / f"f{n}.jsonl")  # fmt: skip
    tracemalloc.start()
    try:
        report = run_scrub(job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.written == n and report.findings["EMAIL"] == n
    return peak, src.stat().st_size


@pytest.mark.slow
def test_memory_does_not_grow_with_input(tmp_path):
    small, small_size = _peak(tmp_path, 1_500)
    large, large_size = _peak(tmp_path, 15_000)
    assert large_size > 9 * small_size  # ~1.4 MB vs ~14 MB
    # Streaming: peak Python allocation is set by chunk size, not by input size.
    assert large < 1.5 * small + 512 * 1024, (small, large)
    assert large < large_size / 4


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path):
    import ray.data  # noqa: F401  (the ray extra is part of the dev install)

    rows = []
    for i in range(700):
        kind = i % 4
        text = ["Dear Maria Garcia, your card 4539 1488 0343 6467 is on file.",
                "nothing to see", f"ssh from 198.51.100.{i % 250} by ops@posteo.de",
                "Ship to 1600 Amphitheatre Parkway, Mountain View, CA 94043"][kind]  # fmt: skip
        rows.append({"id": i, "text": text})
    rows.append({"id": 700, "text": "duplicate"})
    rows.append({"id": 701, "text": "duplicate"})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n", encoding="utf-8")
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.jsonl"
        job = ScrubJob([src], out, ScrubOptions(), findings=tmp_path / f"{engine}.f.jsonl",
                       engine=engine, workers=1, dedup=True, chunk_size=64)  # fmt: skip
        report = run_scrub(job)
        results[engine] = (out.read_bytes(), job.findings.read_bytes(), report.to_dict())
    assert results["ray"][0] == results["local"][0]
    assert results["ray"][1] == results["local"][1]
    local, ray_ = results["local"][2], results["ray"][2]
    assert ray_["records"] == local["records"] and ray_["findings"] == local["findings"]
    assert local["records"]["quarantined"] == 1 and local["records"]["dropped"]["duplicate"] > 0
    assert ray_["engine"] == "ray"
