"""Scale figures for the Ray engines: the scrub pipeline on a generated multi-shard corpus and
offline batch generation, each with 1 and 2 Ray workers on this machine.

    python bench/ray_scale.py                        # 1 GB corpus, 2,000 prompts (see README)
    python bench/ray_scale.py --size-gb 0.01 --prompts 40 --out /tmp/ray-scale.json   # a check

Every measurement runs in a fresh child process that starts its own local Ray cluster with
`--workers` CPUs, so nothing is shared between runs. Reported per run: wall time, throughput
(MB/s and records/s for the pipeline, records/s and generated tokens/s for batch generation),
the driver's peak RSS (its own VmHWM) and the largest peak RSS of any Ray worker process
(VmHWM of every descendant whose title is `ray::...`, sampled every 0.2 s while the job runs).

The pipeline uses the structured detectors only (every type but PERSON and STREET_ADDRESS):
with spaCy's NER it scans about 0.04 MB/s per core (docs/scrub.md), so 1 GB would take days.
The corpus has exact duplicates (across shards), near duplicates (one word added) and PII in
about a third of the records; it is generated once per size and seed and reused.
Batch generation: the embedded Gemma 3 270M, greedy, `--max-tokens` (16) per prompt, one
torch thread per worker and one model per Ray actor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NER_TYPES = {"PERSON", "STREET_ADDRESS"}
WORDS = ("the", "data", "model", "river", "market", "system", "green", "quiet", "seven", "build",
         "paper", "light", "north", "signal", "garden", "engine", "travel", "number", "simple",
         "report", "window", "winter", "energy", "history", "method", "silver", "ocean", "field",
         "letter", "forest", "circle", "music", "change", "public", "coffee", "planet",
         "stone")  # fmt: skip
TOPICS = ("rivers", "prime numbers", "bread", "the moon", "trains", "libraries", "bees", "rain",
          "chess", "volcanoes", "maps", "tea", "bridges", "owls", "glass", "salt")  # fmt: skip


# ------------------------------------------------------------------------------ inputs
def _pii(rng: random.Random, i: int) -> str:
    kind = i % 4
    if kind == 0:
        return f" Contact user{i}@mailbox.org for details."
    if kind == 1:
        return f" Card 4539 1488 0343 6467 was charged from 198.51.100.{i % 250}."
    if kind == 2:
        return f" SSN 123-45-{rng.randrange(1000, 9999)} is on file."
    return f" Login with api_key=sk_live_{rng.getrandbits(96):024x} today."


def make_corpus(folder: Path, size_gb: float, shards: int, seed: int) -> list[Path]:
    """JSONL shards totalling `size_gb` GB (1e9 bytes); reused when already made."""
    stamp = folder / "corpus.json"
    want = {"size_gb": size_gb, "shards": shards, "seed": seed}
    paths = [folder / f"shard-{s:05d}.jsonl" for s in range(shards)]
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_shard = int(size_gb * 1e9 / shards)
    recent: list[str] = []  # texts to copy from: duplicates cross shard boundaries
    i = 0
    for path in paths:
        written = 0
        with open(path, "w", encoding="utf-8") as fh:
            while written < per_shard:
                roll = rng.random()
                if roll < 0.08 and recent:
                    text = rng.choice(recent)  # an exact duplicate
                elif roll < 0.13 and recent:
                    text = rng.choice(recent) + " " + rng.choice(WORDS)  # a near duplicate
                else:
                    text = " ".join(rng.choices(WORDS, k=rng.randrange(60, 120))) + "."
                    if rng.random() < 0.33:
                        text += _pii(rng, i)
                    if len(recent) < 2000:
                        recent.append(text)
                    else:
                        recent[rng.randrange(2000)] = text
                line = json.dumps({"id": f"d{i}", "text": text}) + "\n"
                fh.write(line)
                written += len(line)
                i += 1
    stamp.write_text(json.dumps(want))
    return paths


def make_prompts(path: Path, n: int) -> Path:
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            topic = rng.choice(TOPICS)
            prompt = rng.choice((f"Write one sentence about {topic}.",
                                 f"Three facts about {topic}:", f"A short poem about {topic}:\n",
                                 f"Q: Why do people like {topic}?\nA:"))  # fmt: skip
            fh.write(json.dumps({"id": f"p{i}", "prompt": prompt}) + "\n")
    return path


# ------------------------------------------------------------------------------ memory
def _status(pid: int, key: str) -> int:
    """A /proc/PID/status field in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


