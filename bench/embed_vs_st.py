"""Embedding throughput, opengemma vs sentence-transformers, on the same saved model.

Two random EmbeddingGemma-shaped models are saved by sentence-transformers itself: the tiny
one of the tests (64 wide, 7 layers) and one shaped like EmbeddingGemma 300M (768 wide, 24
layers, 3 query heads and 1 KV head of 256, MLP 1152, vocabulary 262144 with the Gemma 3
tokenizer of the embedded model, Dense 768 -> 3072 -> 768: 308M parameters). Each engine
embeds the same texts, same thread count, same process, best of `--repeat` runs; opengemma
runs float32 (the exact path) and with int8 weights (`quant="q8"`). Texts/s and the largest
|difference| from sentence-transformers' vectors are printed.

    .venv/bin/python bench/embed_vs_st.py --texts 32 --words 40 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "the model reads every word of a long document and writes one vector for it so that "
    "search finds passages close in meaning even when they share no words at all"
).split()


def texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(n)]


def build_308m(root: Path) -> Path:
    """A random decoder of EmbeddingGemma 300M's shape + head, saved by sentence-transformers."""
    import transformers as tf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from opengemma.api import default_model_path
    from opengemma.tokenizer import Tokenizer

    base = root / "decoder"
    cfg = tf.Gemma3TextConfig(vocab_size=262_144, hidden_size=768, intermediate_size=1152,
                              num_hidden_layers=24, num_attention_heads=3, num_key_value_heads=1,
                              head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
                              max_position_embeddings=2048,
                              use_bidirectional_attention=True)  # fmt: skip
    torch.manual_seed(0)
    tf.Gemma3TextModel(cfg).save_pretrained(str(base))
    proto = Tokenizer.from_gguf(default_model_path()).model_proto
    (base / "tokenizer.model").write_bytes(proto.SerializeToString())
    (base / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "GemmaTokenizer", "add_bos_token": true, "add_eos_token": true}'
    )
    ident = torch.nn.Identity()
    modules = [Transformer(str(base), max_seq_length=2048), Pooling(768, "mean"),
               Dense(768, 3072, bias=False, activation_function=ident),
               Dense(3072, 768, bias=False, activation_function=ident), Normalize()]  # fmt: skip
    out = root / "st-308m"
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    (out / "tokenizer.model").write_bytes(proto.SerializeToString())
    return out


def best(fn, repeat: int) -> tuple[float, np.ndarray]:
    fn()  # warm up (first-call allocations, kernel builds)
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def measure(name: str, path: Path, sample: list[str], batch: int, repeat: int) -> None:
    from sentence_transformers import SentenceTransformer

    import opengemma

    st = SentenceTransformer(str(path), device="cpu")
    cut = st.tokenizer(sample, truncation=True, max_length=st.max_seq_length)
    n_tokens = sum(len(ids) for ids in cut["input_ids"])  # as embedded: within the input limit
    t_st, ref = best(lambda: st.encode(sample, batch_size=batch, normalize_embeddings=True), repeat)
    st = None  # free its weights before loading ours
    rows = [("sentence-transformers", t_st, 0.0)]
    for label, quant in (("opengemma float32", "none"), ("opengemma int8 (q8)", "q8")):
        lm = opengemma.load(str(path), dtype="float32" if quant == "none" else None, quant=quant,
                            threads=torch.get_num_threads())  # fmt: skip
        t, ours = best(lambda lm=lm: lm.embed(sample), repeat)
        rows.append((label, t, float(np.abs(ours - ref).max())))
        del lm
    print(f"\n{name}: {len(sample)} texts, {n_tokens} tokens, {torch.get_num_threads()} thread(s)")
    print(f"{'engine':<24}{'texts/s':>10}{'tokens/s':>11}{'vs ST':>8}{'max |diff|':>12}")
    for label, t, diff in rows:
        print(f"{label:<24}{len(sample) / t:>10.1f}{n_tokens / t:>11.0f}{t_st / t:>7.2f}x"
              f"{diff:>12.2e}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--words", type=int, default=40, help="words per text (~1 token each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="sentence-transformers' batch_size")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-308m", action="store_true", help="the tiny model only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tests.embed.conftest import build_tiny_embedding

    from opengemma.api import default_model_path

    sample = texts(args.texts, args.words)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_embedding(Path(tmp) / "tiny", default_model_path()).path
        measure("tiny EmbeddingGemma-shaped (tests/embed)", tiny, sample, args.batch, args.repeat)
        if not args.skip_308m:
            big = build_308m(Path(tmp) / "big")
            measure("308M EmbeddingGemma-shaped", big, sample, args.batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
