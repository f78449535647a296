"""The sentence-embedding head after the decoder: pooling, dense projections, normalisation.

EmbeddingGemma is a bidirectional Gemma 3 decoder followed by sentence-transformers modules
(`modules.json`): mean pooling (`1_Pooling`), two bias-free linear layers with the identity
activation (`2_Dense`: hidden -> 3072, `3_Dense`: 3072 -> 768) and L2 normalisation. A GGUF file
(llama.cpp's `gemma-embedding` architecture) holds the same layers as `dense_2.weight` /
`dense_3.weight`, the pooling as `{arch}.pooling_type`. Plain causal decoders get a head of
pooling + normalisation only, marked `trained=False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from opengemma.errors import InvalidRequestError, ModelLoadError

POOLINGS = ("mean", "cls", "lasttoken", "max", "mean_sqrt_len_tokens")
# sentence-transformers' legacy Pooling config keys (EmbeddingGemma's 1_Pooling uses them)
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_lasttoken": "lasttoken",
}
# activations a Dense module may name (sentence-transformers stores the class's full name)
ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": torch.tanh,
    "torch.nn.modules.activation.ReLU": F.relu,
    "torch.nn.modules.activation.GELU": F.gelu,
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
}
# llama.cpp's enum llama_pooling_type, as written to `{arch}.pooling_type`
GGUF_POOLING = {1: "mean", 2: "cls", 3: "lasttoken"}
GGUF_DENSE = ("dense_2", "dense_3")
# The task prompts of the EmbeddingGemma model card ("Prompt instructions"); a model directory's
# own `config_sentence_transformers.json` prompts come first.
TASK_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "question_answering": "task: question answering | query: ",
    "fact_checking": "task: fact checking | query: ",
    "classification": "task: classification | query: ",
    "clustering": "task: clustering | query: ",
    "sentence_similarity": "task: sentence similarity | query: ",
    "code_retrieval": "task: code retrieval | query: ",
}


@dataclass
class Dense:
    weight: torch.Tensor  # (out, in), float32
    bias: torch.Tensor | None
    activation: str = "torch.nn.modules.linear.Identity"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](F.linear(x, self.weight, self.bias))


@dataclass
class SentenceHead:
    """Token states (B, T, d) + mask -> sentence embeddings (B, dim), float32."""

    pooling: str = "mean"
    dense: list[Dense] = field(default_factory=list)
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None  # a key of `prompts` applied when no task is given
    max_tokens: int | None = None  # longest input, special tokens included
    include_prompt: bool = True  # False: prompt tokens are left out of the pooling
    trained: bool = True  # False: a causal decoder's hidden states, not a trained embedding
    add_eos: bool = False  # the tokenizer appends <eos> (as EmbeddingGemma's does)

    def dim(self, hidden: int) -> int:
        return self.dense[-1].weight.shape[0] if self.dense else hidden

    def __call__(self, states: torch.Tensor, mask: torch.Tensor,
                 prompt_lens: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """states (B, T, d), mask (B, T) bool of real tokens (right-padded)."""
        x = pool(states.float(), mask, self.pooling, None if self.include_prompt else prompt_lens)
        for layer in self.dense:
            x = layer(x)
        return F.normalize(x, p=2, dim=-1) if self.normalize else x


def pool(states: torch.Tensor, mask: torch.Tensor, mode: str,
         prompt_lens: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Pool right-padded token states as sentence-transformers' Pooling does."""
    lengths = mask.sum(1)
    if mode == "lasttoken":  # the last real token (the prompt never excludes it)
        return states[torch.arange(states.shape[0]), lengths - 1]
    if prompt_lens is not None:
        positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
        mask = mask & (positions >= prompt_lens[:, None])
    if mode == "cls":
        return states[torch.arange(states.shape[0]), mask.int().argmax(1)]
    m = mask[..., None].to(states.dtype)
    if mode == "max":
        return states.masked_fill(m == 0, float("-inf")).max(1).values
    count = m.sum(1).clamp(min=1e-9)
    total = (states * m).sum(1)
    return total / (count if mode == "mean" else count.sqrt())


def matryoshka(x: torch.Tensor, dims: int | None, normalize: bool = True) -> torch.Tensor:
    """The first `dims` components, re-normalised (Matryoshka Representation Learning)."""
    if dims is None or dims == x.shape[-1]:
        return x
    x = x[..., :dims]
    return F.normalize(x, p=2, dim=-1) if normalize else x


def decoder_head(pooling: str, config_max: int, add_eos: bool) -> SentenceHead:
    """For a causal decoder without a trained head: pooled final hidden states, normalised."""
    if pooling not in ("mean", "lasttoken"):
        raise InvalidRequestError(f"pooling: {pooling!r} is not offered; use mean or lasttoken")
    return SentenceHead(pooling=pooling, trained=False, max_tokens=config_max, add_eos=add_eos,
                        prompts=dict(TASK_PROMPTS))  # fmt: skip


