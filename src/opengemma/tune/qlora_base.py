"""A frozen, weight-only quantized base for QLoRA: int8 per block of 32 or int4 per group.

The base linears of the decoder are replaced by `FrozenQuantLinear`, which keeps only the
integer codes and float32 scales (about a quarter or an eighth of the float32 bytes) and
dequantizes in forward. Its autograd function saves nothing for backward but re-dequantizes
there, so float weights never stay alive across the network during a training step. LoRA
adapters wrap these modules like any linear and train in float32.

8 bits: the block-quantized int8 format of `opengemma.quantized_layers` (one scale per 32
weights, the format of the fast inference path; a `Q8Linear` is adopted as is). 4 bits:
symmetric absmax per group of `group_size` input columns, `s = max|w_group| / 7`, codes in
[-8, 7] packed two per byte. The embedding (tied to the output projection) stays in the
model's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opengemma.lora import AdapterError
from opengemma.quantized_layers import Q8Linear

QK = 32  # weights per int8 scale (opengemma.quantized_layers's block size)
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FrozenQuantLinear(nn.Module):
    """y = x @ dequant(q).T; integer codes and scales are buffers, nothing here trains."""

    def __init__(self, weight: torch.Tensor, bits: int = 4, group_size: int = 64) -> None:
        super().__init__()
        if bits not in (4, 8):
            raise AdapterError(f"QLoRA base supports 4 or 8 bits, got {bits}")
        self.out_features, self.in_features = weight.shape
        self.bits, self.dtype = bits, weight.dtype
        if bits == 8:
            self.group_size = QK
            codes, scale = _q8(weight)  # (out, in) int8, (out, in/32) float32
        else:
            codes, scale = _q4(weight, group_size)
            self.group_size = group_size
        self.register_buffer("codes", codes.to(weight.device))
        self.register_buffer("scales", scale.to(weight.device))

    @classmethod
    def from_q8(cls, layer: nn.Module) -> FrozenQuantLinear:
        """Adopt an `opengemma.quantized_layers.Q8Linear` (the same codes and scales, no
        requantization)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.out_features, self.in_features = layer.out_features, layer.in_features
        self.bits, self.dtype, self.group_size = 8, torch.float32, QK
        from opengemma.quantized_layers import split_q8_0

        codes, scales = split_q8_0(layer.blocks)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        return self

    def dequantize(self) -> torch.Tensor:
        """The float weight (out, in) in the original dtype."""
        if self.bits == 8:
            return _dequant_q8(self.codes, self.scales).to(self.dtype)
        lo = (self.codes & 0x0F).to(torch.int8) - 8
        hi = (self.codes >> 4).to(torch.int8) - 8
        q = torch.stack([lo, hi], dim=-1).view(self.out_features, -1, self.group_size)
        return (q.float() * self.scales.unsqueeze(-1)).view(self.out_features, -1).to(self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        return _DequantLinear.apply(x, self)

    def extra_repr(self) -> str:
        sizes = f"in={self.in_features}, out={self.out_features}"
        return f"{sizes}, bits={self.bits}, group={self.group_size}"


class _DequantLinear(torch.autograd.Function):
    """Linear with a frozen quantized weight; backward gives only the input gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: FrozenQuantLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        return F.linear(x, layer.dequantize().to(x.dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        w = ctx.layer.dequantize().to(grad_out.dtype)
        return grad_out @ w, None


def _q4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float -> packed codes (out, in/2) uint8 and scales (out, in/group) float32."""
    out_f, in_f = weight.shape
    if in_f % group_size:
        raise AdapterError(
            f"int4 needs the input size ({in_f}) to be a multiple of the group size "
            f"({group_size}); pick another --qlora-group-size"
        )
    g = weight.detach().float().view(out_f, -1, group_size)  # (out, groups, group)
    scale = g.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / 7.0  # (out, groups, 1)
    q = (torch.round(g / scale).clamp(-8, 7) + 8).to(torch.uint8).view(out_f, -1)
    return q[:, 0::2] | (q[:, 1::2] << 4), scale.squeeze(-1)


def _q8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference format's int8 codes and scales (Q8_0, opengemma.quantized_layers)."""
    from opengemma.quantized_layers import quantize_q8_0, split_q8_0

    if weight.shape[1] % QK:
        raise AdapterError(f"int8 needs the input size ({weight.shape[1]}) to be a multiple of 32")
    return split_q8_0(quantize_q8_0(weight.detach().cpu()))


def _dequant_q8(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    if codes.device.type != "cpu":  # the native kernel is CPU-only
        n, k = codes.shape
        return (codes.float().view(n, k // QK, QK) * scales[..., None]).view(n, k)
    from opengemma.quantized_layers import dequantize_q8

    return dequantize_q8(codes, scales)


def quantize_base(model: nn.Module, bits: int = 4, group_size: int = 64) -> int:
    """Replace every decoder linear (`q_proj` ... `down_proj`) by a FrozenQuantLinear.

    Returns the number of linears replaced. Call before `apply_lora`.
    """
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in LINEAR_NAMES and isinstance(child, Q8Linear):
                setattr(module, name, FrozenQuantLinear.from_q8(child))
                n += 1
            elif name in LINEAR_NAMES and isinstance(child, nn.Linear):
                if child.bias is not None:
                    raise AdapterError(f"{name} has a bias; the QLoRA base expects Gemma linears")
                setattr(module, name, FrozenQuantLinear(child.weight, bits, group_size))
                n += 1
    if n == 0:
        raise AdapterError("found no q_proj ... down_proj linears to quantize")
    return n


def check_differentiable(model: nn.Module) -> None:
    """Refuse a model loaded with `opengemma.quantized_layers`'s int8 inference kernels: they
    give no gradients (its tied output projection in particular), so nothing before them could
    train."""
    from opengemma.quantized_layers import Q8Embedding
    from opengemma.stored_layers import StoredEmbedding, StoredLinear

    kernels = (Q8Embedding, Q8Linear, StoredEmbedding, StoredLinear)
    if any(isinstance(m, kernels) for m in model.modules()):
        raise AdapterError(
            "this model was loaded with int8 inference kernels (quant='q8'), which give no "
            "gradients; load it with quant='none' (opengemma.load(..., quant='none')) to "
            "fine-tune, and add --qlora for a quantized frozen base"
        )
