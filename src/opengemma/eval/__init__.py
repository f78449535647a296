"""Evaluation: perplexity, an lm-evaluation-harness backend, and side-by-side comparison reports.

`opengemma eval` (eval/cli.py) is the command; each part is importable on its own:
`perplexity.perplexity_of_text`, `lm_eval_backend.OpenGemmaEvalLM` (registered with lm-eval as
the model type `opengemma`), `report.compare`.
"""

from opengemma.errors import OpenGemmaError


class EvalError(OpenGemmaError):
    """Bad evaluation input: an empty text, a missing dataset or task, inconsistent options."""


__all__ = ["EvalError"]
