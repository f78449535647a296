"""On the embedded Gemma 3 270M, a short CPU run teaches an answer format the base model does
not follow, and the adapter generalises to words it never saw in training."""

from __future__ import annotations

import pytest

from opengemma.lora import unload
from opengemma.tune.recipe import TrainConfig, main
from tests.tune.helpers import FORMAT_WORDS, write_jsonl

TRAIN_WORDS = FORMAT_WORDS + [
    "bread",
    "chair",
    "dream",
    "eagle",
    "flame",
    "grape",
    "horse",
    "island",
]
HELD_OUT = ["jacket", "kettle", "ladder", "mirror", "needle", "pencil"]


def _prompt(word: str) -> str:
    return f"Word: {word}\nAnswer:"


def _passes(lm) -> int:
    """Held-out words answered exactly in the trained format ` <word>` (greedy)."""
    outs = [lm.generate(_prompt(w), max_tokens=6, stop=["\n"]) for w in HELD_OUT]
    return sum(o.strip() == f"<{w}>" for o, w in zip(outs, HELD_OUT, strict=True))


@pytest.mark.slow
def test_short_run_teaches_a_format_that_holds_on_unseen_inputs(lm, tmp_path):
    data = write_jsonl(
        tmp_path / "fmt.jsonl",
        [{"prompt": _prompt(w), "completion": f" <{w}>"} for w in TRAIN_WORDS],
    )
    assert _passes(lm) == 0  # the base model does not answer this way
    try:
        res = main(
            TrainConfig(
                data=str(data),
                out=str(tmp_path / "out"),
                max_steps=8,
                batch=4,
                lr=1e-3,
                max_len=32,
                eval_split=0.0,
                scrub=False,
                progress=False,
            ),
            lm=lm,
        )
        assert res.steps == 8 and res.log[-1]["loss"] < 0.1 * res.log[0]["loss"]
        assert _passes(lm) >= len(HELD_OUT) - 1
        assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    finally:
        unload(lm.model)  # give the shared model back unchanged
