"""`opengemma tune`: LoRA / QLoRA fine-tuning; run it under torchrun to shard with FSDP."""

from __future__ import annotations

import typer

from opengemma.cli_support import MODEL_HELP, cli_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@cli_errors
def tune(
    data: str = typer.Option(
        ..., "--data", help="Training JSONL: prompt/completion, messages or text."
    ),
    out: str = typer.Option(..., "--out", help="Output directory (adapter, checkpoint, logs)."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    eval_path: str = typer.Option(None, "--eval", help="Held-out JSONL (default: split off data)."),
    eval_split: float = typer.Option(
        0.1, help="Fraction of --data held out when --eval is absent."
    ),
    rank: int = typer.Option(8, "--rank", "-r", help="LoRA rank."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (the update is scaled by alpha / rank)."),
    dropout: float = typer.Option(0.05, help="Dropout on the LoRA input while training."),
    targets: str = typer.Option("q,k,v,o,gate,up,down", help="Linears to adapt, or 'all'."),
    qlora: bool = typer.Option(False, "--qlora", help="Quantize the frozen base (QLoRA)."),
    qlora_bits: int = typer.Option(4, help="Bits of the quantized base: 4 or 8."),
    qlora_group_size: int = typer.Option(64, help="Input columns per int4 scale."),
    epochs: int = typer.Option(1, help="Passes over the training rows."),
    max_steps: int = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    lr: float = typer.Option(2e-4, help="Peak learning rate (AdamW)."),
    warmup_steps: int = typer.Option(None, help="Linear warmup steps (default: 5% of the run)."),
    weight_decay: float = typer.Option(0.0, help="AdamW weight decay."),
    batch: int = typer.Option(4, "--batch", help="Rows per micro-batch per process."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    max_len: int = typer.Option(512, "--max-len", help="Tokens per row (longer ones are cut)."),
    pack: bool = typer.Option(False, "--pack", help="Pack several examples per row."),
    max_grad_norm: float = typer.Option(1.0, help="Clip the gradient norm (0 = off)."),
    activation_checkpointing: bool = typer.Option(
        False, "--activation-checkpointing", help="Recompute activations in backward (less memory)."
    ),
    eval_every: int = typer.Option(0, help="Evaluate every N steps (0 = before and after)."),
    save_every: int = typer.Option(50, help="Checkpoint every N steps (0 = end/interrupt only)."),
    stop_after: int = typer.Option(None, help="Stop, checkpointed, after this step (resumable)."),
    seed: int = typer.Option(0, help="Seed of data order, adapter init and dropout."),
    scrub: bool = typer.Option(True, "--scrub/--no-scrub", help="Scrub personal data first."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run checkpointed in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option("float32", help="Dtype of the frozen base (adapters are float32)."),
) -> None:
    """Fine-tune a Gemma model with LoRA (or QLoRA); writes a PEFT adapter to --out."""
    from opengemma.lora import parse_targets
    from opengemma.tune.recipe import TrainConfig, main

    cfg = TrainConfig(
        data=data,
        out=out,
        model=model,
        eval=eval_path,
        eval_split=eval_split,
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        targets=parse_targets(targets),
        qlora=qlora,
        qlora_bits=qlora_bits,
        qlora_group_size=qlora_group_size,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        batch=batch,
        grad_accum=grad_accum,
        max_len=max_len,
        pack=pack,
        max_grad_norm=max_grad_norm,
        activation_checkpointing=activation_checkpointing,
        eval_every=eval_every,
        save_every=save_every,
        stop_after=stop_after,
        seed=seed,
        scrub=scrub,
        resume=resume,
        progress=progress,
        device=device,
        dtype=dtype,
    )
    main(cfg)
