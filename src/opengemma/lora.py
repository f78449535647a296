"""LoRA by wrapping the existing linears of a GemmaModel, saved and loaded in the PEFT format.

A wrapped linear computes `base(x) + B(A(dropout(x))) * alpha / r`, with A of shape (r, in) and
B of shape (out, r). B starts at zero, so a freshly wrapped model gives exactly the logits of the
base model until it is trained. `merge` folds `scale * B @ A` into the base weight (and `unmerge`
takes it out again); merged, the model runs at the base model's speed.

On disk an adapter is a directory with `adapter_config.json` and `adapter_model.safetensors`,
keys like `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`: what `peft` writes
for a `transformers` Gemma causal LM, so `PeftModel.from_pretrained` loads ours and we load its.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opengemma.atomic import atomic_path
from opengemma.errors import OpenGemmaError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model.model."  # PeftModel -> LoraModel -> *ForCausalLM -> decoder
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Gemma 4's per-layer-embedding projections (transformers' module names, so PEFT's too)
PLE_TARGETS = ("per_layer_input_gate", "per_layer_projection", "per_layer_model_projection")
KNOWN_TARGETS = ALL_TARGETS + PLE_TARGETS
_SHORT = {name.removesuffix("_proj"): name for name in ALL_TARGETS}


class AdapterError(OpenGemmaError):
    """An adapter directory is missing, malformed, or does not fit the model."""


@dataclass(frozen=True)
class LoRAConfig:
    """Rank, scaling and placement of the low-rank updates."""

    r: int = 8  # rank of the update B @ A
    alpha: float = 16.0  # the update is scaled by alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.05  # dropout on the input of A, training only
    targets: tuple[str, ...] = ALL_TARGETS  # module names (last component) to wrap
    rslora: bool = False  # rank-stabilised scaling, as PEFT's `use_rslora`

    def __post_init__(self) -> None:
        if self.r < 1:
            raise AdapterError(f"LoRA rank must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in KNOWN_TARGETS]
        if unknown or not self.targets:
            raise AdapterError(
                f"unknown LoRA targets {unknown or '(none)'}; choose from "
                f"{', '.join(_SHORT)} (or their full names {', '.join(KNOWN_TARGETS)})"
            )

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


def parse_targets(spec: str | Sequence[str]) -> tuple[str, ...]:
    """`"q,v,gate"` or `["q_proj", "v_proj"]` or `"all"` -> full module names, in model order."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = {_SHORT.get(p.strip(), p.strip()) for p in parts if p.strip()}
    if names == {"all"} or names == {"all-linear"}:
        return ALL_TARGETS
    unknown = sorted(n for n in names if n not in KNOWN_TARGETS)
    if unknown or not names:
        raise AdapterError(
            f"unknown LoRA targets {unknown or '(none)'}; use a comma list of "
            f"{','.join(_SHORT)} (Gemma 4 also {','.join(PLE_TARGETS)}) or 'all'"
        )
    return tuple(n for n in KNOWN_TARGETS if n in names)


