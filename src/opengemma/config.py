"""GemmaConfig and the presets: the only place where Gemma 1, 2 and 3 differ.

The model reads fields, never a family name. Every preset's numbers come from the official
configs, as published with the checkpoints on the Hugging Face Hub and mirrored by the
`transformers` config classes:

- Gemma 1: https://huggingface.co/google/gemma-2b/blob/main/config.json,
  https://huggingface.co/google/gemma-7b/blob/main/config.json
- Gemma 2: https://huggingface.co/google/gemma-2-2b/blob/main/config.json (and -9b, -27b)
- Gemma 3: https://huggingface.co/google/gemma-3-270m/blob/main/config.json,
  https://huggingface.co/google/gemma-3-1b-pt/blob/main/config.json, and the `text_config` of
  https://huggingface.co/google/gemma-3-4b-pt/blob/main/config.json (and -12b-pt, -27b-pt)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opengemma.errors import ConfigError

Family = Literal["gemma", "gemma2", "gemma3"]
LayerKind = Literal["sliding", "global"]


@dataclass(frozen=True)
class GemmaConfig:
    """Shape and behaviour of one Gemma decoder. Sizes are counts, lengths are tokens."""

    family: Family  # chat-template and file-format conventions only; the model never reads it
    vocab_size: int  # rows of the tied embedding / output projection
    hidden_size: int  # residual stream width
    intermediate_size: int  # GeGLU hidden width (per gate/up projection)
    num_layers: int
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads: 1 = multi-query, == num_heads = multi-head, else GQA
    head_dim: int  # per-head width; not always hidden_size / num_heads
    query_pre_attn_scalar: float  # queries are scaled by this ** -0.5 (Gemma 2 27B: 144, not 128)
    layer_types: tuple[LayerKind, ...]  # per layer: sliding-window or global attention
    sliding_window: int | None = None  # keys a sliding layer sees, the query's own included
    rope_theta: float = 10_000.0  # RoPE base of global layers
    rope_local_theta: float = 10_000.0  # RoPE base of sliding layers
    rope_scaling: float = 1.0  # linear position scaling of global layers (Gemma 3 4B+: 8)
    attn_logit_softcap: float | None = None  # tanh cap on attention scores (Gemma 2: 50)
    final_logit_softcap: float | None = None  # tanh cap on output logits (Gemma 2: 30)
    qk_norm: bool = False  # RMSNorm on each query/key head before RoPE (Gemma 3)
    sandwich_norm: bool = False  # extra norms after attention and after the MLP (Gemma 2, 3)
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192  # context length the model was trained for
    tie_word_embeddings: bool = True  # output projection = embedding matrix
    bos_token_id: int = 2
    eos_token_id: int = 1
    pad_token_id: int = 0
    # every query sees the whole input (EmbeddingGemma): global layers every key, sliding layers
    # the keys within sliding_window // 2 positions on either side (transformers' and llama.cpp's
    # symmetric window); the model then has no causal order and no KV cache
    use_bidirectional_attention: bool = False

    def __post_init__(self) -> None:
        if len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        if any(t not in ("sliding", "global") for t in self.layer_types):
            raise ConfigError(f"layer_types must be 'sliding' or 'global', got {self.layer_types}")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ConfigError("sliding layers need a positive sliding_window")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )

    def replace(self, **changes: Any) -> GemmaConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layer_types"] = list(self.layer_types)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GemmaConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        d = dict(d)
        d["layer_types"] = tuple(d["layer_types"])
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str) -> GemmaConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any]) -> GemmaConfig:
        """Derive a config from a Hugging Face `config.json` (a path, a directory or a dict)."""
        return _from_hf(_read_json(source) if not isinstance(source, dict) else source)

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], vocab_size: int | None = None) -> GemmaConfig:
        """Derive a config from GGUF key/value metadata (a plain dict of decoded values)."""
        return _from_gguf(meta, vocab_size)


def _alternating(n: int, period: int) -> tuple[LayerKind, ...]:
    """Every `period`-th layer (1-based) global, the others sliding."""
    return tuple("global" if (i + 1) % period == 0 else "sliding" for i in range(n))


def _gemma1(hidden: int, inter: int, layers: int, heads: int, kv: int) -> GemmaConfig:
    return GemmaConfig(
        family="gemma", vocab_size=256_000, hidden_size=hidden, intermediate_size=inter,
        num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=256,
        query_pre_attn_scalar=256, layer_types=("global",) * layers,
        max_position_embeddings=8192,
    )  # fmt: skip


def _gemma2(hidden: int, inter: int, layers: int, heads: int, kv: int, hd: int, qpas: float):
    return GemmaConfig(
        family="gemma2", vocab_size=256_000, hidden_size=hidden, intermediate_size=inter,
        num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=hd,
        query_pre_attn_scalar=qpas, layer_types=_alternating(layers, 2), sliding_window=4096,
        attn_logit_softcap=50.0, final_logit_softcap=30.0, sandwich_norm=True,
        max_position_embeddings=8192,
    )  # fmt: skip


def _gemma3(hidden: int, inter: int, layers: int, heads: int, kv: int, hd: int, qpas: float,
            window: int, scaling: float, ctx: int, vocab: int = 262_208):  # fmt: skip
    return GemmaConfig(
        family="gemma3", vocab_size=vocab, hidden_size=hidden,
        intermediate_size=inter, num_layers=layers, num_heads=heads, num_kv_heads=kv,
        head_dim=hd, query_pre_attn_scalar=qpas, layer_types=_alternating(layers, 6),
        sliding_window=window, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
        rope_scaling=scaling, qk_norm=True, sandwich_norm=True, max_position_embeddings=ctx,
    )  # fmt: skip


PRESETS: dict[str, GemmaConfig] = {
    "gemma-2b": _gemma1(2048, 16384, 18, 8, 1),
    "gemma-7b": _gemma1(3072, 24576, 28, 16, 16),
    "gemma2-2b": _gemma2(2304, 9216, 26, 8, 4, 256, 256),
    "gemma2-9b": _gemma2(3584, 14336, 42, 16, 8, 256, 256),
    "gemma2-27b": _gemma2(4608, 36864, 46, 32, 16, 128, 144),
    # 270M and 1B have 262,144 vocabulary rows; 4B and larger carry 262,208 (image tokens).
    "gemma3-270m": _gemma3(640, 2048, 18, 4, 1, 256, 256, 512, 1.0, 32768, 262_144),
    "gemma3-1b": _gemma3(1152, 6912, 26, 4, 1, 256, 256, 512, 1.0, 32768, 262_144),
    "gemma3-4b": _gemma3(2560, 10240, 34, 8, 4, 256, 256, 1024, 8.0, 131072),
    "gemma3-12b": _gemma3(3840, 15360, 48, 16, 8, 256, 256, 1024, 8.0, 131072),
    "gemma3-27b": _gemma3(5376, 21504, 62, 32, 16, 128, 168, 1024, 8.0, 131072),
}


def _match_preset(family: str, hidden: int, layers: int) -> GemmaConfig | None:
    for cfg in PRESETS.values():
        if (cfg.family, cfg.hidden_size, cfg.num_layers) == (family, hidden, layers):
            return cfg
    return None


# ---------------------------------------------------------------- Hugging Face config.json


def _read_json(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json at {path}; a Hugging Face model directory needs one")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


_HF_FAMILY = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def _hf_layer_types(d: dict[str, Any], family: str, n: int) -> tuple[LayerKind, ...]:
    if d.get("layer_types"):
        kinds = {"sliding_attention": "sliding", "full_attention": "global"}
        try:
            return tuple(kinds[t] for t in d["layer_types"])
        except KeyError as exc:
            raise ConfigError(f"unsupported layer type {exc.args[0]!r} in config.json") from None
    if family == "gemma":
        return ("global",) * n
    if family == "gemma2":
        return _alternating(n, 2)
    pattern = d.get("sliding_window_pattern") or d.get("_sliding_window_pattern") or 6
    return _alternating(n, int(pattern))


def _hf_rope(d: dict[str, Any], family: str) -> tuple[float, float, float]:
    """(global base, local base, global linear scaling) from either config generation."""
    params = d.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        full, local = params["full_attention"], params.get("sliding_attention", {})
        theta, local_theta = full.get("rope_theta", 10_000.0), local.get("rope_theta", 10_000.0)
        scaling = full if full.get("rope_type") == "linear" else None
    else:
        params = params if isinstance(params, dict) else {}
        theta = params.get("rope_theta", d.get("rope_theta", 10_000.0))
        local_theta = d.get("rope_local_base_freq", theta if family != "gemma3" else 10_000.0)
        scaling = d.get("rope_scaling") or (params if params.get("rope_type") == "linear" else None)
    factor = 1.0
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in ("linear", "default", None):
            raise ConfigError(f"unsupported RoPE scaling {kind!r}; only linear is used by Gemma")
        factor = float(scaling.get("factor", 1.0)) if kind == "linear" else 1.0
    return float(theta), float(local_theta), factor


def _from_hf(d: dict[str, Any]) -> GemmaConfig:
    if d.get("model_type") == "gemma3" and "text_config" in d:
        d = {**d["text_config"], "model_type": "gemma3_text"}
    family = _HF_FAMILY.get(d.get("model_type", ""))
    if family is None:
        raise ConfigError(
            f"config.json has model_type {d.get('model_type')!r}; opengemma reads "
            f"{', '.join(_HF_FAMILY)} checkpoints"
        )
    try:
        n, hidden, heads = d["num_hidden_layers"], d["hidden_size"], d["num_attention_heads"]
        theta, local_theta, scaling = _hf_rope(d, family)
        head_dim = d.get("head_dim") or hidden // heads
        layer_types = _hf_layer_types(d, family, n)
        return GemmaConfig(
            family=family, vocab_size=d["vocab_size"], hidden_size=hidden,
            intermediate_size=d["intermediate_size"], num_layers=n, num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads", heads), head_dim=head_dim,
            query_pre_attn_scalar=d.get("query_pre_attn_scalar") or head_dim,
            layer_types=layer_types,
            sliding_window=d.get("sliding_window") if "sliding" in layer_types else None,
            rope_theta=theta, rope_local_theta=local_theta, rope_scaling=scaling,
            attn_logit_softcap=d.get("attn_logit_softcapping"),
            final_logit_softcap=d.get("final_logit_softcapping"),
            qk_norm=family == "gemma3", sandwich_norm=family != "gemma",
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            max_position_embeddings=d.get("max_position_embeddings", 8192),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            bos_token_id=_first(d.get("bos_token_id"), 2),
            eos_token_id=_first(d.get("eos_token_id"), 1),
            pad_token_id=_first(d.get("pad_token_id"), 0),
            use_bidirectional_attention=bool(d.get("use_bidirectional_attention")),
        )  # fmt: skip
    except KeyError as exc:
        raise ConfigError(f"config.json lacks required field {exc.args[0]!r}") from None


def _first(value: Any, default: int) -> int:
    if isinstance(value, list):
        return int(value[0]) if value else default
    return default if value is None else int(value)


# ---------------------------------------------------------------- GGUF metadata


def _from_gguf(meta: dict[str, Any], vocab_size: int | None) -> GemmaConfig:
    arch = meta.get("general.architecture")
    if arch not in ("gemma", "gemma2", "gemma3"):
        raise ConfigError(
            f"GGUF architecture is {arch!r}; opengemma reads gemma, gemma2 and gemma3 files"
        )

    def get(key: str, default: Any = field) -> Any:
        full = f"{arch}.{key}"
        if full in meta:
            return meta[full]
        if default is field:
            raise ConfigError(f"GGUF metadata lacks {full!r}; the file is incomplete")
        return default

    n, hidden, heads = get("block_count"), get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", hidden // heads)
    preset = _match_preset(arch, hidden, n)
    # The file carries only the global RoPE base; the local base, the sliding pattern and the
    # query scale are the architecture's defaults (as llama.cpp assumes too).
    if arch == "gemma":
        layer_types: tuple[LayerKind, ...] = ("global",) * n
    else:
        pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
        if isinstance(pattern, list) and len(pattern) == n:
            layer_types = tuple("sliding" if p else "global" for p in pattern)
        else:
            layer_types = _alternating(n, 2 if arch == "gemma2" else 6)
    scaling = 1.0
    if get("rope.scaling.type", "none") == "linear":
        scaling = float(get("rope.scaling.factor", 1.0))
    elif preset is not None:
        scaling = preset.rope_scaling
    qpas = preset.query_pre_attn_scalar if preset is not None else head_dim
    return GemmaConfig(
        family=arch, vocab_size=vocab_size or (preset.vocab_size if preset else 256_000),
        hidden_size=hidden, intermediate_size=get("feed_forward_length"), num_layers=n,
        num_heads=heads, num_kv_heads=get("attention.head_count_kv", heads), head_dim=head_dim,
        query_pre_attn_scalar=qpas, layer_types=layer_types,
        sliding_window=get("attention.sliding_window", None) if arch != "gemma" else None,
        rope_theta=float(get("rope.freq_base", 10_000.0)),
        rope_local_theta=10_000.0, rope_scaling=scaling,
        attn_logit_softcap=get("attn_logit_softcapping", None),
        final_logit_softcap=get("final_logit_softcapping", None),
        qk_norm=arch == "gemma3", sandwich_norm=arch != "gemma",
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=get("context_length", 8192),
        bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", 2)),
        eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", 1)),
        pad_token_id=int(meta.get("tokenizer.ggml.padding_token_id", 0)),
    )  # fmt: skip
