"""lm-evaluation-harness backend: any lm-eval task on opengemma's engine.

Importing this module registers the model type ``opengemma`` with lm-eval's model registry
(lm-eval's own ``register_model``; no fork). Then, in Python::

    import lm_eval, opengemma.eval.lm_eval_backend
    lm_eval.simple_evaluate(model="opengemma", model_args="pretrained=model.gguf", tasks=[...])

or from the shell, through lm-eval's own command line with the type registered first::

    python -m opengemma.eval.lm_eval_backend run --model opengemma \\
        --model_args pretrained=model.gguf,dtype=float32 --tasks hellaswag

model_args: ``pretrained`` (a .gguf file or a Hugging Face directory; absent = the embedded
Gemma 3 270M), ``dtype``, ``quant``, ``adapter`` (a LoRA directory), ``max_length`` (tokens of
context; default min(model context, 2048)), ``max_gen_toks`` (default 256), ``threads``.

Scoring follows lm-eval's Hugging Face backend: BOS before every context, the continuation's
tokens taken from the tokenization of context + continuation, left truncation to max_length.
Rolling log-likelihoods (perplexity tasks) use disjoint windows of max_length tokens, each with a
BOS at its head (Gemma expects one at position 0); lm-eval's Hugging Face backend starts later
windows without BOS and, for Gemma, also scores the BOS of the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (fills the registry first: lm-eval skips that when not empty)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from opengemma.eval import EvalError
from opengemma.eval.generation import Job, generate_many
from opengemma.eval.perplexity import sequence_nll
from opengemma.eval.scoring import score_rows
from opengemma.sampling import SamplingParams

DEFAULT_MAX_LENGTH = 2048
DEFAULT_BATCH = 8
BOS_TEXT = "<bos>"


def _batch_size(value: Any) -> int:
    """lm-eval passes an int, a digit string, or "auto" / "auto:N" (here: the default)."""
    if isinstance(value, int):
        return max(1, value)
    text = str(value or "")
    return max(1, int(text)) if text.isdigit() else DEFAULT_BATCH


@register_model("opengemma")
class OpenGemmaEvalLM(TemplateLM):
    """lm-eval model type ``opengemma``: loglikelihood, loglikelihood_rolling, generate_until."""

    def __init__(
        self,
        pretrained: str | None = None,
        dtype: str | None = None,
        quant: str = "auto",
        adapter: str | None = None,
        batch_size: int | str = DEFAULT_BATCH,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        threads: int | str | None = None,
        lm: Any = None,
        **ignored: Any,  # lm-eval's generic options (device, max_batch_size, ...)
    ) -> None:
        super().__init__()
        if lm is None:
            from opengemma.api import load

            lm = load(
                pretrained or None, dtype=dtype, quant=quant, adapter=adapter, threads=threads
            )
        self.lm = lm
        self.batch_size = _batch_size(batch_size)
        context = lm.config.max_position_embeddings
        self.max_length = min(int(max_length or min(context, DEFAULT_MAX_LENGTH)), context)
        self.max_gen_toks = int(max_gen_toks)
        self._name = str(pretrained or "embedded")

    # ---- tokenization ---------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.lm.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.lm.tokenizer.bos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        """Ids of `string`; BOS first unless add_special_tokens is False or the text has one."""
        add_bos = add_special_tokens is not False and not string.startswith(BOS_TEXT)
        return self.lm.tokenizer.encode(string, add_bos=add_bos)

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.lm.tokenizer.decode(ids)

    # ---- scoring --------------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kw: Any
    ) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs in nats, continuation is the greedy one) per request."""
        rows, starts = [], []
        for _, context, continuation in requests:
            if not continuation:
                raise EvalError("a request has an empty continuation; nothing to score")
            whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append(whole)
            starts.append(len(whole) - len(continuation))
        # longest first, so that rows of similar length share a batch
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        disable = bool(kw.get("disable_tqdm", False))
        for k in tqdm(range(0, len(order), self.batch_size), disable=disable, desc="scoring"):
            group = order[k : k + self.batch_size]
            scores = score_rows(
                self.lm.model, [rows[i] for i in group], [starts[i] for i in group], self._pad_id
            )
            for i, score in zip(group, scores, strict=True):
                results[i] = (score.total, score.greedy)
                if self.cache_hook is not None and requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results  # type: ignore[return-value]

    @property
    def _pad_id(self) -> int:
        pad = self.lm.tokenizer.pad_id
        return 0 if pad is None else pad

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Total log-likelihood (nats) of each whole text, in disjoint max_length windows."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="rolling"):
            (text,) = req.args
            tokens = self.tok_encode(text, add_special_tokens=False)
            if not tokens:
                out.append(0.0)
                continue
            nll, _, _ = sequence_nll(
                self.lm,
                tokens,
                context=self.max_length,
                stride=self.max_length - 1,
                batch_size=self.batch_size,
            )
            out.append(-nll)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), -nll)
        return out

    # ---- generation -----------------------------------------------------------------------------

    def _job(self, context: str, gen_kwargs: dict[str, Any]) -> Job:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id]) or "<eos>"]
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0)) if do_sample else 0.0
        params = SamplingParams(
            temperature=temperature,
            top_p=float(kwargs.pop("top_p", 1.0)),
            top_k=int(kwargs.pop("top_k", 0) or 0),
            seed=kwargs.pop("seed", None),
        )
        ids = self.tok_encode(context)[-max(1, self.max_length - max_new) :]
        return Job(ids, max_new, stop=until, params=params)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with do_sample) continuations cut before the first stop string."""
        jobs = [
            self._job(context, gen_kwargs) for context, gen_kwargs in (r.args for r in requests)
        ]
        bar = tqdm(total=len(jobs), disable=disable_tqdm, desc="generating")
        try:
            texts = generate_many(self.lm, jobs, self.batch_size, on_done=lambda _: bar.update())
        finally:
            bar.close()
        for req, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    # ---- chat template --------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return f"opengemma-{self._name}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return "gemma-turns" if chat_template else None

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The Gemma turn template as text (starts with <bos>, which tok_encode keeps single).

        With add_generation_prompt False, a final assistant message is left open (its turn not
        ended) so that the model continues it, as lm-eval expects.
        """
        from opengemma.chat import chat_prompt_text

        last = chat_history[-1] if chat_history else {}
        if add_generation_prompt or last.get("role") != "assistant":
            return chat_prompt_text(chat_history, add_generation_prompt=add_generation_prompt)
        return chat_prompt_text(chat_history[:-1]) + str(last.get("content", ""))


def main(argv: list[str] | None = None) -> None:
    """lm-eval's own command line, with the ``opengemma`` model type registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = ["lm-eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
