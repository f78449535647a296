"""The scrub pipeline on Ray Data (a local 2-CPU cluster, shared by this module) against the
local engine as the oracle: same records, findings and quarantine, whatever the shards, the
output layout, a killed worker or an interrupted and resumed run."""

from __future__ import annotations

import csv
import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from opengemma.cli import main
from opengemma.data import ScrubJob, ScrubOptions, run_scrub
from opengemma.data.formats import ScrubError
from opengemma.data.ray_shards import FAULT_ENV

TYPES = ScrubOptions(types=frozenset({"EMAIL", "CREDIT_CARD", "IP_ADDRESS", "US_SSN"}))


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # the ray extra is part of the dev install

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _text(i: int) -> str:
    words = " ".join(f"w{(i // 6 * 41 + k) % 89}" for k in range(40))
    kind = i % 6
    if kind == 0:
        return f"exact copy shared by many shards {i % 5}: the quick brown fox"
    if kind == 1:
        return f"{words} tail"
    if kind == 2:  # a near duplicate of the kind-1 text before it (one more word)
        return f"{words} tail extra"
    if kind == 3:
        return f"mail user{i}@mailbox.org, card 4539 1488 0343 6467, host 198.51.100.{i % 250}"
    if kind == 4:
        return f"SSN 123-45-{6789 - i % 100:04d} on file for record {i}"
    return f"QUARANTINE {i}"


def _corpus(folder: Path, shards: int, per_shard: int, seed: int = 0) -> list[Path]:
    """JSONL shards with exact duplicates across shards, near duplicates, PII and broken
    lines; every third record has an `id` (findings use ids, else global indices)."""
    folder.mkdir(exist_ok=True)
    paths = []
    for s in range(shards):
        path = folder / f"shard{s:02d}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for j in range(per_shard):
                i = seed + s * per_shard + j
                text = _text(i)
                if text.startswith("QUARANTINE"):
                    fh.write("{not json\n" if i % 12 == 5 else '["a list"]\n')
                    continue
                rec = {"id": f"r{i}", "text": text} if i % 12 == 3 else {"text": text}
                fh.write(json.dumps(rec) + "\n")
        paths.append(path)
    return paths


def _run(inputs: list[Path], out: Path, engine: str, **kw) -> tuple[dict, dict[str, bytes]]:
    job = ScrubJob(inputs, out, kw.pop("options", TYPES), findings=out.with_name(out.name + ".f"),
                   engine=engine, workers=2 if engine == "ray" else 1, chunk_size=32,
                   **kw)  # fmt: skip
    report = run_scrub(job).to_dict()
    files = {"findings": job.findings.read_bytes(), "quarantine": job.quarantine.read_bytes()}
    if out.is_file():
        files["output"] = out.read_bytes()
    return report, files


def _same_report(a: dict, b: dict) -> None:
    for key in ("records", "findings", "records_with_findings", "quarantine_reasons"):
        assert a[key] == b[key], key


def test_ray_equals_local_on_sharded_corpus(ray_cluster, tmp_path):
    inputs = _corpus(tmp_path / "in", shards=4, per_shard=90)
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text(json.dumps({"q": "copy shared by many shards 3: the quick brown"}) + "\n")
    kw = {"dedup": True, "decontaminate": [evalset]}
    local, lfiles = _run(inputs, tmp_path / "local.jsonl", "local", **kw)
    dropped = local["records"]["dropped"]
    assert dropped["duplicate"] > 0 and dropped["near_duplicate"] > 0
    assert dropped["contaminated"] > 0 and local["records"]["quarantined"] > 0
    assert local["findings"]["EMAIL"] > 0 and local["findings"]["US_SSN"] > 0

    ray_, rfiles = _run(inputs, tmp_path / "ray.jsonl", "ray", preserve_order=True, **kw)
    _same_report(local, ray_)
    assert rfiles == lfiles  # output, findings and quarantine byte for byte

    unordered, ufiles = _run(inputs, tmp_path / "unordered.jsonl", "ray", **kw)
    _same_report(local, unordered)
    assert sorted(ufiles["output"].splitlines()) == sorted(lfiles["output"].splitlines())

    out = tmp_path / "sharded"
    sharded, sfiles = _run(inputs, out, "ray", shards=True, **kw)
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [out / p["path"] for p in manifest["parts"]]
    assert [p["source"] for p in manifest["parts"]] == [str(p) for p in inputs]
    assert b"".join(p.read_bytes() for p in parts) == lfiles["output"]
    assert manifest["records"] == local["records"]["written"] == sum(
        p["records"] for p in manifest["parts"]
    )
    assert sfiles["findings"] == lfiles["findings"]
    assert not (out / ".opengemma-work").exists()


