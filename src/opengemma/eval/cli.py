"""`opengemma eval`: lm-eval tasks, sliding-window perplexity, side-by-side comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from opengemma.atomic import write_atomic
from opengemma.cli_support import DTYPE_HELP, MODEL_HELP, announce_loaded, cli_errors, eprint
from opengemma.eval import EvalError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Evaluate models: lm-eval tasks, perplexity, side-by-side comparison.",
)


@app.command()
@cli_errors
def perplexity(
    files: list[Path] = typer.Argument(..., help="UTF-8 text files to score."),  # noqa: B008
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    quant: str = typer.Option("auto", help="Weights in memory: auto, q8 or none."),
    context: int = typer.Option(512, help="Tokens per window, BOS included."),
    stride: int = typer.Option(None, help="Tokens between window starts; default context/2."),
    batch_size: int = typer.Option(1, help="Windows per forward pass."),
    json_out: Path = typer.Option(None, "--json", help="Also write the results here as JSON."),  # noqa: B008
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or load line."),
) -> None:
    """Sliding-window perplexity of each file and of all of them together."""
    from rich.progress import Progress

    from opengemma.eval.perplexity import combine, perplexity_of_text, read_text

    texts = [(str(f), read_text(f)) for f in files]  # fail on a bad file before loading
    lm = _load(model, dtype, quiet, quant=quant)
    results = []
    with Progress(disable=quiet, transient=True) as bar:
        for name, text in texts:
            n = len(lm.tokenizer.encode_plain(text))
            task = bar.add_task(f"scoring {Path(name).name}", total=n)
            results.append(
                perplexity_of_text(
                    lm,
                    text,
                    name,
                    context=context,
                    stride=stride,
                    batch_size=batch_size,
                    progress=lambda k, t=task: bar.advance(t, k),
                )
            )
    rows = results + ([combine(results)] if len(results) > 1 else [])
    for r in rows:
        print(
            f"{r.name}\tppl {r.perplexity:.4f}\t{r.bits_per_token:.4f} bits/token\t"
            f"{r.tokens} tokens\t{r.windows} windows"
        )
    if json_out is not None:
        fields = ("name", "perplexity", "nll", "tokens", "windows")
        results = [{k: getattr(r, k) for k in fields} for r in rows]
        doc = {"context": context, "stride": stride or max(1, (context - 1) // 2)}
        doc["results"] = results
        _write_json(json_out, doc)


@app.command()
@cli_errors
def tasks(
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated lm-eval task names."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    dtype: str = typer.Option(None, help=DTYPE_HELP),
    quant: str = typer.Option("auto", help="Weights in memory: auto, q8 or none."),
    adapter: str = typer.Option(None, help="A LoRA adapter directory to apply."),
    limit: float = typer.Option(None, help="Examples per task (a fraction when below 1)."),
    num_fewshot: int = typer.Option(None, help="Few-shot examples per prompt."),
    batch_size: int = typer.Option(8, help="Requests scored or generated together."),
    include_path: Path = typer.Option(None, help="A folder of task YAMLs of your own."),  # noqa: B008
    builtin_tasks: bool = typer.Option(True, help="Also index lm-eval's built-in tasks."),
    chat: bool = typer.Option(False, help="Apply the Gemma chat template to prompts."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for results.json."),  # noqa: B008
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Run lm-evaluation-harness tasks on opengemma; offline, from local datasets."""
    from opengemma.eval.harness import run_tasks

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    lm = _load(model, dtype, quiet, quant=quant, adapter=adapter)
    results = run_tasks(
        lm,
        names,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        include_path=include_path,
        builtin=builtin_tasks,
        chat=chat,
        name=model or "embedded",
    )
    _write_json(output / "results.json", results)
    for task, metrics in results["results"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"{task}\t{shown}")
    if not quiet:
        eprint(f"results in {output / 'results.json'}")


