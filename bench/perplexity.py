"""Perplexity of opengemma, llama.cpp and transformers on the same windows of a fixed text.

    python bench/perplexity.py                          # bench/data/prose.txt, 512-token windows
    python bench/perplexity.py --engines opengemma,llama.cpp --ppl-window 256

A faster kernel (quantized weights, another dtype) must stay within about 1% of the float32
path: pass opengemma's options with --dtype / --load-option KEY=VALUE. Same options as
`opengemma bench`; results go to bench/results/perplexity.{json,md} unless told otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from opengemma.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def run(argv: list[str]) -> int:
    args = ["bench", "--no-speed", *argv]
    if "--json" not in argv:
        args += ["--json", str(RESULTS / "perplexity.json")]
    if "--markdown" not in argv:
        args += ["--markdown", str(RESULTS / "perplexity.md")]
    return main(args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
