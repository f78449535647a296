"""Speed and memory of opengemma beside llama.cpp and transformers on the same GGUF.

    python bench/speed.py                      # all engines, default threads and 1 thread
    python bench/speed.py --engines opengemma,llama.cpp --threads 2

Same options as `opengemma bench` (see `opengemma bench --help`); perplexity is left out and
the results go to bench/results/speed.{json,md} unless --json / --markdown say otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from opengemma.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def run(argv: list[str]) -> int:
    args = ["bench", "--no-perplexity", *argv]
    if "--json" not in argv:
        args += ["--json", str(RESULTS / "speed.json")]
    if "--markdown" not in argv:
        args += ["--markdown", str(RESULTS / "speed.md")]
    return main(args)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
