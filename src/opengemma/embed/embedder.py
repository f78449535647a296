"""Embedder: texts or token ids -> float32 sentence embeddings, batched by length.

Texts get the task prompt, are tokenized as the model's tokenizer files say (<bos>, and <eos>
for EmbeddingGemma), and are cut to the model's input limit: with `truncate` (the default, as
sentence-transformers and Ollama do) the tail is dropped and <eos> kept; without it an over-long
input is an InvalidRequestError naming the input. Inputs are sorted by length and run in
right-padded batches of at most `max_batch_tokens` padded tokens (the key mask keeps padding
out of attention), so memory stays bounded and every row equals that row run alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from opengemma.embed.head import TASK_PROMPTS, SentenceHead, decoder_head, matryoshka
from opengemma.errors import InvalidRequestError

Progress = Callable[[int], None]


class Embedder:
    """Sentence embeddings from a loaded LM (opengemma.api.LM)."""

    def __init__(self, lm: Any, head: SentenceHead | None = None, pooling: str | None = None,
                 max_batch_tokens: int = 8192, max_batch: int = 64):  # fmt: skip
        self.lm, self.tokenizer, self.model = lm, lm.tokenizer, lm.model
        cfg = lm.config
        self.head = head if head is not None else load_head(lm, pooling)
        self.dim = self.head.dim(cfg.hidden_size)
        self.max_tokens = min(self.head.max_tokens or cfg.max_position_embeddings,
                              cfg.max_position_embeddings)  # fmt: skip
        self.max_batch_tokens, self.max_batch = max(max_batch_tokens, self.max_tokens), max_batch

    @property
    def trained(self) -> bool:
        """False for a causal decoder's pooled states: usable, but not a trained embedding."""
        return self.head.trained

    def prompt(self, task: str | None) -> str:
        """The text put before every input for `task` (a prompt name); "" without a task."""
        name = task if task is not None else self.head.default_prompt
        if name is None:
            return ""
        prompts = {**TASK_PROMPTS, **self.head.prompts}
        if name not in prompts:
            raise InvalidRequestError(
                f"task: unknown task {name!r}; use one of {', '.join(sorted(prompts))}"
            )
        return prompts[name]

    def check_dimensions(self, dimensions: int | None, param: str = "dimensions") -> int | None:
        """None or a width 1..dim (Matryoshka: EmbeddingGemma is trained at 768/512/256/128)."""
        if dimensions is None:
            return None
        if (
            isinstance(dimensions, bool)
            or not isinstance(dimensions, int)
            or not (1 <= dimensions <= self.dim)
        ):
            raise InvalidRequestError(
                f"{param}: {dimensions!r} is not supported; the embeddings have {self.dim} "
                f"dimensions: ask for a whole number from 1 to {self.dim}"
            )
        return dimensions

    def fit(self, ids: list[int], truncate: bool, where: str) -> list[int]:
        """`ids` within the input limit: cut (keeping a final <eos>) or refused."""
        if len(ids) <= self.max_tokens:
            return ids
        if not truncate:
            raise InvalidRequestError(
                f"{where} is {len(ids)} tokens, over this model's limit of {self.max_tokens}; "
                "shorten it or allow truncation"
            )
        if self.head.add_eos:
            return ids[: self.max_tokens - 1] + [self.tokenizer.eos_id]
        return ids[: self.max_tokens]

    def tokenize(self, texts: Sequence[str], task: str | None = None, truncate: bool = True,
                 param: str = "input", first: int = 0) -> list[list[int]]:  # fmt: skip
        """Token ids of each text after the task prompt; `first`: the index of texts[0]."""
        prefix = self.prompt(task)
        eos = [self.tokenizer.eos_id] if self.head.add_eos else []
        out = []
        for i, text in enumerate(texts, first):
            if not isinstance(text, str):
                raise InvalidRequestError(f"{param}[{i}] is {type(text).__name__}, not a string")
            if not text.strip():
                raise InvalidRequestError(f"{param}[{i}] is an empty string; give some text")
            ids = self.tokenizer.encode(prefix + text) + eos
            out.append(self.fit(ids, truncate, f"{param}[{i}]"))
        return out

    def check_ids(self, id_lists: Sequence[Sequence[int]], truncate: bool = True,
                  param: str = "input") -> list[list[int]]:  # fmt: skip
        """Token-id inputs as given (no prompt, no <bos>/<eos> added), checked and fitted."""
        vocab = self.tokenizer.vocab_size
        out = []
        for i, ids in enumerate(id_lists):
            if len(ids) == 0:
                raise InvalidRequestError(f"{param}[{i}] is an empty list of token ids")
            bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int)
                   or not 0 <= t < vocab]  # fmt: skip
            if bad:
                raise InvalidRequestError(
                    f"{param}[{i}]: token id {bad[0]!r} is outside the vocabulary (0..{vocab - 1})"
                )
            out.append(self.fit(list(ids), truncate, f"{param}[{i}]"))
        return out

    def embed(self, texts: str | Sequence[str], dimensions: int | None = None,
              task: str | None = None, truncate: bool = True) -> np.ndarray:  # fmt: skip
        """(n, dim) float32 for a list of texts, (dim,) for one string."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not items:
            raise InvalidRequestError("input is an empty list; give at least one text")
        dimensions = self.check_dimensions(dimensions)
        ids = self.tokenize(items, task, truncate)
        prefix = self.prompt(task)
        prompt_len = len(self.tokenizer.encode(prefix)) if prefix else 0
        out = self.embed_ids(ids, dimensions, prompt_len)
        return out[0] if single else out

    @torch.inference_mode()
    def embed_ids(self, id_lists: Sequence[Sequence[int]], dimensions: int | None = None,
                  prompt_len: int = 0, progress: Progress | None = None) -> np.ndarray:  # fmt: skip
        """Embeddings of checked, fitted token-id lists, in their order."""
        width = dimensions or self.dim
        out = np.empty((len(id_lists), width), dtype=np.float32)
        order = sorted(range(len(id_lists)), key=lambda i: -len(id_lists[i]))
        for batch in self._batches(order, id_lists):
            vectors = self._forward([id_lists[i] for i in batch], prompt_len)
            out[batch] = matryoshka(vectors, dimensions, self.head.normalize).numpy()
            if progress is not None:
                progress(len(batch))
        return out

    def _batches(self, order: list[int], id_lists: Sequence[Sequence[int]]) -> list[list[int]]:
        batches: list[list[int]] = []
        for i in order:  # longest first: a batch's first row sets its padded length
            if (
                batches
                and len(batches[-1]) < self.max_batch
                and (
                    (len(batches[-1]) + 1) * len(id_lists[batches[-1][0]]) <= self.max_batch_tokens
                )
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _forward(self, rows: list[Sequence[int]], prompt_len: int) -> torch.Tensor:
        device = self.model.device
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.tokenizer.pad_id or 0, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.bool)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[b, : len(r)] = True
        padded = not bool(mask.all())
        ids, mask = ids.to(device), mask.to(device)
        states = self.model(ids, key_mask=mask if padded else None, hidden=True)
        prompt_lens = torch.full((len(rows),), prompt_len, device=device)
        return self.head(states, mask, prompt_lens).float().cpu()


def load_head(lm: Any, pooling: str | None = None) -> SentenceHead:
    """The model's sentence-transformers head, or pooled decoder states for a plain decoder."""
    from opengemma.embed.head import hf_special_tokens, load_gguf_head, load_hf_head

    hidden = lm.config.hidden_size
    if lm.format == "hf":
        head, add_eos = load_hf_head(lm.path, hidden), hf_special_tokens(lm.path)[1]
    elif lm.format == "gguf":
        head = load_gguf_head(lm.path, hidden)
        add_eos = bool((lm.info.get("metadata") or {}).get("tokenizer.ggml.add_eos_token"))
    else:
        head, add_eos = None, False
    if head is not None:
        if pooling is not None and pooling != head.pooling:
            raise InvalidRequestError(
                f"pooling: {lm.path.name} is a trained embedding model that pools with "
                f"{head.pooling!r}; a pooling choice applies to causal decoders only"
            )
        return head
    return decoder_head(pooling or "mean", lm.config.max_position_embeddings, add_eos)
