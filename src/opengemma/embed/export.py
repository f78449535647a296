"""A sentence-transformers EmbeddingGemma directory -> one GGUF file, as llama.cpp lays it out:
architecture `gemma-embedding`, the decoder's tensors, `dense_2.weight` / `dense_3.weight`
with `{arch}.dense_N_feat_in/out`, `{arch}.pooling_type`, and `add_eos_token` from the
tokenizer files."""

from __future__ import annotations

from pathlib import Path

import torch

from opengemma.embed.head import ACTIVATIONS, GGUF_DENSE, GGUF_POOLING, load_hf_head
from opengemma.errors import ModelLoadError

_IDENTITY = next(iter(ACTIVATIONS))  # torch.nn.modules.linear.Identity


def export_gguf(src: str | Path, dst: str | Path, quant: str = "f32",
                overwrite: bool = False) -> Path:  # fmt: skip
    """Write the model at `src` (decoder at the root + modules.json) as a GGUF at `dst`.

    `quant`: the stored type of the matrices (f32, f16, bf16, q8_0, ...).
    """
    from opengemma.checkpoint import load_checkpoint
    from opengemma.checkpoint.gguf_quantize import parse_type
    from opengemma.checkpoint.gguf_writer import write_gguf
    from opengemma.tokenizer import Tokenizer

    ckpt = load_checkpoint(src, torch.float32)
    cfg = ckpt.config
    head = load_hf_head(ckpt.path, cfg.hidden_size) if ckpt.format == "hf" else None
    if head is None:
        raise ModelLoadError(f"{src} is not a sentence-transformers directory (no modules.json)")
    if not (cfg.use_bidirectional_attention and cfg.family == "gemma3"):
        raise ModelLoadError(f"{src}: gemma-embedding files hold a bidirectional Gemma 3 decoder")
    codes = {mode: code for code, mode in GGUF_POOLING.items()}
    if head.pooling not in codes or not head.include_prompt:
        raise ModelLoadError(f"{src}: pooling {head.pooling!r} has no GGUF pooling type")
    if len(head.dense) > len(GGUF_DENSE) or any(
        d.bias is not None or d.activation != _IDENTITY for d in head.dense
    ):
        raise ModelLoadError(
            f"{src}: llama.cpp's layout holds at most two bias-free, identity Dense layers"
        )
    if ckpt.tokenizer_source is None:
        raise ModelLoadError(f"{src} has no tokenizer.model; copy it next to config.json")
    proto = Tokenizer.from_file(ckpt.tokenizer_source).model_proto
    dense = {f"{name}.weight": d.weight for name, d in zip(GGUF_DENSE, head.dense, strict=False)}
    dst = Path(dst)
    write_gguf(cfg, ckpt.tensors, dst, parse_type(quant), proto, None, overwrite,
               head=dense, pooling_type=codes[head.pooling], add_eos=head.add_eos)  # fmt: skip
    return dst
