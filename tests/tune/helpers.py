"""Shared builders for the tuning tests: a tiny random Gemma 3 checkpoint with a real tokenizer.

The tokenizer is the embedded Gemma 3 tokenizer cut to the tiny vocabulary (512 pieces: the
control tokens, `<start_of_turn>`/`<end_of_turn>`, the 256 byte pieces and the first merges),
so any text encodes (byte fallback) and `opengemma.load(dir)` works on the directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import VOCAB, build_reference, family_config, save_reference


def tiny_tokenizer_model(path: Path, tokenizer=None) -> Path:
    """Write the Gemma tokenizer cut to VOCAB pieces as a SentencePiece tokenizer.model."""
    from opengemma.api import default_model_path
    from opengemma.tokenizer import Tokenizer

    tokenizer = tokenizer or Tokenizer.from_gguf(default_model_path())
    proto = tokenizer.model_proto
    small = type(proto)()
    small.CopyFrom(proto)
    del small.pieces[VOCAB:]
    path.write_bytes(small.SerializeToString())
    return path


def tiny_checkpoint(directory: Path, tokenizer=None, seed: int = 0, **overrides):
    """Save a tiny random Gemma 3 (transformers) + tokenizer.model; returns the HF model."""
    ref = build_reference(family_config("gemma3", **overrides), seed=seed)
    save_reference(ref, directory)
    tiny_tokenizer_model(directory / "tokenizer.model", tokenizer)
    return ref


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# words for the fixed-answer-format task
FORMAT_WORDS = [
    "apple", "river", "stone", "cloud", "tiger", "maple", "piano", "lemon", "ocean", "candle",
    "forest", "silver", "garden", "pepper", "rocket", "violet",
]  # fmt: skip


def format_records(n: int, seed: int = 0) -> list[dict]:
    """prompt/completion records of a fixed answer format: `Word: w` -> ` <w>`."""
    import random

    rng = random.Random(seed)
    return [
        {"prompt": f"Word: {w}\nAnswer:", "completion": f" <{w}>"}
        for w in (rng.choice(FORMAT_WORDS) for _ in range(n))
    ]