# ---------------------------------------------------------------- Hugging Face layout


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, (dict, list)):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def hf_special_tokens(root: Path) -> tuple[bool, bool]:
    """(adds <bos>, adds <eos>) as the directory's Hugging Face tokenizer files say."""
    cfg_path, tok_path = root / "tokenizer_config.json", root / "tokenizer.json"
    cfg = _json(cfg_path) if cfg_path.is_file() else {}
    bos, eos = cfg.get("add_bos_token"), cfg.get("add_eos_token")
    if (bos is None or eos is None) and tok_path.is_file():
        post = _json(tok_path).get("post_processor") or {}
        single = post.get("single") or [] if post.get("type") == "TemplateProcessing" else []
        if single:
            bos = bos if bos is not None else "SpecialToken" in single[0]
            eos = eos if eos is not None else "SpecialToken" in single[-1]
    return (True if bos is None else bool(bos)), bool(eos)


def _pooling_mode(cfg: dict[str, Any], where: Path) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        modes = [m for k, m in _LEGACY_POOLING.items() if cfg.get(k)]
        mode = modes[0] if len(modes) == 1 else ("mean" if not modes else modes)
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLINGS:
        raise ModelLoadError(
            f"{where}: pooling {mode!r} is not supported; opengemma pools with one of "
            f"{', '.join(POOLINGS)}"
        )
    return mode


def _dense(folder: Path) -> Dense:
    from safetensors.torch import load_file

    cfg = _json(folder / "config.json")
    activation = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise ModelLoadError(f"{folder}: Dense activation {activation!r} is not supported")
    if cfg.get("use_residual"):
        raise ModelLoadError(f"{folder}: residual Dense layers are not supported")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no model.safetensors; save the model with safetensors")
    tensors = load_file(str(weights))
    weight = tensors.get("linear.weight")
    expect = (cfg.get("out_features"), cfg.get("in_features"))
    if weight is None or tuple(weight.shape) != expect:
        raise ModelLoadError(f"{folder}: linear.weight missing or not of shape {expect}")
    bias = tensors.get("linear.bias") if cfg.get("bias", True) else None
    return Dense(weight.float(), None if bias is None else bias.float(), activation)


def load_hf_head(root: Path, hidden: int) -> SentenceHead | None:
    """The head a sentence-transformers directory (`modules.json`) declares; None without one."""
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return None
    head = SentenceHead(normalize=False)
    for module in _json(modules_path):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = root / module.get("path", "")
        if kind == "Transformer":
            if module.get("path", "") != "":
                raise ModelLoadError(f"{modules_path}: the Transformer must be the root folder")
        elif kind == "Pooling":
            cfg = _json(folder / "config.json")
            width = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension", hidden))
            if width != hidden:
                raise ModelLoadError(f"{folder}: pooling width {width}, the decoder's is {hidden}")
            head.pooling, head.include_prompt = (
                _pooling_mode(cfg, folder),
                cfg.get("include_prompt", True),
            )
        elif kind == "Dense":
            head.dense.append(_dense(folder))
        elif kind == "Normalize":
            head.normalize = True
        else:
            raise ModelLoadError(f"{modules_path}: module type {module.get('type')!r} unsupported")
    _check_widths(head, hidden, root)
    st_cfg = root / "config_sentence_transformers.json"
    if st_cfg.is_file():
        cfg = _json(st_cfg)
        head.prompts = {k: v for k, v in (cfg.get("prompts") or {}).items() if isinstance(v, str)}
        head.default_prompt = cfg.get("default_prompt_name")
    head.max_tokens = _max_seq_length(root)
    head.add_eos = hf_special_tokens(root)[1]
    return head


def _max_seq_length(root: Path) -> int | None:
    """sentence-transformers' input limit: sentence_bert_config.json (up to v5), else the
    tokenizer's model_max_length (v6 keeps it there; huge values mean "none")."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):  # fmt: skip
        path = root / name
        value = _json(path).get(key) if path.is_file() else None
        if isinstance(value, int) and 0 < value < 10**7:
            return value
    return None


def _check_widths(head: SentenceHead, hidden: int, where: Path) -> None:
    width = hidden
    for layer in head.dense:
        if layer.weight.shape[1] != width:
            raise ModelLoadError(f"{where}: a Dense layer takes {layer.weight.shape[1]} "
                                 f"features but receives {width}")  # fmt: skip
        width = layer.weight.shape[0]


# ---------------------------------------------------------------- GGUF


def load_gguf_head(path: Path, hidden: int) -> SentenceHead | None:
    """The head of a `gemma-embedding` GGUF file (llama.cpp's names); None for other files."""
    from opengemma.checkpoint.gguf_reader import GGUFFile

    gf = GGUFFile(path)
    arch = gf.metadata.get("general.architecture")
    if arch != "gemma-embedding":
        return None
    code = gf.metadata.get(f"{arch}.pooling_type", 1)
    if code not in GGUF_POOLING:
        raise ModelLoadError(f"{path}: pooling type {code!r} is not one opengemma embeds with")
    head = SentenceHead(pooling=GGUF_POOLING[code], max_tokens=gf.metadata.get(
        f"{arch}.context_length"), add_eos=bool(gf.metadata.get("tokenizer.ggml.add_eos_token")),
        prompts=dict(TASK_PROMPTS))  # fmt: skip
    for name in GGUF_DENSE:
        if f"{name}.weight" in gf.tensors:
            head.dense.append(Dense(gf.load(f"{name}.weight", torch.float32), None))
    _check_widths(head, hidden, path)
    return head
