"""What a run leaves behind and tells: messages (stderr + `run.log`), the step log
(`train_log.jsonl`), the loss-curve PNG, and a Ctrl-C that stops at a step boundary.

Only rank 0 writes; every rank keeps the entries, so results are the same on all of them.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from opengemma.tune.distributed import DistEnv, all_sum

LOG_FILE, RUN_LOG, PLOT_FILE = "train_log.jsonl", "run.log", "loss.png"


class RunLog:
    def __init__(self, out: Path, env: DistEnv) -> None:
        self.out, self.env = out, env
        self.entries: list[dict[str, Any]] = []

    def say(self, msg: str) -> None:
        """A line on stderr and in `run.log` (rank 0)."""
        if self.env.is_main:
            print(f"tune: {msg}", file=sys.stderr, flush=True)
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / RUN_LOG).open("a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one step (loss, lr, ...) or evaluation (eval_loss, eval_ppl) entry."""
        self.entries.append(entry)
        if self.env.is_main:
            with (self.out / LOG_FILE).open("a") as f:
                f.write(json.dumps(entry) + "\n")
        if "eval_loss" in entry:
            self.say(
                f"eval at step {entry['step']}: loss {entry['eval_loss']:.4f} "
                f"ppl {entry['eval_ppl']:.2f}"
            )
        return entry

    def start_fresh(self) -> int:
        """A new run: empty step log. Returns the first step (0)."""
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / LOG_FILE).write_text("")
        return 0

    def truncate(self, step: int) -> None:
        """Drop log lines past `step` (written after the checkpoint a run resumes from)."""
        path = self.out / LOG_FILE
        if not self.env.is_main or not path.is_file():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln]
        keep = [ln for ln in lines if json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def plot(self) -> None:
        """`loss.png` from the whole step log (earlier invocations of a resumed run included)."""
        if not self.env.is_main:
            return
        from opengemma.tune.plot import plot_losses

        lines = (self.out / LOG_FILE).read_text().splitlines()
        entries = [json.loads(ln) for ln in lines if ln]
        train = [(e["step"], e["loss"]) for e in entries if "loss" in e]
        evals = [(e["step"], e["eval_loss"]) for e in entries if "eval_loss" in e]
        plot_losses(self.out / PLOT_FILE, train, evals)


class StopFlag:
    """Ctrl-C during training asks for a checkpoint at the end of the current step."""

    def __init__(self) -> None:
        self.flag = False
        self.previous: Any = None

    def __enter__(self) -> StopFlag:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self.previous = None
        return self

    def __exit__(self, *_: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, *_: Any) -> None:
        if self.flag:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.flag = True
        print("\ntune: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    def requested(self, env: DistEnv) -> bool:
        """True on every rank once any rank was interrupted (so all stop at the same step)."""
        return bool(all_sum(torch.tensor(float(self.flag)), env) > 0)
