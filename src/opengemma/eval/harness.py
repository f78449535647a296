"""`opengemma eval tasks`: lm-evaluation-harness tasks on a loaded model, offline.

Datasets are read from local files (task YAMLs with ``dataset_path: json``) or from the
Hugging Face datasets cache; nothing is downloaded (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are
set unless the caller set them). A task whose dataset is not available locally fails with a
message that names the dataset and how to provide it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opengemma.eval import EvalError


class MissingDatasetError(EvalError):
    """A task's dataset is neither a local file nor in the datasets cache."""


def _offline() -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _task_manager(include_path: str | Path | None, builtin: bool):
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise EvalError(f"--include-path {include_path} is not a folder of task YAMLs")
    if include_path is None and not builtin:
        raise EvalError("no tasks to choose from: pass --include-path or keep the built-in tasks")
    return TaskManager(
        include_path=None if include_path is None else str(include_path), include_defaults=builtin
    )


def _dataset_of(manager, task: str) -> str:
    """'dataset NAME (config C)' from the task's YAML, as lm-eval indexed it."""
    try:
        cfg = manager._index[task].cfg or {}
    except (AttributeError, KeyError, TypeError):  # a best-effort hint only
        return "its dataset"
    name = cfg.get("dataset_name")
    return f"dataset {cfg.get('dataset_path')!r}" + (f" (config {name!r})" if name else "")


def _culprit(manager, tasks: Sequence[str], detail: str) -> tuple[str, str]:
    """The task whose dataset the error names (else the first task), and that dataset."""
    for task in tasks:
        dataset = _dataset_of(manager, task)
        if dataset.split("'")[1:2] and dataset.split("'")[1] in detail:
            return task, dataset
    return tasks[0], _dataset_of(manager, tasks[0])


def missing_dataset_message(task: str, dataset: str, detail: str) -> str:
    return (
        f"task {task!r} needs {dataset}, which is not available offline ({detail}). Provide it "
        "one of two ways: fetch it once where there is network with "
        "`python -c \"import datasets; datasets.load_dataset('NAME')\"` and copy "
        "~/.cache/huggingface/datasets here; or write a task YAML with `dataset_path: json` and "
        "`dataset_kwargs: {data_files: {test: FILE.jsonl}}` and pass its folder with --include-path"
    )


def run_tasks(
    lm,
    tasks: Sequence[str],
    limit: float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    include_path: str | Path | None = None,
    builtin: bool = True,
    chat: bool = False,
    name: str = "model",
) -> dict[str, Any]:
    """Evaluate `lm` (an opengemma LM) on lm-eval `tasks`; returns lm-eval's results, samples
    left out, with the model's name under "model"."""
    if not tasks:
        raise EvalError("no task given: pass --tasks NAME[,NAME...]")
    _offline()
    import lm_eval

    from opengemma.eval.lm_eval_backend import OpenGemmaEvalLM

    manager = _task_manager(include_path, builtin)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise EvalError(
            f"unknown task(s) {', '.join(unknown)}; list them with `lm-eval ls tasks`"
            " or add their YAMLs with --include-path"
        )
    model = OpenGemmaEvalLM(lm=lm, batch_size=batch_size, pretrained=name)
    try:
        out = lm_eval.simple_evaluate(
            model=model,
            tasks=list(tasks),
            limit=limit,
            num_fewshot=num_fewshot,
            task_manager=manager,
            apply_chat_template=chat,
            log_samples=False,
        )
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        task, dataset = _culprit(manager, tasks, str(exc))
        raise MissingDatasetError(missing_dataset_message(task, dataset, str(exc)[:200])) from None
    keep = ("results", "groups", "versions", "n-shot", "higher_is_better", "n-samples")
    doc = {k: out[k] for k in keep if k in out}
    doc["model"] = name
    return doc
