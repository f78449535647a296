"""Seeded mutation fuzzer for the GGUF and safetensors readers (a benchmark target, not a test).

    python bench/fuzz_checkpoints.py --seconds 600 --seed 1

Seeds are a valid tiny Gemma GGUF and a valid safetensors directory. Each iteration mutates one
seed (bit flips, byte overwrites, interesting integers written over 8/4-byte fields, truncation,
chunk duplication or deletion, header-length edits) and loads it with `load_checkpoint`. Any
exception other than CheckpointError, any load slower than a second, and any run whose memory
grows past the limit is a failure: the input is saved under --crashes and the run exits 1.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.checkpoint import malformed as M  # noqa: E402

from opengemma.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

INTERESTING = [0, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 255, 256, 4096, 2**16, 2**31 - 1, 2**31,
               2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]  # fmt: skip


def seeds() -> dict[str, bytes]:
    header = {
        "model.norm.weight": {"dtype": "F32", "shape": [M.HIDDEN], "data_offsets": [0, 128]},
        "model.embed_tokens.weight": {
            "dtype": "BF16",
            "shape": [M.VOCAB, M.HIDDEN],
            "data_offsets": [128, 128 + M.VOCAB * M.HIDDEN * 2],
        },
    }
    data = bytes(128 + M.VOCAB * M.HIDDEN * 2)
    return {"gguf": M.GGUFSpec().build(), "safetensors": M.st_bytes(header, data)}


def mutate(data: bytes, rng: random.Random, header_end: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        # most mutations hit the header, where the parsing happens
        pos = rng.randrange(min(len(b), header_end)) if b and rng.random() < 0.9 else (
            rng.randrange(len(b)) if b else 0)  # fmt: skip
        op = rng.randrange(7)
        if op == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos] = rng.randrange(256)
        elif op == 2:
            size = rng.choice([4, 8])
            value = rng.choice(INTERESTING) % (1 << (8 * size))
            b[pos : pos + size] = value.to_bytes(size, "little")
        elif op == 3:
            del b[rng.randrange(len(b) + 1) :]
        elif op == 4 and b:
            n = rng.randrange(1, 64)
            b[pos:pos] = b[pos : pos + n]
        elif op == 5 and b:
            del b[pos : pos + rng.randrange(1, 64)]
        elif op == 6:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(b)


def run_one(kind: str, data: bytes, folder: Path) -> None:
    if kind == "gguf":
        path = folder / "case.gguf"
        path.write_bytes(data)
    else:
        path = folder / "case"
        path.mkdir(exist_ok=True)
        (path / "config.json").write_text(json.dumps({
            "model_type": "gemma", "vocab_size": M.VOCAB, "hidden_size": M.HIDDEN,
            "intermediate_size": M.FFN, "num_hidden_layers": 1, "num_attention_heads": M.HEADS,
            "num_key_value_heads": M.KV, "head_dim": M.HEAD_DIM}))  # fmt: skip
        (path / "model.safetensors").write_bytes(data)
    try:
        load_checkpoint(path)
    except CheckpointError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    ap.add_argument("--max-rss-mb", type=float, default=2048)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    corpus = seeds()
    header_end = {"gguf": len(corpus["gguf"]) - (M.packed_offset(None)),
                  "safetensors": 8 + struct.unpack("<Q", corpus["safetensors"][:8])[0]}  # fmt: skip
    counts = {"gguf": 0, "safetensors": 0}
    slowest, start = 0.0, time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in corpus:  # warm up: imports and first-call costs are not the parser's
            run_one(kind, corpus[kind], folder)
        while time.monotonic() - start < args.seconds:
            kind = rng.choice(list(corpus))
            data = mutate(corpus[kind], rng, header_end[kind])
            t0 = time.monotonic()
            try:
                run_one(kind, data, folder)
            except Exception:  # anything but CheckpointError is a finding
                return report(args.crashes, kind, data, traceback.format_exc())
            took = time.monotonic() - t0
            slowest = max(slowest, took)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if took > 1.0 or rss > args.max_rss_mb:
                return report(args.crashes, kind, data, f"took {took:.2f}s, max RSS {rss:.0f} MB")
            counts[kind] += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fuzz: {sum(counts.values())} inputs ({counts}) in {args.seconds:.0f}s, seed "
          f"{args.seed}: no failure other than CheckpointError; "
        f"slowest load {slowest * 1000:.0f} ms, "
          f"max RSS {rss:.0f} MB")  # fmt: skip
    return 0


def report(folder: Path, kind: str, data: bytes, why: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{int(time.time())}.{kind}"
    path.write_bytes(data)
    print(f"fuzz: FAILURE on a {kind} input saved to {path}:\n{why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