@app.command()
@cli_errors
def compare(
    a: str = typer.Option(None, "--a", help="Model A (" + MODEL_HELP + ")"),
    b: str = typer.Option(None, "--b", help="Model B; default: the same model as A."),
    prompts: Path = typer.Option(..., help="JSONL {prompt, reference?} or a text file."),  # noqa: B008
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the HTML report."),  # noqa: B008
    judge: str = typer.Option(None, help="A model that judges which answer is better."),
    a_dtype: str = typer.Option(None, help="dtype of A (" + DTYPE_HELP + ")"),
    b_dtype: str = typer.Option(None, help="dtype of B."),
    a_quant: str = typer.Option("auto", help="Weights of A in memory: auto, q8 or none."),
    b_quant: str = typer.Option("auto", help="Weights of B in memory: auto, q8 or none."),
    a_adapter: str = typer.Option(None, help="LoRA adapter directory for A."),
    b_adapter: str = typer.Option(None, help="LoRA adapter directory for B."),
    max_tokens: int = typer.Option(128, help="Most tokens per answer."),
    chat: bool = typer.Option(True, help="Send prompts in the Gemma chat template."),
    overwrite: bool = typer.Option(False, help="Replace an existing report folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Both models answer the same prompts; an HTML report shows them side by side."""
    from opengemma.eval.compare import Comparison, answer_all, read_prompts, score
    from opengemma.eval.compare_report import write_report

    items = read_prompts(prompts)
    if judge is None and any(it.reference is None for it in items):
        raise EvalError('give --judge MODEL, or a "reference" for every prompt in the JSONL')
    answers, names = [], []
    for path, dt, qu, ad in (
        (a, a_dtype, a_quant, a_adapter),
        (b or a, b_dtype, b_quant, b_adapter),
    ):
        lm = _load(path, dt, quiet, quant=qu, adapter=ad)
        answers.append(answer_all(lm, items, max_tokens, chat))
        names.append(_describe(path, dt, qu, ad))
        del lm
    judge_lm = _load(judge, None, quiet) if judge is not None else None
    result = score(
        Comparison(names[0], names[1], "", items, answers[0], answers[1], [], []),
        judge_lm,
        judge_name=str(judge),
    )
    index = write_report(result, output, overwrite=overwrite)
    rates = result.win_rates()
    print(f"A wins {rates['a'][0]:.1%}, ties {rates['tie'][0]:.1%}, B wins {rates['b'][0]:.1%}")
    if not quiet:
        eprint(f"report: {index}")


def _describe(path: str | None, dtype: str | None, quant: str, adapter: str | None) -> str:
    parts = [path or "embedded Gemma 3 270M"]
    parts += [f"dtype={dtype}"] if dtype else []
    parts += [f"quant={quant}"] if quant != "auto" else []
    parts += [f"adapter={adapter}"] if adapter else []
    return ", ".join(parts)


def _write_json(path: Path, doc: dict) -> None:
    """Write JSON through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=2, default=str))


@app.command()
@cli_errors
def safety(
    prompts: Path = typer.Option(..., help="Prompt set: JSONL with 'prompt', or one per line."),  # noqa: B008
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the HTML report."),  # noqa: B008
    model: str = typer.Option(
        None, "--model", "-m", help="The model answering (" + MODEL_HELP + ")"
    ),
    guard_model: str = typer.Option(None, help="The policy classifier; default: the model."),
    policy: list[str] = typer.Option(None, help="Policy name or JSON file (repeatable)."),  # noqa: B008
    threshold: float = typer.Option(0.5, help="P(violation) at or above which a text counts."),
    max_tokens: int = typer.Option(128, help="Most tokens per response."),
    chat: bool = typer.Option(True, help="Send prompts in the Gemma chat template."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Answer a prompt set, classify prompts and responses per policy, write an HTML report."""
    from opengemma.safety.guard import Guard
    from opengemma.safety.safety_report import load_prompt_set, run_safety_eval, write_report

    items = load_prompt_set(prompts)
    guard = Guard.load(guard_model or model, policy or None, threshold)
    if guard.note:
        eprint(f"opengemma eval safety: {guard.note}")
    lm = _load(model, None, quiet)
    records = run_safety_eval(lm, guard, items, max_tokens=max_tokens, chat=chat)
    index = write_report(records, guard, output, meta={"model": model or "embedded default"})
    print(index)


def _load(model, dtype, quiet: bool, quant: str = "auto", adapter=None):
    from opengemma.api import load

    return announce_loaded(load(model, dtype=dtype, quant=quant, adapter=adapter), quiet)
