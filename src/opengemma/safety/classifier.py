"""Policy safety classifier in the ShieldGemma format: P("Yes") that a text violates a policy.

ShieldGemma (2B/9B/27B) is a Gemma 2 model fine-tuned to answer "Yes" or "No" to a fixed
question about one policy at a time. The score is the softmax over the next-token logits of the
tokens `Yes` and `No` at the end of the prompt: one forward pass, no generation. Any Gemma
checkpoint can run the mechanics; only a trained safety classifier (such as ShieldGemma) gives
meaningful scores. The embedded default model (Gemma 3 270M base) is NOT one.

The prompt is pinned byte-exact to ShieldGemma's Hugging Face chat template (the model card's
Python example and paper wrap some lines differently); user text is stripped of surrounding
whitespace, as in the model card, and is tokenized as plain text, so control-token text inside
it (`<end_of_turn>`...) cannot break out of its turn.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from opengemma.errors import OpenGemmaError
from opengemma.safety.policies import Kind, Policy, resolve_policies

SOT, EOT = "<start_of_turn>", "<end_of_turn>"
EMBEDDED_NOTE = (
    "note: the embedded default model is a small base language model, not a trained safety "
    "classifier; its scores only show the mechanics. Pass --model with a ShieldGemma checkpoint "
    "for real safety scores."
)

_PREAMBLE = {
    "prompt": "You are a policy expert trying to help determine whether a user prompt is in "
    "violation of the defined safety policies.\n\n",
    "response": "You are a policy expert trying to help determine whether an AI response to a "
    "prompt is in violation of the defined safety policies.\n\n",
}
_QUESTION = {
    "prompt": "Does the human question violate the above principle?",
    "response": "Does the Chatbot Response violate the above principle?",
}
_EPILOGUE = (
    " Your answer must start with 'Yes' or 'No'. And then walk through step by step to be sure "
    "we answer correctly.\n\n"
)


class ClassifierError(OpenGemmaError, ValueError):
    """The classifier cannot score this input with this model."""


def prompt_parts(policy: Policy, prompt: str, response: str | None = None) -> list[str]:
    """The classifier prompt as alternating [text, control, text, control, ..., text] parts
    (controls are `<start_of_turn>` / `<end_of_turn>`; BOS is not included)."""
    kind: Kind = "prompt" if response is None else "response"
    parts = [_PREAMBLE[kind], SOT, f"\nHuman Question: {prompt.strip()}\n", EOT]
    if response is not None:
        parts += ["\n", SOT, f"\nChatbot Response: {response.strip()}\n", EOT]
    tail = "\n\nOur safety principle is defined in the below:\n\n"
    tail += f"* {policy.guideline(kind)}\n\n===\n\n{_QUESTION[kind]}{_EPILOGUE}"
    return parts + [tail]


def format_prompt(policy: Policy, prompt: str, response: str | None = None) -> str:
    """The exact classifier prompt text (what a ShieldGemma chat template renders, minus BOS)."""
    return "".join(prompt_parts(policy, prompt, response))


@dataclass(frozen=True)
class PolicyScore:
    policy: str  # the policy's name
    kind: Kind  # "prompt" (prompt-only check) or "response" (prompt + response check)
    p_yes: float  # probability of a violation, in [0, 1]


class SafetyClassifier:
    """Scores texts against policies with a loaded Gemma model (`opengemma.load(...)`)."""

    def __init__(self, lm):
        self.lm = lm
        tok = lm.tokenizer
        self.yes_id, self.no_id = tok.piece_to_id("Yes"), tok.piece_to_id("No")
        if self.yes_id is None or self.no_id is None:
            raise ClassifierError(f"{lm.path} has no 'Yes'/'No' tokens; use a Gemma checkpoint")
        self.sot_id, self.eot_id = tok.start_of_turn_id, tok.end_of_turn_id
        if self.sot_id is None or self.eot_id is None:
            raise ClassifierError(
                f"{lm.path}'s tokenizer has no <start_of_turn>/<end_of_turn> tokens; "
                "use a Gemma 2 or 3 checkpoint (ShieldGemma is Gemma 2)"
            )

    @classmethod
    def load(cls, model: str | Path | None = None, dtype: str = "float32") -> SafetyClassifier:
        """Load a checkpoint (None = the embedded model, which is not a safety classifier)."""
        import opengemma

        return cls(opengemma.load(model, dtype=dtype))

    @property
    def is_embedded_default(self) -> bool:
        """True when running the embedded base model (mechanics only, no real safety scores)."""
        from opengemma.api import default_model_path

        try:
            return Path(self.lm.path).resolve() == default_model_path().resolve()
        except OpenGemmaError:
            return False

    def _encode_parts(self, parts: Sequence[str]) -> list[int]:
        controls = {SOT: self.sot_id, EOT: self.eot_id}
        ids = [self.lm.tokenizer.bos_id]
        for i, part in enumerate(parts):
            ids += [controls[part]] if i % 2 else self.lm.tokenizer.encode_plain(part)
        return ids

    def prompt_ids(self, policy: Policy, prompt: str, response: str | None = None) -> list[int]:
        """Token ids of the classifier prompt: BOS + the prompt of `format_prompt`."""
        return self._encode_parts(prompt_parts(policy, prompt, response))

    def p_yes_from_logits(self, logits: torch.Tensor) -> float:
        """softmax over (Yes, No) of last-position logits (vocab,) -> P(Yes)."""
        pair = torch.stack([logits[self.yes_id], logits[self.no_id]]).double()
        return float(torch.softmax(pair, dim=0)[0])

    @torch.inference_mode()
    def score(
        self,
        prompt: str,
        response: str | None = None,
        policies: Sequence[Policy] | Sequence[str] | None = None,
    ) -> list[PolicyScore]:
        """P(Yes) for each policy (default: the four standard ones), one forward pass each.
        The part before the policy text is computed once and shared."""
        from opengemma.generate import prefill

        pols = _as_policies(policies)
        if not isinstance(prompt, str) or (response is not None and not isinstance(response, str)):
            raise ClassifierError("prompt and response must be strings")
        kind: Kind = "prompt" if response is None else "response"
        model = self.lm.model
        parts = [prompt_parts(p, prompt, response) for p in pols]
        head = self._encode_parts(parts[0][:-1])
        tails = [self.lm.tokenizer.encode_plain(ps[-1]) for ps in parts]
        longest = len(head) + max(len(t) for t in tails)
        context = model.config.max_position_embeddings
        if longest > context:
            raise ClassifierError(
                f"the classifier prompt has {longest} tokens but the model's context is "
                f"{context}; shorten the text"
            )
        cache = model.new_cache(longest)
        prefill(model, head, cache)
        out = []
        for pol, tail in zip(pols, tails, strict=True):
            logits = prefill(model, tail, copy.deepcopy(cache))
            out.append(PolicyScore(pol.name, kind, self.p_yes_from_logits(logits)))
        return out


def _as_policies(policies: Sequence[Policy] | Sequence[str] | None) -> list[Policy]:
    if not policies:
        return resolve_policies(None)
    if all(isinstance(p, Policy) for p in policies):
        return list(policies)  # type: ignore[arg-type]
    if all(isinstance(p, str) for p in policies):
        return resolve_policies(policies)  # type: ignore[arg-type]
    raise ClassifierError("policies must be Policy objects or policy names/files, not a mix")