class LoRALinear(nn.Module):
    """`base_layer(x) + lora_B(lora_A(dropout(x))) * scaling`; only A and B train."""

    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float) -> None:
        super().__init__()
        out_features, in_features = _base_shape(base_layer)
        weight = getattr(base_layer, "weight", None)
        device = weight.device if isinstance(weight, torch.Tensor) else None
        self.base_layer = base_layer.requires_grad_(False)
        # Adapters train in float32 whatever the base dtype (bf16 or quantized).
        self.lora_A = nn.Linear(in_features, r, bias=False, device=device, dtype=torch.float32)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=device, dtype=torch.float32)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = scaling
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear (and PEFT)
        nn.init.zeros_(self.lora_B.weight)  # the wrapped model starts equal to the base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        y = self.base_layer(x)
        if self.merged:
            return y
        h = self.lora_B(self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype))))
        return y + (h * self.scaling).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A, shape (out, in), float32."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merge(self) -> None:
        if self.merged:
            return
        base = self._float_base()
        with torch.no_grad():
            base.weight += self.delta_weight().to(base.weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        base = self._float_base()
        with torch.no_grad():
            base.weight -= self.delta_weight().to(base.weight.dtype)
        self.merged = False

    def _float_base(self) -> nn.Linear:
        if not isinstance(self.base_layer, nn.Linear):
            raise AdapterError(
                "cannot merge an adapter into a quantized base; load the model unquantized "
                "(without --qlora) and merge there"
            )
        return self.base_layer


def _base_shape(layer: nn.Module) -> tuple[int, int]:
    out_f, in_f = getattr(layer, "out_features", None), getattr(layer, "in_features", None)
    if not isinstance(out_f, int) or not isinstance(in_f, int):
        raise AdapterError(f"cannot wrap {type(layer).__name__}: it has no in/out_features")
    return out_f, in_f


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(module name, LoRALinear) for every wrapped linear, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def apply_lora(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Freeze every base weight and wrap the target linears in place; returns the names wrapped.

    Module names do not change except for the new `base_layer` level under each target, which
    is also where PEFT puts the base weight.
    """
    if any(True for _ in lora_modules(model)):
        raise AdapterError("the model already carries LoRA adapters; load a fresh model")
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.targets and not isinstance(child, LoRALinear):
                full = f"{name}.{child_name}" if name else child_name
                setattr(module, child_name, LoRALinear(child, cfg.r, cfg.scaling, cfg.dropout))
                wrapped.append(full)
    if not wrapped:
        raise AdapterError(f"no module of the model is named like the targets {cfg.targets}")
    return wrapped


def merge(model: nn.Module) -> int:
    """Fold every adapter into its base weight; returns how many were merged."""
    mods = list(lora_modules(model))
    for _, m in mods:
        m.merge()
    return len(mods)


def unmerge(model: nn.Module) -> int:
    """Undo `merge` (exact up to float rounding of the base dtype)."""
    mods = list(lora_modules(model))
    for _, m in mods:
        m.unmerge()
    return len(mods)


def unload(model: nn.Module, keep_merged: bool = False) -> int:
    """Remove every adapter and put the base linears back: unmerged (the original model), or
    with `keep_merged` the adapted weights as a plain model that any checkpoint writer saves."""
    mods = list(lora_modules(model))
    for name, m in mods:
        if keep_merged:
            m.merge()
        else:
            m.unmerge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base_layer)
    return len(mods)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def peft_key(module_name: str, which: str) -> str:
    """`layers.3.self_attn.q_proj`, "A" -> the PEFT safetensors key."""
    return f"{PEFT_PREFIX}{module_name}.lora_{which}.weight"


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT key names (contiguous float32 CPU copies)."""
    out = {}
    for name, m in lora_modules(model):
        for which, lin in (("A", m.lora_A), ("B", m.lora_B)):
            out[peft_key(name, which)] = lin.weight.detach().float().cpu().contiguous().clone()
    return out


def peft_config(cfg: LoRAConfig, base_model: str | None) -> dict[str, Any]:
    """The `adapter_config.json` of a PEFT LoRA adapter for a causal LM."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": list(cfg.targets),
        "bias": "none",
        "use_rslora": cfg.rslora,
        "use_dora": False,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def save_adapter(
    model: nn.Module,
    cfg: LoRAConfig,
    directory: str | Path,
    base_model: str | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` (each via temp file + rename).

    `state` overrides the weights read from `model` (FSDP gathers them once for rank 0).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = adapter_state(model) if state is None else state
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(peft_config(cfg, base_model), indent=2) + "\n")
    return directory


def read_adapter_config(directory: str | Path) -> LoRAConfig:
    """Parse and check a PEFT `adapter_config.json`; unsupported PEFT options are errors."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(
            f"{path} not found; pass a directory written by `opengemma tune` or peft"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: only PEFT LoRA adapters are supported (peft_type 'LORA')")
    for key, ok in (("use_dora", False), ("bias", "none"), ("fan_in_fan_out", False)):
        if raw.get(key, ok) != ok:
            raise AdapterError(f"{path}: {key}={raw[key]!r} is not supported (need {ok!r})")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        if raw.get(key):
            raise AdapterError(f"{path}: {key} is not supported; retrain without it")
    targets = raw.get("target_modules")
    if isinstance(targets, str):  # PEFT: a regex that must match a full module name
        parent = {t: "mlp" if t in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                  for t in ALL_TARGETS}  # fmt: skip
        targets = [
            t for t in ALL_TARGETS if re.fullmatch(targets, f"model.layers.0.{parent[t]}.{t}")
        ]
    try:
        return LoRAConfig(
            r=int(raw["r"]),
            alpha=float(raw["lora_alpha"]),
            dropout=float(raw.get("lora_dropout", 0.0)),
            targets=parse_targets(targets or []),
            rslora=bool(raw.get("use_rslora", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{path}: missing or malformed field ({exc})") from None


def load_adapter(
    model: nn.Module, directory: str | Path, merge_weights: bool = False
) -> LoRAConfig:
    """Wrap `model` as the adapter's config says and load its weights (strict key coverage).

    With `merge_weights` the update is folded into the base weights at once (inference).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = read_adapter_config(directory)
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise AdapterError(f"{path} not found; an adapter directory holds {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{path} is not a readable safetensors file ({exc})") from None
    apply_lora(model, LoRAConfig(cfg.r, cfg.alpha, 0.0, cfg.targets, cfg.rslora))
    load_adapter_state(model, tensors, str(path))
    if merge_weights:
        merge(model)
    return cfg


def load_adapter_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy PEFT-keyed tensors into the wrapped modules; every key and shape must match."""
    tensors = {_strip_adapter_name(k): v for k, v in tensors.items()}
    expected = {}
    for name, m in lora_modules(model):
        expected[peft_key(name, "A")] = m.lora_A.weight
        expected[peft_key(name, "B")] = m.lora_B.weight
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise AdapterError(
            f"{source} does not fit this model: missing {_few(missing)}, unexpected "
            f"{_few(extra)}; was it trained for a model with the same layers and targets?"
        )
    with torch.no_grad():
        for key, param in expected.items():
            if tuple(tensors[key].shape) != tuple(param.shape):
                raise AdapterError(
                    f"{source}: {key} has shape {tuple(tensors[key].shape)}, the model needs "
                    f"{tuple(param.shape)}; the adapter was trained for another model size"
                )
            param.copy_(tensors[key])


def _strip_adapter_name(key: str) -> str:
    return key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")


def _few(keys: Iterable[str], n: int = 3) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


__all__ = [
    "ALL_TARGETS",
    "AdapterError",
    "LoRAConfig",
    "LoRALinear",
    "adapter_state",
    "apply_lora",
    "load_adapter",
    "load_adapter_state",
    "lora_modules",
    "merge",
    "parse_targets",
    "read_adapter_config",
    "save_adapter",
    "trainable_parameters",
    "unload",
    "unmerge",
]
