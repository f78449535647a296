"""Training checkpoints: adapter + optimizer + scheduler + position, swapped in atomically.

`OUT/checkpoint/` holds the adapter in the PEFT format (usable as is), `trainer_state.pt`
(optimizer and scheduler state, read back with `weights_only=True`) and `state.json` (step,
data position, the run's settings). A new checkpoint is written to a temporary directory and
renamed into place, so an interruption leaves either the old checkpoint or the new one.

Randomness (LoRA dropout) is reseeded from (seed, rank, step) at the start of every step, so
the data order and the dropout masks after a resume are those of an uninterrupted run without
storing generator states.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from opengemma.lora import PEFT_PREFIX, WEIGHTS_NAME, LoRAConfig, save_adapter
from opengemma.tune.data import TuneDataError
from opengemma.tune.distributed import DistEnv, full_state, set_full_state

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TRAINER_FILE = "trainer_state.pt"
# settings that may change between an interrupted run and its resume
RESUMABLE_CHANGES = {"out", "resume", "progress", "stop_after", "save_every", "eval_every"}


def save_checkpoint(
    out: Path, write_adapter: Any, trainer: dict[str, Any], state: dict[str, Any]
) -> Path:
    """Write a checkpoint directory atomically; `write_adapter(dir)` writes the adapter files."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".checkpoint-"))
    try:
        tmp.chmod(0o755)
        write_adapter(tmp)
        torch.save(trainer, tmp / TRAINER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        final = out / CHECKPOINT_DIR
        old = out / ".checkpoint-old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(out: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(checkpoint dir, trainer state, state.json) of the run in `out`."""
    ckpt = out / CHECKPOINT_DIR
    if not (ckpt / STATE_FILE).is_file() or not (ckpt / TRAINER_FILE).is_file():
        old = out / ".checkpoint-old"
        if (old / STATE_FILE).is_file():  # interrupted between the two renames
            ckpt = old
        else:
            raise TuneDataError(
                f"--resume: no checkpoint in {out}; start without --resume, or point --out at "
                "the directory of the interrupted run"
            )
    state = json.loads((ckpt / STATE_FILE).read_text())
    trainer = torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
    return ckpt, trainer, state


def check_same_run(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resume must continue the same run: every trajectory-shaping setting must match."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    ]
    if diffs:
        raise TuneDataError(
            "--resume with different settings would not continue the same run; "
            "use the original options or start a new --out. Differences: " + "; ".join(diffs)
        )


def save_training(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    lora: LoRAConfig,
    settings: dict[str, Any],
    step: int,
    env: DistEnv,
) -> None:
    """Checkpoint after optimizer step `step` (collective under FSDP; rank 0 writes)."""
    model_state, optim_state = full_state(model, optimizer)
    if not env.is_main:
        return
    adapter = {PEFT_PREFIX + k: v.contiguous() for k, v in model_state.items()}
    trainer = {"optimizer": optim_state, "scheduler": scheduler.state_dict()}
    state = {"step": step, "settings": settings}
    base = settings.get("model")
    save_checkpoint(out, lambda d: save_adapter(model, lora, d, base, adapter), trainer, state)


def resume_training(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    settings: dict[str, Any],
    env: DistEnv,
) -> tuple[int, Path]:
    """Load the checkpoint in `out`; returns (the step to run next, the checkpoint dir)."""
    ckpt, trainer, state = load_checkpoint(out)
    check_same_run(state["settings"], settings)
    adapter = load_file(str(ckpt / WEIGHTS_NAME))
    model_state = {k.removeprefix(PEFT_PREFIX): v for k, v in adapter.items()}
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(model_state) != expected:
        raise TuneDataError(f"{ckpt}: the checkpoint's adapter does not fit this model")
    set_full_state(model, optimizer, model_state, trainer["optimizer"], env)
    scheduler.load_state_dict(trainer["scheduler"])
    return int(state["step"]), ckpt


def export_adapter(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lora: LoRAConfig,
    base_model: str | None,
    env: DistEnv,
) -> None:
    """The trained adapter, PEFT format, straight into `out` (collective under FSDP)."""
    model_state, _ = full_state(model, optimizer)
    if env.is_main:
        adapter = {PEFT_PREFIX + k: v.contiguous() for k, v in model_state.items()}
        save_adapter(model, lora, out, base_model, adapter)