class WorkerPeaks:
    """Samples the VmHWM of every Ray worker process below this one."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(os.getpid()):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"ray::") or b"default_worker.py" in cmd:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), _status(pid, "VmHWM"))
            self._stop.wait(0.2)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ one run (child)
def _ray_init(workers: int) -> None:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False


def child_scrub(args: argparse.Namespace) -> dict:
    from opengemma.data import ScrubJob, ScrubOptions, run_scrub
    from opengemma.safety.pii import TYPES

    inputs = sorted(Path(args.corpus).glob("shard-*.jsonl"))
    out = Path(args.out_dir) / f"scrubbed-{args.workers}w"
    types = frozenset(args.types.split(",")) if args.types else frozenset(TYPES) - NER_TYPES
    _ray_init(args.workers)
    # the "text" field only: a copied text under another id is an exact duplicate
    options = ScrubOptions(types=types, fields=("text",))
    job = ScrubJob(inputs, out, options, engine="ray", workers=args.workers, dedup=True,
                   shards=True)  # fmt: skip
    with WorkerPeaks() as peaks:
        started = time.perf_counter()
        report = run_scrub(job)
        elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in inputs)
    return {"job": "scrub", "workers": args.workers, "shards": len(inputs), "input_bytes": size,
            "records": report.read, "written": report.written, "dropped": dict(report.dropped),
            "types": sorted(types), "elapsed_s": round(elapsed, 2),
            "mb_per_s": round(size / 1e6 / elapsed, 3),
            "records_per_s": round(report.read / elapsed, 1),
            "driver_peak_rss_mb": round(_status(os.getpid(), "VmHWM") / 1e6, 1),
            "worker_peak_rss_mb": round(max(peaks.peaks.values(), default=0) / 1e6, 1),
            "worker_processes_seen": len(peaks.peaks)}  # fmt: skip


def child_generate(args: argparse.Namespace) -> dict:
    from opengemma.batch.jobs import BatchJob
    from opengemma.batch.run import run_batch

    out = Path(args.out_dir) / f"generated-{args.workers}w"
    _ray_init(args.workers)
    job = BatchJob("generate", Path(args.prompts_file), out, max_tokens=args.max_tokens,
                   engine="ray", workers=args.workers, threads=1, chunk_size=args.chunk_size,
                   max_batch=args.max_batch)  # fmt: skip
    with WorkerPeaks() as peaks:
        started = time.perf_counter()
        manifest = run_batch(job)
        elapsed = time.perf_counter() - started
    tokens = sum(json.loads(line).get("completion_tokens", 0)
                 for part in manifest["parts"] for line in (out / part).open())  # fmt: skip
    return {"job": "batch generate", "workers": args.workers, "records": manifest["records"],
            "max_tokens": args.max_tokens, "completion_tokens": tokens,
            "elapsed_s": round(elapsed, 2),
            "records_per_s": round(manifest["records"] / elapsed, 2),
            "tokens_per_s": round(tokens / elapsed, 1),
            "driver_peak_rss_mb": round(_status(os.getpid(), "VmHWM") / 1e6, 1),
            "worker_peak_rss_mb": round(max(peaks.peaks.values(), default=0) / 1e6, 1),
            "worker_processes_seen": len(peaks.peaks)}  # fmt: skip


# ------------------------------------------------------------------------------ driver
def _run_child(kind: str, workers: int, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--workers", str(workers),
           "--out-dir", str(args.work), *extra]  # fmt: skip
    env = {**os.environ, "OPENGEMMA_THREADS": "1", "OMP_NUM_THREADS": "1"}
    print(f"  {kind}, {workers} worker(s) ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{kind} with {workers} worker(s) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| job | workers | input | wall s | throughput | driver peak RSS | worker peak RSS |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["job"] == "scrub":
            what = (f"{r['input_bytes'] / 1e9:.2f} GB, {r['records']:,} records, "
                    f"{r['shards']} shards")  # fmt: skip
            speed = f"{r['mb_per_s']} MB/s ({r['records_per_s']:,} records/s)"
        else:
            what = f"{r['records']:,} prompts x {r['max_tokens']} tokens"
            speed = f"{r['records_per_s']} records/s ({r['tokens_per_s']} tok/s)"
        lines.append(f"| {r['job']} | {r['workers']} | {what} | {r['elapsed_s']} | {speed} | "
                     f"{r['driver_peak_rss_mb']} MB | {r['worker_peak_rss_mb']} MB |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="corpus size (1e9 bytes)")
    ap.add_argument("--shards", type=int, default=16, help="input files of the corpus")
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=8, help="rows each engine decodes together")
    ap.add_argument("--chunk-size", type=int, default=50, help="prompts per part")
    ap.add_argument("--types", default="", help="PII types (default: all but the NER ones)")
    ap.add_argument("--worker-counts", default="1,2")
    ap.add_argument("--jobs", default="scrub,generate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/opengemma-ray-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs/bench-results/ray-scale-2core.json")
    # child mode (one measurement)
    ap.add_argument("--child", choices=["scrub", "generate"], help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = (child_scrub if args.child == "scrub" else child_generate)(args)
        print(json.dumps(result))
        return
    import shutil

    args.work.mkdir(parents=True, exist_ok=True)
    for old in args.work.glob("scrubbed-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    for old in args.work.glob("generated-*"):
        shutil.rmtree(old)
    jobs, counts = args.jobs.split(","), [int(w) for w in args.worker_counts.split(",")]
    rows = []
    if "scrub" in jobs:
        corpus = args.work / f"corpus-{args.size_gb:g}gb-{args.shards}-{args.seed}"
        t = time.perf_counter()
        make_corpus(corpus, args.size_gb, args.shards, args.seed)
        print(f"corpus: {corpus} ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        extra = ["--corpus", str(corpus), "--types", args.types]
        rows += [_run_child("scrub", w, args, extra) for w in counts]
    if "generate" in jobs:
        prompts = make_prompts(args.work / f"prompts-{args.prompts}.jsonl", args.prompts)
        extra = ["--prompts-file", str(prompts), "--max-tokens", str(args.max_tokens),
                 "--chunk-size", str(args.chunk_size),
                 "--max-batch", str(args.max_batch)]  # fmt: skip
        rows += [_run_child("generate", w, args, extra) for w in counts]
    result = {"machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
              "args": {k: str(v) for k, v in vars(args).items() if not k.startswith("child")},
              "runs": rows, "speedup_2_vs_1": _speedups(rows)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    speedups = result["speedup_2_vs_1"].items()
    md = table(rows) + "\n\n" + "\n".join(f"- {k}, 2 vs 1 workers: {v}x" for k, v in speedups)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


def _speedups(rows: list[dict]) -> dict[str, float]:
    by = {(r["job"], r["workers"]): r["records_per_s"] for r in rows}
    return {job: round(by[(job, 2)] / by[(job, 1)], 2)
            for job in {r["job"] for r in rows} if (job, 1) in by and (job, 2) in by}  # fmt: skip


if __name__ == "__main__":
    main()
