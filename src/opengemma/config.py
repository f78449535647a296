"""GemmaConfig and the presets: the only place where Gemma 1, 2, 3 and 4 differ.

The model reads fields, never a family name. Every preset's numbers come from the official
configs (https://huggingface.co/google/<model>/blob/main/config.json): gemma-2b, -7b; gemma-2-2b,
-9b, -27b; gemma-3-270m, -1b-pt and the `text_config` of gemma-3-4b-pt, -12b-pt, -27b-pt and of
gemma-4-E2B-it, -E4B-it, -26B-A4B-it, -31B-it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opengemma.errors import ConfigError

Family = Literal["gemma", "gemma2", "gemma3", "gemma4"]
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
    # ---- Gemma 4 (each off by default; https://huggingface.co/google/gemma-4-E2B-it and the
    # transformers Gemma4TextConfig). The model reads these fields, never the family.
    norm_offset: float = 1.0  # RMSNorm scales by (norm_offset + w): Gemma 1-3 store w - 1, 4 w
    v_norm: bool = False  # RMSNorm without a weight on each value head (Gemma 4)
    global_head_dim: int | None = None  # head width of global layers (None: head_dim)
    num_global_kv_heads: int | None = None  # key/value heads of global layers (None: num_kv_heads)
    attention_k_eq_v: bool = False  # global layers reuse the key projection as values
    rope_partial_factor: float = 1.0  # share of a global head rotated by RoPE ("proportional")
    hidden_size_per_layer_input: int = 0  # per-layer embedding (PLE) width; 0 = no PLE
    vocab_size_per_layer_input: int = 0  # rows of the packed PLE table
    num_kv_shared_layers: int = 0  # the last N layers reuse K/V of the last layer of their kind
    double_wide_mlp: bool = False  # KV-shared layers have an MLP twice as wide
    layer_scalar: bool = False  # each block's output is multiplied by a stored scalar
    num_experts: int = 0  # mixture-of-experts block beside the MLP when > 0
    top_k_experts: int = 0  # experts routed per token
    moe_intermediate_size: int = 0  # hidden width of each expert

    def __post_init__(self) -> None:
        if len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        if any(t not in ("sliding", "global") for t in self.layer_types):
            raise ConfigError(f"layer_types must be 'sliding' or 'global', got {self.layer_types}")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ConfigError("sliding layers need a positive sliding_window")
        first = self.num_layers - self.num_kv_shared_layers
        odd_kv = [i for i in range(self.num_layers)
                  if self.layer_kv_heads(i) < 1 or self.num_heads % self.layer_kv_heads(i)]
        problems = [  # (wrong?, what to say)
            (odd_kv, f"num_heads ({self.num_heads}) must be a multiple of the key/value heads "
                     f"of every layer; layers {odd_kv} are not"),
            (not 0 <= self.num_kv_shared_layers < self.num_layers,
             f"num_kv_shared_layers is {self.num_kv_shared_layers}; it must leave at least one "
             f"of the {self.num_layers} layers computing its own keys and values"),
            (set(self.layer_types[first:]) - set(self.layer_types[:first]),
             "KV-shared layers need an earlier layer of their kind to take keys and values from"),
            (self.num_experts and not 0 < self.top_k_experts <= self.num_experts,
             f"top_k_experts is {self.top_k_experts}; it must be 1..{self.num_experts}"),
            (not 0.0 <= self.rope_partial_factor <= 1.0,
             f"rope_partial_factor {self.rope_partial_factor} is not in [0, 1]"),
        ]  # fmt: skip
        for wrong, message in problems:
            if wrong:
                raise ConfigError(message)

    # ---- per-layer shapes (Gemma 4 gives global layers their own; otherwise all equal)

    def layer_head_dim(self, i: int) -> int:
        wide = self.layer_types[i] == "global" and self.global_head_dim
        return self.global_head_dim if wide else self.head_dim

    def layer_kv_heads(self, i: int) -> int:
        own = self.layer_types[i] == "global" and self.num_global_kv_heads
        return self.num_global_kv_heads if own else self.num_kv_heads

    def layer_k_eq_v(self, i: int) -> bool:
        return self.attention_k_eq_v and self.layer_types[i] == "global"

    def kv_source(self, i: int) -> int:
        """The layer whose keys/values layer i attends over: itself, or for the last
        `num_kv_shared_layers` layers the last earlier non-shared layer of the same kind."""
        first = self.num_layers - self.num_kv_shared_layers
        kind = self.layer_types[i]
        return i if i < first else max(j for j in range(first) if self.layer_types[j] == kind)

    def layer_intermediate(self, i: int) -> int:
        wide = self.double_wide_mlp and self.kv_source(i) != i
        return self.intermediate_size * (2 if wide else 1)

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


def _gemma4(hidden: int, inter: int, layers: int, heads: int, kv: int, global_kv: int | None,
            window: int, period: int, ctx: int, ple: int = 0, shared: int = 0,
            wide: bool = False, experts: tuple[int, int, int] = (0, 0, 0)):  # fmt: skip
    return GemmaConfig(
        family="gemma4", vocab_size=262_144, hidden_size=hidden, intermediate_size=inter,
        num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=256,
        query_pre_attn_scalar=1.0, layer_types=_alternating(layers, period),
        sliding_window=window, rope_theta=1_000_000.0, rope_local_theta=10_000.0,
        final_logit_softcap=30.0, qk_norm=True, sandwich_norm=True,
        max_position_embeddings=ctx, norm_offset=0.0, v_norm=True, global_head_dim=512,
        num_global_kv_heads=global_kv, attention_k_eq_v=global_kv is not None,
        rope_partial_factor=0.25, hidden_size_per_layer_input=ple,
        vocab_size_per_layer_input=262_144 if ple else 0, num_kv_shared_layers=shared,
        double_wide_mlp=wide, layer_scalar=True, num_experts=experts[0],
        top_k_experts=experts[1], moe_intermediate_size=experts[2],
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
    # Gemma 4 text decoders (the `text_config` of https://huggingface.co/google/gemma-4-E2B-it,
    # -E4B-it, -26B-A4B-it, -31B-it): E2B has 4 sliding layers per global one, the others 5.
    "gemma4-e2b": _gemma4(1536, 6144, 35, 8, 1, None, 512, 5, 131072, 256, 20, wide=True),
    "gemma4-e4b": _gemma4(2560, 10240, 42, 8, 2, None, 512, 6, 131072, 256, 18),
    "gemma4-26b-a4b": _gemma4(2816, 2112, 30, 16, 8, 2, 1024, 6, 262144,
                              experts=(128, 8, 704)),  # fmt: skip
    "gemma4-31b": _gemma4(5376, 21504, 60, 32, 16, 4, 1024, 6, 262144),
}


def _match_preset(family: str, hidden: int, layers: int) -> GemmaConfig | None:
    for cfg in PRESETS.values():
        if (cfg.family, cfg.hidden_size, cfg.num_layers) == (family, hidden, layers):
            return cfg
    return None


# ---------------------------------------------------------------- Hugging Face config.json


def _read_json(source: str | Path) -> dict[str, Any]:
    path = Path(source) / "config.json" if Path(source).is_dir() else Path(source)
    if not path.is_file():
        raise ConfigError(f"no config.json at {path}; a Hugging Face model directory needs one")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


_HF_FAMILY = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3",
              "gemma4_text": "gemma4", "gemma4": "gemma4"}  # fmt: skip
# transformers' Gemma3TextConfig defaults, which the config.json of Gemma 3 4B, 12B and 27B relies
# on: it names only what differs (no head counts, vocabulary size or RoPE bases)
_HF_DEFAULTS = {"gemma3": dict(vocab_size=262_208, num_attention_heads=8, num_key_value_heads=4,
    head_dim=256, query_pre_attn_scalar=256, sliding_window=4096, rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0, max_position_embeddings=131_072)}  # fmt: skip


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
    kinds = _alternating(n, int(pattern))
    return kinds[:-1] + ("global",) if family == "gemma4" else kinds  # Gemma 4 ends global


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
    if d.get("model_type") in ("gemma3", "gemma4") and "text_config" in d:
        d = {**d["text_config"], "model_type": d["model_type"] + "_text"}
    family = _HF_FAMILY.get(d.get("model_type", ""))
    if family is None:
        raise ConfigError(
            f"config.json has model_type {d.get('model_type')!r}; opengemma reads "
            f"{', '.join(_HF_FAMILY)} checkpoints"
        )
    d = {**_HF_DEFAULTS.get(family, {}), **d}
    try:
        n, hidden, heads = d["num_hidden_layers"], d["hidden_size"], d["num_attention_heads"]
        theta, local_theta, scaling = _hf_rope(d, family)
        head_dim = d.get("head_dim") or hidden // heads
        layer_types = _hf_layer_types(d, family, n)
        base = GemmaConfig(
            family=family, vocab_size=d["vocab_size"], hidden_size=hidden,
            intermediate_size=d["intermediate_size"], num_layers=n, num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads", heads), head_dim=head_dim,
            query_pre_attn_scalar=d.get("query_pre_attn_scalar") or head_dim,
            layer_types=layer_types,
            sliding_window=d.get("sliding_window") if "sliding" in layer_types else None,
            rope_theta=theta, rope_local_theta=local_theta, rope_scaling=scaling,
            attn_logit_softcap=d.get("attn_logit_softcapping"),
            final_logit_softcap=d.get("final_logit_softcapping"),
            qk_norm=family in ("gemma3", "gemma4"), sandwich_norm=family != "gemma",
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            max_position_embeddings=d.get("max_position_embeddings", 8192),
            tie_word_embeddings=d.get("tie_word_embeddings", True),
            bos_token_id=_first(d.get("bos_token_id"), 2),
            eos_token_id=_first(d.get("eos_token_id"), 1),
            pad_token_id=_first(d.get("pad_token_id"), 0),
            use_bidirectional_attention=bool(d.get("use_bidirectional_attention")),
        )  # fmt: skip
        return base if family != "gemma4" else base.replace(**_hf_gemma4(d, base))
    except KeyError as exc:
        raise ConfigError(f"config.json lacks required field {exc.args[0]!r}") from None


def _hf_gemma4(d: dict[str, Any], base: GemmaConfig) -> dict[str, Any]:
    """The Gemma 4 fields of a `gemma4_text` config.json (hub files name the global head width
    `global_head_dim`; transformers 5 saves it per layer in `per_layer_config`)."""
    k_eq_v = bool(d.get("attention_k_eq_v", False))
    global_dim = d.get("global_head_dim", 512)
    global_kv = d.get("num_global_key_value_heads") if k_eq_v else None
    overrides = d.get("per_layer_config")
    if isinstance(overrides, dict):  # only the fields that differ from the layer defaults
        kinds = {base.layer_types[int(i)] for i in overrides}
        values = {(o.get("head_dim", base.head_dim), o.get("num_key_value_heads"))
                  for o in overrides.values()}  # fmt: skip
        if kinds - {"global"} or len(values) > 1:
            raise ConfigError("per_layer_config overrides other than one shape for all global "
                              "layers are not a Gemma 4 layout")  # fmt: skip
        global_dim, global_kv = values.pop() if values else (base.head_dim, None)
    full = (d.get("rope_parameters") or {}).get("full_attention") or {}
    proportional = full.get("rope_type") == "proportional"
    partial = full.get("partial_rotary_factor", 1.0) if proportional else 1.0
    moe = bool(d.get("enable_moe_block"))
    ple = d.get("hidden_size_per_layer_input", 256) or 0
    return dict(
        query_pre_attn_scalar=1.0, norm_offset=0.0, v_norm=True, layer_scalar=True,
        global_head_dim=global_dim or None, num_global_kv_heads=global_kv or None,
        attention_k_eq_v=k_eq_v, rope_partial_factor=float(partial),
        hidden_size_per_layer_input=ple,
        vocab_size_per_layer_input=(d.get("vocab_size_per_layer_input") or 262_144) if ple else 0,
        num_kv_shared_layers=d.get("num_kv_shared_layers") or 0,
        double_wide_mlp=bool(d.get("use_double_wide_mlp")),
        num_experts=(d.get("num_experts") or 0) if moe else 0,
        top_k_experts=(d.get("top_k_experts") or 0) if moe else 0,
        moe_intermediate_size=(d.get("moe_intermediate_size") or 0) if moe else 0,
        use_bidirectional_attention=d.get("use_bidirectional_attention") == "all",
    )  # fmt: skip


def _first(value: Any, default: int) -> int:
    if isinstance(value, list):
        return int(value[0]) if value else default
    return default if value is None else int(value)


# ---------------------------------------------------------------- GGUF metadata


def _from_gguf(meta: dict[str, Any], vocab_size: int | None) -> GemmaConfig:
    arch = meta.get("general.architecture")
    if arch == "gemma-embedding":  # EmbeddingGemma (llama.cpp): a bidirectional Gemma 3 decoder
        prefix = arch + "."
        meta = {("gemma3." + k[len(prefix) :] if k.startswith(prefix) else k): v
                for k, v in meta.items()}  # fmt: skip
        meta["general.architecture"] = "gemma3"
        return _from_gguf(meta, vocab_size).replace(use_bidirectional_attention=True)
    if arch == "gemma4":
        return _gguf_gemma4(meta, vocab_size)
    if arch not in ("gemma", "gemma2", "gemma3"):
        raise ConfigError(
            f"GGUF architecture is {arch!r}; opengemma reads gemma, gemma2, gemma3, gemma4 and "
            "gemma-embedding files"
        )

    get = _meta_getter(meta, arch)

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


def _meta_getter(meta: dict[str, Any], arch: str):
    """get(key, default) for `{arch}.{key}`; no default: a missing key is an incomplete file."""

    def get(key: str, default: Any = field) -> Any:
        full = f"{arch}.{key}"
        if full in meta:
            return meta[full]
        if default is field:
            raise ConfigError(f"GGUF metadata lacks {full!r}; the file is incomplete")
        return default

    return get


def _per_layer(value: Any, n: int, name: str) -> list[int]:
    """A GGUF count that llama.cpp writes once or once per layer, as a per-layer list."""
    values = value if isinstance(value, list) else [value] * n
    if len(values) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                   for v in values):  # fmt: skip
        raise ConfigError(f"GGUF metadata gemma4.{name} is {value!r}; expected a count or "
                          f"one per layer ({n})")  # fmt: skip
    return values


def _gguf_gemma4(meta: dict[str, Any], vocab_size: int | None) -> GemmaConfig:
    """A `gemma4` GGUF (llama.cpp's converter): head widths as key_length (global layers) and
    key_length_swa, per-layer KV-head and MLP-width arrays, shared_kv_layers. Fields only the
    tensors tell (keys as values, layer scalars, the PLE rows) are set by the GGUF loader."""
    get = _meta_getter(meta, "gemma4")
    n = get("block_count")
    pattern = get("attention.sliding_window_pattern")
    if not isinstance(pattern, list) or len(pattern) != n:
        raise ConfigError(f"GGUF metadata gemma4.attention.sliding_window_pattern must list "
                          f"{n} layers")  # fmt: skip
    kinds: tuple[LayerKind, ...] = tuple("sliding" if p else "global" for p in pattern)
    kv = _per_layer(get("attention.head_count_kv"), n, "attention.head_count_kv")
    ffn = _per_layer(get("feed_forward_length"), n, "feed_forward_length")
    g = kinds.index("global") if "global" in kinds else 0  # first global / sliding layer
    sw = kinds.index("sliding") if "sliding" in kinds else 0
    ple = get("embedding_length_per_layer_input", 0)
    return GemmaConfig(
        family="gemma4", vocab_size=vocab_size or 262_144, hidden_size=get("embedding_length"),
        intermediate_size=ffn[0], num_layers=n, num_heads=get("attention.head_count"),
        num_kv_heads=kv[sw], head_dim=get("attention.key_length_swa"),
        query_pre_attn_scalar=1.0, layer_types=kinds,
        sliding_window=get("attention.sliding_window"),
        rope_theta=float(get("rope.freq_base", 1_000_000.0)),
        rope_local_theta=float(get("rope.freq_base_swa", 10_000.0)),
        final_logit_softcap=get("final_logit_softcapping", None), qk_norm=True,
        sandwich_norm=True, rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=get("context_length", 131_072),
        bos_token_id=int(meta.get("tokenizer.ggml.bos_token_id", 2)),
        eos_token_id=int(meta.get("tokenizer.ggml.eos_token_id", 1)),
        pad_token_id=int(meta.get("tokenizer.ggml.padding_token_id", 0)),
        norm_offset=0.0, v_norm=True, global_head_dim=get("attention.key_length"),
        num_global_kv_heads=kv[g] if kv[g] != kv[sw] else None, rope_partial_factor=0.25,
        hidden_size_per_layer_input=ple, vocab_size_per_layer_input=(vocab_size or 0) if ple else 0,
        num_kv_shared_layers=get("attention.shared_kv_layers", 0),
        double_wide_mlp=ffn[-1] == 2 * ffn[0], layer_scalar=True,
        num_experts=get("expert_count", 0), top_k_experts=get("expert_used_count", 0),
        moe_intermediate_size=get("expert_feed_forward_length", 0),
    )  # fmt: skip