def test_many_dedup_partitions_equal_one(ray_cluster, tmp_path, monkeypatch):
    """Duplicates meet in their hash partition whatever the partition count (each reducer
    reads its slice of every shard's key file)."""
    from opengemma.data import ray_pipeline

    inputs = _corpus(tmp_path / "in", shards=3, per_shard=90)
    local, lfiles = _run(inputs, tmp_path / "local.jsonl", "local", dedup=True)
    monkeypatch.setattr(ray_pipeline, "PARTITION_BYTES", 1500)  # about 20 partitions
    ray_, rfiles = _run(inputs, tmp_path / "ray.jsonl", "ray", dedup=True, preserve_order=True)
    assert sum(p.stat().st_size for p in inputs) > 15 * 1500
    _same_report(local, ray_)
    assert rfiles == lfiles


def test_ray_equals_local_on_csv_and_parquet(ray_cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csvs, pqs = [], []
    for s in range(3):
        rows = [{"id": str(s * 40 + j), "text": _text(s * 40 + j + 3)} for j in range(40)]
        path = tmp_path / f"in{s}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, ["id", "text"])
            writer.writeheader()
            writer.writerows(rows)
        csvs.append(path)
        pqs.append(tmp_path / f"in{s}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), pqs[-1])
    for inputs, suffix in ((csvs, "csv"), (pqs, "parquet")):
        local, lfiles = _run(inputs, tmp_path / f"local.{suffix}", "local", dedup=True)
        ray_, rfiles = _run(inputs, tmp_path / f"ray.{suffix}", "ray", dedup=True,
                            preserve_order=True)  # fmt: skip
        _same_report(local, ray_)
        assert rfiles["findings"] == lfiles["findings"]
        if suffix == "csv":
            assert rfiles["output"] == lfiles["output"]
        else:
            assert (pq.read_table(tmp_path / "ray.parquet").to_pylist()
                    == pq.read_table(tmp_path / "local.parquet").to_pylist())  # fmt: skip


def _driver_peak(inputs: list[Path], out: Path) -> int:
    """Peak Python allocation of the driver over `run_scrub` alone (the lower of two runs:
    Ray's own threads allocate a few hundred KB at moments of their choosing). Only the run is
    traced: reading the findings back (as `_run` does) would count the test's own bytes."""
    peaks = []
    for _ in range(2):
        job = ScrubJob(inputs, out, TYPES, findings=out.with_name(out.name + ".f"),
                       engine="ray", workers=2, chunk_size=32, dedup=True)  # fmt: skip
        gc.collect()
        tracemalloc.start()
        try:
            run_scrub(job)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return min(peaks)


def test_driver_memory_does_not_grow_with_corpus(ray_cluster, tmp_path):
    small = _corpus(tmp_path / "small", shards=4, per_shard=300)
    large = _corpus(tmp_path / "large", shards=4, per_shard=3000, seed=10_000)
    size = lambda paths: sum(p.stat().st_size for p in paths)  # noqa: E731
    assert size(large) > 9.5 * size(small)
    _run(small, tmp_path / "warm.jsonl", "ray", dedup=True)  # imports and Ray's own caches
    peak_small = _driver_peak(small, tmp_path / "small.jsonl")
    peak_large = _driver_peak(large, tmp_path / "large.jsonl")
    # the records never pass through the driver: its peak is Ray's bookkeeping, not the data
    assert peak_large < 1.2 * peak_small, (peak_small, peak_large)


@pytest.mark.parametrize("stage", ["scrub", "final"])
def test_worker_killed_mid_shard_loses_and_duplicates_nothing(ray_cluster, tmp_path, stage,
                                                              monkeypatch):  # fmt: skip
    inputs = _corpus(tmp_path / "in", shards=3, per_shard=120)
    local, lfiles = _run(inputs, tmp_path / "local.jsonl", "local", dedup=True)
    marker = tmp_path / "killed"
    # shard 0, after 32 records (read, or written: the later shards keep fewer than 32 records
    # once duplicates of earlier shards are dropped)
    monkeypatch.setenv(FAULT_ENV, f"kill:{stage}:0:32:{marker}")
    ray_, rfiles = _run(inputs, tmp_path / "ray.jsonl", "ray", dedup=True, preserve_order=True)
    assert marker.is_file()  # the worker did die half way through the shard
    _same_report(local, ray_)
    assert rfiles == lfiles


def test_resume_after_interruption_equals_uninterrupted_run(ray_cluster, tmp_path, monkeypatch):
    inputs = _corpus(tmp_path / "in", shards=4, per_shard=90)
    local, lfiles = _run(inputs, tmp_path / "local.jsonl", "local", dedup=True)
    out = tmp_path / "ray"
    monkeypatch.setenv(FAULT_ENV, f"raise:scrub:2:32:{tmp_path / 'failed'}")
    with pytest.raises(ScrubError, match="--resume"):
        _run(inputs, out, "ray", dedup=True, shards=True)
    assert (out / ".opengemma-work" / "job.json").is_file()
    assert not (out / "manifest.json").exists()
    monkeypatch.delenv(FAULT_ENV)
    with pytest.raises(ScrubError, match="not empty"):  # only --resume may reuse the folder
        (out / "stray.txt").write_text("x")
        _run(inputs, out, "ray", dedup=True, shards=True)
    (out / "stray.txt").unlink()
    resumed, rfiles = _run(inputs, out, "ray", dedup=True, shards=True, resume=True)
    assert resumed["resumed_shards"] >= 1  # finished shards were not scrubbed again
    _same_report(local, resumed)
    parts = sorted(out.glob("part-*.jsonl"))
    assert b"".join(p.read_bytes() for p in parts) == lfiles["output"]
    assert rfiles["findings"] == lfiles["findings"]


def test_resume_refuses_a_changed_job(ray_cluster, tmp_path, monkeypatch):
    inputs = _corpus(tmp_path / "in", shards=2, per_shard=40)
    out = tmp_path / "ray"
    monkeypatch.setenv(FAULT_ENV, f"raise:scrub:1:32:{tmp_path / 'failed'}")
    with pytest.raises(ScrubError):
        _run(inputs, out, "ray", shards=True)
    monkeypatch.delenv(FAULT_ENV)
    with pytest.raises(ScrubError, match="different job"):
        _run(inputs, out, "ray", shards=True, resume=True, dedup=True)


def test_cli_ray_engine_equals_local(ray_cluster, tmp_path):
    """`opengemma scrub --engine ray` (one file in order, and --shards) gives the local
    engine's bytes; the CLI joins the cluster already running in this process."""
    inputs = _corpus(tmp_path / "in", shards=3, per_shard=60)
    base = ["scrub", *map(str, inputs), "--types", "EMAIL,CREDIT_CARD,IP_ADDRESS,US_SSN",
            "--dedup", "--no-progress"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "local.jsonl")]) == 0
    ray_out, parts = tmp_path / "ray.jsonl", tmp_path / "parts"
    ray_args = [*base, "--engine", "ray", "--workers", "2"]
    assert main([*ray_args, "-o", str(ray_out), "--preserve-order"]) == 0
    local = (tmp_path / "local.jsonl").read_bytes()
    assert ray_out.read_bytes() == local and local.count(b"\n") > 20
    assert main([*ray_args, "-o", str(parts), "--shards"]) == 0
    manifest = json.loads((parts / "manifest.json").read_text())
    assert [p["path"] for p in manifest["parts"]] == [f"part-{i:05d}.jsonl" for i in range(3)]
    assert b"".join((parts / p["path"]).read_bytes() for p in manifest["parts"]) == local


def test_sharding_options_need_the_ray_engine(tmp_path, capfd):
    inputs = _corpus(tmp_path / "in", shards=1, per_shard=6)
    with pytest.raises(ScrubError, match="--engine ray"):
        _run(inputs, tmp_path / "out.jsonl", "local", resume=True)
    out = tmp_path / "cli.jsonl"
    for flags in (["--resume"], ["--shards"], ["--address", "auto"]):
        assert main(["scrub", str(inputs[0]), "-o", str(out), *flags]) == 2  # a usage error
        err = capfd.readouterr().err.strip()
        assert err.startswith("opengemma: error: ") and len(err.splitlines()) == 1
        assert f"{flags[0]} work only with --engine ray" in err
        assert not out.exists()
