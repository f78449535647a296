"""convert(src, dst, to=...): any checkpoint opengemma reads -> a Hugging Face dir or a GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from opengemma.checkpoint import CheckpointError, load_checkpoint, resolve_path
from opengemma.config import GemmaConfig

FLOAT_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


@dataclass
class ConvertResult:
    path: Path
    format: str  # "hf" | "gguf"
    config: GemmaConfig
    tensor_types: dict[str, str]  # our name -> stored type
    tokenizer: bool  # whether a tokenizer was written


def _tokenizer_proto(ckpt):
    """The source's SentencePiece ModelProto, or None when it has no tokenizer."""
    if ckpt.tokenizer_source is None:
        return None
    from opengemma.build import build_tokenizer

    return build_tokenizer(ckpt).model_proto


def _merged(ckpt, adapter: str | Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with a LoRA adapter folded in (merged in float32)."""
    from opengemma.build import build_model, merge_adapter

    model = merge_adapter(build_model(ckpt, torch.float32, "cpu"), adapter)
    return {name: t.detach().to(dtype) for name, t in model.state_dict().items()}


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    dtype: str = "bf16",
    quant: str | None = None,
    variant: str | None = None,
    overwrite: bool = False,
    adapter: str | Path | None = None,
) -> ConvertResult:
    """Convert `src` to `to` ("hf" or "gguf") at `dst`.

    `dtype` (f32, bf16, f16) is the stored float type; `quant` (q8_0, q4_0, q4_k, q6_k, ...)
    quantizes a GGUF output's matrices. `variant` names the preset of a .ckpt source.
    `adapter` (a PEFT-format LoRA directory) is merged into the weights before writing.
    """
    if to not in ("hf", "gguf"):
        raise CheckpointError(f"unknown output format {to!r}; use --to hf or --to gguf")
    if dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use f32, bf16 or f16")
    if quant is not None and to != "gguf":
        raise CheckpointError("--quant applies to GGUF output only; add --to gguf")
    src_path, dst = resolve_path(src), Path(dst).expanduser()
    if dst.resolve() == src_path.resolve():
        raise CheckpointError(f"the output {dst} is the input; choose another destination")
    torch_dtype = FLOAT_DTYPES[dtype]
    if quant is not None:
        from opengemma.checkpoint.gguf_quantize import parse_type

        qtype = parse_type(quant)
        torch_dtype = torch.float32 if dtype == "f32" else torch.bfloat16
    ckpt = load_checkpoint(src_path, torch.float32 if adapter else torch_dtype, variant)
    if adapter is not None:
        ckpt.tensors = _merged(ckpt, adapter, torch_dtype)
    proto = _tokenizer_proto(ckpt)
    if to == "hf":
        from opengemma.checkpoint.hf_writer import write_hf

        blob = proto.SerializeToString() if proto is not None else None
        write_hf(ckpt.config, ckpt.tensors, dst, torch_dtype, blob, overwrite)
        types = {n: dtype for n in ckpt.tensors}
    else:
        from opengemma.checkpoint.gguf_quantize import parse_type
        from opengemma.checkpoint.gguf_writer import write_gguf

        qtype = parse_type(quant or dtype)
        name = ckpt.info.get("metadata", {}).get("general.name")
        types = write_gguf(ckpt.config, ckpt.tensors, dst, qtype, proto, name, overwrite)
    return ConvertResult(dst, to, ckpt.config, types, proto is not None)
