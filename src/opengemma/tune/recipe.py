"""The fine-tuning recipe: `main(TrainConfig)` reads top to bottom.

load model -> (quantize base) -> wrap linears with LoRA -> shard (FSDP under torchrun) ->
data (scrub, encode, split, pack) -> AdamW + warmup/cosine -> resume? -> loop of optimizer
steps (grad accumulation, clipping, checkpoints, eval) -> adapter in the PEFT format,
training log and loss-curve PNG in the output directory.

The loss of a step is the mean negative log-likelihood over every target token of its global
batch (all micro-batches of all processes), so it does not depend on how the batch is split.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from opengemma.lora import ALL_TARGETS, LoRAConfig, apply_lora, trainable_parameters
from opengemma.tune import data as tdata
from opengemma.tune.distributed import DistEnv, all_sum, setup, shard, teardown, to_float
from opengemma.tune.plan import Plan
from opengemma.tune.progress import TrainProgress
from opengemma.tune.runlog import RunLog, StopFlag
from opengemma.tune.state import CHECKPOINT_DIR, export_adapter, resume_training, save_training


@dataclass
class TrainConfig:
    """Every option of `opengemma tune` (sizes in tokens/rows, rates per optimizer step)."""

    data: str  # training JSONL
    out: str  # output directory: adapter, checkpoint, logs, loss.png
    model: str | None = None  # .gguf / HF dir; None = the embedded Gemma 3 270M
    eval: str | None = None  # held-out JSONL; else `eval_split` of the training records
    eval_split: float = 0.1
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ALL_TARGETS
    qlora: bool = False  # quantize the frozen base (int4/int8) and train LoRA over it
    qlora_bits: int = 4
    qlora_group_size: int = 64
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs
    lr: float = 2e-4
    warmup_steps: int | None = None  # None: 5% of the steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    batch: int = 4  # rows per micro-batch per process
    grad_accum: int = 1
    max_len: int = 512
    pack: bool = False
    max_grad_norm: float = 1.0  # 0 disables clipping
    activation_checkpointing: bool = False
    eval_every: int = 0  # steps; 0 = before and after training only
    save_every: int = 50  # steps; 0 = only at the end or on interrupt
    seed: int = 0
    scrub: bool = True
    resume: bool = False
    stop_after: int | None = None  # stop (checkpointed) after this step; the schedule is unchanged
    progress: bool = True
    device: str = "cpu"
    dtype: str = "float32"

    def lora(self) -> LoRAConfig:
        return LoRAConfig(self.rank, self.alpha, self.dropout, tuple(self.targets))


@dataclass
class TrainResult:
    out: Path
    steps: int  # optimizer steps done (in total, counting before a resume)
    total_steps: int
    seconds: float  # wall time of this invocation's loop
    train_loss: float | None  # loss of the last step
    eval_loss: float | None
    eval_loss_before: float | None
    interrupted: bool
    log: list[dict[str, Any]] = field(default_factory=list)  # this invocation's entries

    @classmethod
    def from_log(cls, run: RunLog, steps: int, total: int, seconds: float) -> TrainResult:
        losses = [e["loss"] for e in run.entries if "loss" in e]
        evals = [e for e in run.entries if "eval_loss" in e]
        before = evals[0]["eval_loss"] if evals and evals[0]["step"] == 0 else None
        after = evals[-1]["eval_loss"] if evals and steps >= total else None
        return cls(
            run.out,
            steps,
            total,
            seconds,
            losses[-1] if losses else None,
            after,
            before,
            steps < total,
            list(run.entries),
        )


def main(cfg: TrainConfig, lm: Any = None) -> TrainResult:
    """Fine-tune and write the adapter to `cfg.out`. A given `lm` (an `opengemma.LM`) is
    modified in place: it comes back carrying the trained adapters, ready to generate."""
    env = setup(cfg.device)
    run = RunLog(Path(cfg.out), env)
    try:
        # 1. Model: frozen base (maybe quantized) + LoRA adapters, FSDP-sharded under torchrun.
        check_inputs(cfg)
        lm = lm if lm is not None else load_model(cfg, env, run)
        model = prepare_model(lm.model, cfg, env, run)

        # 2. Data: scrub, split, encode, pack; the plan maps each step to its rows.
        train_rows, eval_rows = prepare_data(cfg, lm.tokenizer, run.say)
        plan = Plan(
            train_rows, cfg.batch, cfg.grad_accum, env.world, cfg.seed, cfg.epochs, cfg.max_steps
        )
        total = plan.total_steps
        run.say(
            f"{len(train_rows)} training rows, {len(eval_rows)} eval rows; {total}"
            f" steps of {plan.global_batch} rows ({env.world} process(es))"
        )

        # 3. Optimizer (AdamW on the adapters only) and schedule (warmup, then cosine).
        params, optimizer, scheduler = make_optimizer(model, cfg, total)

        # 4. A fresh run, or the continuation of the one checkpointed in `out`.
        settings = run_settings(cfg, env)
        start = resume(run, model, optimizer, scheduler, settings) if cfg.resume else fresh(run)
        pad = lm.tokenizer.pad_id
        evaluate_now = functools.partial(evaluate, model, eval_rows, cfg.batch, env, pad)
        if eval_rows and start == 0:
            run.record({"step": 0, **evaluate_now()})

        # 5. The loop: one optimizer step per iteration, over `grad_accum` micro-batches.
        last, t0 = start, time.perf_counter()
        with (
            StopFlag() as stop,
            TrainProgress(cfg.progress and env.is_main, total, start) as bar,
        ):
            for step in range(start, total):
                torch.manual_seed(cfg.seed * 1_000_003 + env.rank * 7_919 + step)  # dropout
                t_step = time.perf_counter()
                loss = train_step(model, plan, step, env, pad)
                norm = clip_gradients(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                last = step + 1
                dt = time.perf_counter() - t_step
                entry = {"step": last, "epoch": plan.epoch_of(step), "loss": loss, "lr":
                         optimizer.param_groups[0]["lr"], "grad_norm": norm,
                         "tokens": plan.step_tokens(step), "seconds": dt}  # fmt: skip
                bar.advance(run.record(entry))
                if eval_rows and cfg.eval_every and last % cfg.eval_every == 0 and last < total:
                    run.record({"step": last, **evaluate_now()})
                halt = stop.requested(env) or (cfg.stop_after or total) <= last
                if halt or (cfg.save_every and last % cfg.save_every == 0):
                    save_training(
                        run.out, model, optimizer, scheduler, cfg.lora(), settings, last, env
                    )
                if halt:
                    break
        seconds = time.perf_counter() - t0

        # 6. Results: final eval, the adapter in the PEFT format, the loss curve.
        done = last >= total
        if done and eval_rows:
            run.record({"step": last, **evaluate_now()})
        if done:
            export_adapter(run.out, model, optimizer, cfg.lora(), cfg.model, env)
            run.say(f"adapter written to {run.out} ({last} steps, {seconds:.1f}s)")
        else:
            run.say(f"stopped after step {last} of {total}; continue with --resume")
        run.plot()
        model.eval()
        return TrainResult.from_log(run, last, total, seconds)
    finally:
        teardown(env)


def make_optimizer(model: nn.Module, cfg: TrainConfig, total: int) -> tuple[list, Any, Any]:
    """AdamW over the trainable (adapter) parameters and its schedule: linear warmup (5% of the
    steps unless `warmup_steps` says), then cosine down to `min_lr_ratio`."""
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(0.05 * total)
    schedule = functools.partial(lr_factor, warmup=warmup, total=total, min_ratio=cfg.min_lr_ratio)
    return params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train_step(model: nn.Module, plan: Plan, step: int, env: DistEnv, pad_id: int) -> float:
    """Forward/backward over this rank's micro-batches; returns the step's global mean loss.

    Each micro-batch contributes sum(token NLL) / (target tokens of the global batch), times
    `world` because FSDP averages gradients over ranks: the summed gradient is that of the
    global mean.
    """
    n_targets = plan.step_targets(step)
    total = torch.zeros((), dtype=torch.float64)
    for rows in plan.micro_batches(step, env.rank):
        ids, mask = (t.to(env.device) for t in tdata.collate(rows, pad_id))
        nll = token_nll_sum(model(ids), ids, mask)  # scalar
        (nll * (env.world / n_targets)).backward()
        total += nll.detach().double().cpu()
    return float(all_sum(total, env)) / n_targets


def token_nll_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of -log p(ids[t] | ids[<t]) over target positions; logits (B, T, V), ids/mask (B, T)."""
    targets = mask[:, 1:] > 0  # (B, T-1): token t+1 predicted at position t
    picked = logits[:, :-1][targets]  # (N, V): only the positions that carry loss
    weights = mask[:, 1:][targets]  # (N,)
    if picked.numel() == 0:
        return logits.sum() * 0.0
    nll = F.cross_entropy(picked.float(), ids[:, 1:][targets], reduction="none")
    return (nll * weights).sum()


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (across ranks under FSDP); returns the norm before."""
    if max_norm > 0:
        return to_float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    return to_float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(
    model: nn.Module, rows: list[tdata.Example], batch: int, env: DistEnv, pad_id: int
) -> dict[str, float]:
    """Mean NLL per target token and perplexity over `rows` (shared out across ranks)."""
    model.eval()
    per = batch * env.world
    nll = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for g in range(math.ceil(len(rows) / per)):
        chunk = rows[g * per + env.rank * batch : g * per + (env.rank + 1) * batch]
        weight = 1.0 if chunk else 0.0  # a rank short of rows still runs a forward (FSDP)
        ids, mask = tdata.collate(chunk or rows[:1], pad_id)
        ids, mask = ids.to(env.device), mask.to(env.device) * weight
        nll += token_nll_sum(model(ids), ids, mask).double().cpu()
        count += mask[:, 1:].sum().double().cpu()
    model.train()
    loss = float(all_sum(nll, env) / all_sum(count, env))
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward instead of keeping them (less memory,
    about one more forward of compute). Module names are unchanged."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.layers:
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)


def prepare_data(
    cfg: TrainConfig, tokenizer: Any, log: Callable[[str], None]
) -> tuple[list[tdata.Example], list[tdata.Example]]:
    """Records -> (train rows, eval rows): scrubbed unless --no-scrub, split, encoded, packed."""
    records = tdata.read_jsonl(cfg.data)
    eval_records = tdata.read_jsonl(cfg.eval) if cfg.eval else []
    if not cfg.eval:
        records, eval_records = tdata.split_eval(records, cfg.eval_split, cfg.seed)
    if cfg.scrub:
        records = tdata.scrub_records(records, log)
    else:
        log("scrubbing OFF (--no-scrub): training data is used as given")
    train, stats = tdata.build_examples(tokenizer, records, cfg.max_len, cfg.data)
    if stats.truncated or stats.dropped_empty:
        log(
            f"{stats.truncated} records truncated to {cfg.max_len} tokens, "
            f"{stats.dropped_empty} dropped (no target token left)"
        )
    evals = tdata.build_examples(tokenizer, eval_records, cfg.max_len)[0] if eval_records else []
    if cfg.pack:
        train = tdata.pack(train, cfg.max_len)
    return train, evals


def check_inputs(cfg: TrainConfig) -> None:
    """Fail on a wrong data path before the model loads."""
    for path in (cfg.data, cfg.eval):
        if path is not None and not Path(path).is_file():
            raise tdata.TuneDataError(f"data file {path} not found; pass a JSONL file of records")


def load_model(cfg: TrainConfig, env: DistEnv, run: RunLog) -> Any:
    from opengemma.api import load

    t = time.perf_counter()
    lm = load(cfg.model, dtype=cfg.dtype, device=env.device, quant="none")
    run.say(f"loaded {cfg.model or 'the embedded model'} in {time.perf_counter() - t:.1f}s")
    return lm


def prepare_model(model: nn.Module, cfg: TrainConfig, env: DistEnv, run: RunLog) -> nn.Module:
    """Quantize the base (QLoRA), wrap the target linears, checkpoint activations, shard."""
    from opengemma.tune.qlora_base import check_differentiable, quantize_base

    check_differentiable(model)
    if cfg.qlora:
        n = quantize_base(model, cfg.qlora_bits, cfg.qlora_group_size)
        run.say(f"QLoRA: {n} base linears quantized to int{cfg.qlora_bits} (frozen)")
    torch.manual_seed(cfg.seed)  # the same adapter init on every rank
    wrapped = apply_lora(model, cfg.lora())
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    model = shard(model, env).train()
    n = sum(p.numel() for p in trainable_parameters(model))
    run.say(f"LoRA r={cfg.rank} alpha={cfg.alpha} on {len(wrapped)} linears: {n:,} trainable")
    return model


def run_settings(cfg: TrainConfig, env: DistEnv) -> dict[str, Any]:
    """The run's settings as JSON values (stored in checkpoints, compared on resume)."""
    settings = dataclasses.asdict(cfg)
    settings["targets"] = list(cfg.targets)
    settings["world"] = env.world
    return json.loads(json.dumps(settings))


def fresh(run: RunLog) -> int:
    if (run.out / CHECKPOINT_DIR).exists():
        raise tdata.TuneDataError(
            f"{run.out} already holds a training checkpoint; add --resume to continue that run, "
            "or choose another --out"
        )
    return run.start_fresh()


def resume(
    run: RunLog,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    settings: dict[str, Any],
) -> int:
    step, ckpt = resume_training(run.out, model, optimizer, scheduler, settings, run.env)
    run.truncate(step)
    run.say(f"resumed from {ckpt} at step {step}")
    return step
