"""Peak RSS while loading a Gemma-2B-shaped random checkpoint, per format (a benchmark).

    python bench/checkpoint_memory.py [--preset gemma-2b] [--dir /tmp/og-mem]

Writes the checkpoint once (bfloat16 safetensors directory, float16 GGUF, bfloat16
gemma_pytorch .ckpt; ~5 GB each for gemma-2b), then loads each in a fresh subprocess with
`load_checkpoint(path, torch.bfloat16)` + `build_model`, touches every weight, and reports the
child's peak RSS minus its RSS after imports, against the weights' in-memory size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

CHILD = r"""
import json, sys, time, torch
from opengemma.build import build_model
from opengemma.checkpoint import load_checkpoint
import opengemma.model, gguf, safetensors  # imports count in the baseline, not the load
def status_mb(key):  # VmHWM is reset at exec (getrusage's ru_maxrss is inherited from the parent)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
base = status_mb("VmRSS")
t = time.perf_counter()
ckpt = load_checkpoint(sys.argv[1], torch.bfloat16)
model = build_model(ckpt, torch.bfloat16, "cpu")
for p in model.parameters():  # fault every page in: the model as it is used
    p.view(-1)[:: 2048].float().sum()
weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
print(json.dumps({"baseline_mb": base, "peak_mb": status_mb("VmHWM"), "weights_mb": weights,
                  "rss_after_mb": status_mb("VmRSS"), "load_s": time.perf_counter() - t}))
"""


def write_all(preset: str, folder: Path) -> dict[str, Path]:
    from opengemma.checkpoint import expected_shapes
    from opengemma.checkpoint.gguf_quantize import Q
    from opengemma.checkpoint.gguf_writer import write_gguf
    from opengemma.checkpoint.hf_writer import write_hf
    from opengemma.config import PRESETS

    cfg = PRESETS[preset]
    out = {"hf": folder / "hf", "gguf": folder / "model.gguf", "ckpt": folder / "model.ckpt"}
    if all(p.exists() for p in out.values()):
        return out
    g = torch.Generator().manual_seed(0)
    tensors = {n: (torch.randn(s, generator=g, dtype=torch.float32) * 0.02).to(torch.bfloat16)
               for n, s in expected_shapes(cfg).items()}  # fmt: skip
    write_hf(cfg, tensors, out["hf"], torch.bfloat16, overwrite=True)
    write_gguf(cfg, tensors, out["gguf"], Q.F16, overwrite=True)
    state = {}
    for n, t in tensors.items():
        if ".self_attn.q_proj." in n:
            p = n.replace("q_proj", "{}")
            qkv = torch.cat([tensors[p.format(x)] for x in ("q_proj", "k_proj", "v_proj")])
            state["model." + n.replace("q_proj", "qkv_proj")] = qkv
        elif ".k_proj." in n or ".v_proj." in n:
            continue
        elif n == "embed_tokens.weight":
            state["embedder.weight"] = t
        else:
            name = n.replace("pre_feedforward_layernorm", "post_attention_layernorm")
            state["model." + name.replace("q_norm", "query_norm").replace("k_norm", "key_norm")] = t
    torch.save({"model_state_dict": state}, out["ckpt"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gemma-2b")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/opengemma-memory"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    paths = write_all(args.preset, args.dir)
    print(f"wrote {args.preset} checkpoints in {time.perf_counter() - t:.0f}s under {args.dir}")
    for fmt, path in paths.items():
        res = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                             text=True, check=True)  # fmt: skip
        r = json.loads(res.stdout.strip().splitlines()[-1])
        grew = r["peak_mb"] - r["baseline_mb"]
        print(f"{fmt:5s} weights {r['weights_mb']:6.0f} MiB  peak RSS {r['peak_mb']:6.0f} MiB "
              f"(after imports {r['baseline_mb']:.0f})  load growth {grew:6.0f} MiB = "
              f"{grew / r['weights_mb']:.2f}x weights  load {r['load_s']:.0f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
