"""From a Checkpoint to live objects: the model (int8 blocks where the checkpoint holds them),
the tokenizer, a LoRA adapter folded in; and the bytes the weights hold in memory.

`api.load` and `checkpoint.convert` both build through here, so converting a checkpoint never
reaches up into the user-facing API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from opengemma.checkpoint import Checkpoint, check_coverage
from opengemma.errors import ModelLoadError
from opengemma.model import GemmaModel

__all__ = ["build_model", "build_tokenizer", "merge_adapter", "weight_bytes"]


def build_model(ckpt: Checkpoint, dtype: torch.dtype, device: str | torch.device) -> GemmaModel:
    """Build on `meta` (no allocation), check key/shape coverage, then adopt the tensors
    (matrices the checkpoint holds as int8 blocks become opengemma.quantized_layers layers)."""
    with torch.device("meta"):
        model = GemmaModel(ckpt.config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    from opengemma.quantized_layers import block_shape
    from opengemma.stored_layers import StoredBlocks

    stored = {k: b for k, b in ckpt.quantized.items() if isinstance(b, StoredBlocks)}
    blocks = {k: b for k, b in ckpt.quantized.items() if k not in stored}
    shapes = {**ckpt.tensors, **{k: block_shape(b) for k, b in blocks.items()},
              **{k: b.shape for k, b in stored.items()}}  # fmt: skip
    check_coverage(shapes, expected, ckpt.path)
    tensors = {k: v.to(device=device, dtype=dtype) for k, v in ckpt.tensors.items()}
    if ckpt.quantized:
        from opengemma.quantized_layers import quantize_model
        from opengemma.stored_layers import adopt_stored

        adopt_stored(model, stored, dtype)  # blocks as the file stores them
        quantize_model(model, blocks, dtype)
        # the int8 buffers are in place already; everything else comes from the checkpoint
        tensors.update({k: v for k, v in model.state_dict().items() if k not in tensors})
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def build_tokenizer(ckpt: Checkpoint):
    """The checkpoint's Tokenizer (the loader's, or from its GGUF vocab or tokenizer.model)."""
    if ckpt.tokenizer is not None:  # built by the loader
        return ckpt.tokenizer
    from opengemma.tokenizer import Tokenizer

    src = ckpt.tokenizer_source
    if src is None:
        raise ModelLoadError(
            f"{ckpt.path} has no tokenizer.model; copy the checkpoint's SentencePiece "
            "tokenizer.model next to config.json"
        )
    if isinstance(src, (str, Path)):
        return Tokenizer.from_file(src)
    return Tokenizer.from_gguf(src)


def merge_adapter(model: GemmaModel, adapter: str | Path) -> GemmaModel:
    """Fold a PEFT-format LoRA adapter into the model's float weights (no LoRA layers remain)."""
    from opengemma.lora import load_adapter, unload

    load_adapter(model, adapter, merge_weights=True)
    unload(model, keep_merged=True)
    return model.requires_grad_(False)


def weight_bytes(module: Any) -> int:
    """Bytes of memory held by a torch module's parameters and buffers, each storage counted
    once (a tied embedding / output projection is one storage). This is what one decode step
    reads when every weight is used once per token."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers()]:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without one storage
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())
