"""The lm-eval backend against lm-eval's own Hugging Face backend, on a local task."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pytest


def run(model, model_args, root: Path) -> dict:
    from lm_eval.tasks import TaskManager

    # include_defaults=False: indexing lm-eval's thousands of built-in tasks takes ~20 s
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=["tiny_mc", "tiny_gen"],
        task_manager=TaskManager(include_path=str(root), include_defaults=False),
        log_samples=True,
        batch_size=3,
        device="cpu",
    )


def generations(results: dict) -> list[str]:
    samples = sorted(results["samples"]["tiny_gen"], key=lambda s: s["doc_id"])
    return [s["resps"][0][0] for s in samples]


def per_example(results: dict) -> list[list[float]]:
    samples = sorted(results["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


@pytest.mark.slow
def test_tasks_match_hf_backend(tiny_model, tiny_lm, eval_task, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import opengemma.eval.lm_eval_backend  # noqa: F401  (registers "opengemma")

    root, questions, stops = eval_task
    ours = run("opengemma", f"pretrained={tiny_model.path},dtype=float32", root)
    theirs = run("hf", f"pretrained={tiny_model.path},dtype=float32", root)
    a, b = per_example(ours), per_example(theirs)
    assert len(a) == len(questions)
    for mine, ref in zip(a, b, strict=True):
        assert mine == pytest.approx(ref, abs=1e-3)
    acc = ours["results"]["tiny_mc"]["acc,none"]
    assert acc == theirs["results"]["tiny_mc"]["acc,none"]
    texts = generations(ours)
    # batched through lm-eval = one by one through LM.generate, stop strings included
    assert texts == [tiny_lm.generate(f"Q: {q}\nA:", 12, stop=stops) for q, _, _ in questions]
    assert any(t.endswith("J") for t in texts)  # "JJJJJ]": cut before the stop "]"
    assert not any(stop in t for t in texts for stop in stops)
    # transformers decodes invalid UTF-8 byte runs differently (blanks where we write U+FFFD)
    same = [(a, b) for a, b in zip(texts, generations(theirs), strict=True) if "\ufffd" not in a]
    assert len(same) >= 4 and all(a == b for a, b in same)


def test_rolling_loglikelihood_and_chat(tiny_model, tiny_lm, reference_nll):
    from lm_eval.api.instance import Instance

    from opengemma.eval.lm_eval_backend import OpenGemmaEvalLM

    adapter = OpenGemmaEvalLM(lm=tiny_lm, max_length=32, batch_size=2)
    texts = ["The heron watches the river and does not move, " * 4, "short"]
    reqs = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    got = adapter.loglikelihood_rolling(reqs, disable_tqdm=True)
    for text, value in zip(texts, got, strict=True):
        ids = tiny_lm.tokenizer.encode_plain(text)
        nll, _ = reference_nll(tiny_model.reference, ids, tiny_lm.tokenizer.bos_id, 32, 31)
        assert value == pytest.approx(-nll, rel=1e-5)

    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    open_turn = adapter.apply_chat_template(chat, add_generation_prompt=False)
    assert open_turn == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHel"
    ids = adapter.tok_encode(open_turn)
    assert ids.count(tiny_lm.tokenizer.bos_id) == 1 and ids[:2] == [2, 105]
    assert (
        adapter.tok_encode("Hi")[0] == 2
        and adapter.tok_encode("Hi", add_special_tokens=False)[0] != 2
    )
