"""`opengemma bench --speculative`: prompt-lookup speculation against plain decoding, in-process.

Two tasks cut from the benchmark prose: `copy` asks the model to repeat a passage (the case
speculation is for), `free` continues the prose, sampled (new text: drafts are rare and mostly
wrong, so this shows the overhead). Each run decodes greedily with plain single steps and with
speculation, alternating; decode time is from the first token to the last (the prefill is the
same for both), and the two outputs must be the same tokens.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from opengemma.generate import generate_step
from opengemma.sampling import Sampler, SamplingParams
from opengemma.speculative import SpeculationStats, ngram_generate_step

COPY_INSTRUCTION = "Repeat the text above exactly, word for word:"


@dataclass
class SpecRow:
    task: str
    prompt_tokens: int
    decode_tokens: int
    plain_tok_s: float
    spec_tok_s: float
    speedup: float
    acceptance: float
    tokens_per_step: float
    identical: bool


def task_prompts(tokenizer, text: str, passage_tokens: int = 160) -> dict[str, list[int]]:
    """`copy`: a passage, then the instruction to repeat it and its first words (the model
    goes on copying); `free`: a stretch of the prose to continue."""
    ids = tokenizer.encode(text)
    passage = tokenizer.decode(ids[1 : passage_tokens + 1])
    start = " ".join(passage.split()[:8])
    copy = tokenizer.encode(f"{passage}\n\n{COPY_INSTRUCTION.strip()}\n\n{start}")
    return {"copy": copy, "free": ids[: passage_tokens // 2]}


# copying greedily; free text sampled (seeded: speculation keeps sampled output exact too)
TASK_SAMPLING = {"copy": {"temperature": 0.0}, "free": {"temperature": 0.8, "seed": 0}}


def _decode(step_fn, model, ids, n, task, **kw) -> tuple[list[int], float]:
    it = step_fn(model, ids, Sampler(SamplingParams(**TASK_SAMPLING[task])), n, **kw)
    out = [next(it)]  # the prefill's token: not timed
    start = time.perf_counter()
    out.extend(it)
    return out, (len(out) - 1) / (time.perf_counter() - start)


def run_speculative_bench(lm, text: str, decode_tokens: int = 128, repeats: int = 3,
                          log=print) -> list[SpecRow]:  # fmt: skip
    rows = []
    for task, ids in task_prompts(lm.tokenizer, text).items():
        plain_speeds, spec_speeds, identical = [], [], True
        stats = SpeculationStats()
        for _ in range(repeats):
            plain, p = _decode(generate_step, lm.model, ids, decode_tokens, task)
            stats = SpeculationStats()
            spec, s = _decode(ngram_generate_step, lm.model, ids, decode_tokens, task,
                              stats=stats)  # fmt: skip
            identical &= plain == spec
            plain_speeds.append(p)
            spec_speeds.append(s)
        if stats.reason:
            log(f"speculative: {stats.reason}")
        p, s = statistics.median(plain_speeds), statistics.median(spec_speeds)
        rows.append(SpecRow(task, len(ids), len(plain), round(p, 2), round(s, 2), round(s / p, 3),
                            round(stats.acceptance, 3), round(stats.tokens_per_step, 2),
                            identical))  # fmt: skip
        log(f"speculative {task}: {rows[-1]}")
    return rows


def as_dicts(rows: list[SpecRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def markdown(rows: list[SpecRow]) -> str:
    head = ("| task | prompt | decoded | plain tok/s | ngram tok/s | speed-up | acceptance "
            "| tokens/step | identical |\n|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    return head + "".join(
        f"| {r.task} | {r.prompt_tokens} | {r.decode_tokens} | {r.plain_tok_s} | {r.spec_tok_s} "
        f"| {r.speedup:.2f}x | {r.acceptance:.0%} | {r.tokens_per_step} | {r.identical} |\n"
        for r in rows
    )


def run_section(model, text: str, threads: list[int], decode_tokens: int, repeats: int,
                json_out=None, markdown_out=None, log=print) -> list[SpecRow]:  # fmt: skip
    """The `--speculative` section of `opengemma bench`: one table per thread count."""
    import json

    from opengemma.api import load
    from opengemma.kernels import kernel_info

    lm = load(model, threads=threads[0] or None)
    doc = {"model": lm.path.name, "kernel": kernel_info().get("variant"), "runs": []}
    text_out = ""
    for count in threads:
        from opengemma.threads import configure_threads

        used = configure_threads(lm.model, count or None)
        rows = run_speculative_bench(lm, text, decode_tokens, repeats, log=log)
        doc["runs"].append({"threads": used, "rows": as_dicts(rows)})
        text_out += f"\n{lm.path.name}, {used} thread(s), kernels {doc['kernel']}:\n\n"
        text_out += markdown(rows)
    print(text_out)
    if json_out:
        from pathlib import Path

        Path(json_out).write_text(json.dumps(doc, indent=2) + "\n")
    if markdown_out:
        from pathlib import Path

        Path(markdown_out).write_text(text_out)
    return rows
