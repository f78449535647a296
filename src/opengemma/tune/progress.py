"""A rich progress bar for training: step, loss, tokens/s and ETA, on stderr."""

from __future__ import annotations

from typing import Any


class TrainProgress:
    """Context manager; `advance(entry)` after each optimizer step (entry: the log record)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done
        self._progress: Any = None

    def __enter__(self) -> TrainProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]tune"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            "tune", total=self.total, completed=self.done, loss="-", tps="-"
        )
        return self

    def advance(self, entry: dict[str, Any]) -> None:
        if self._progress is None:
            return
        tps = entry["tokens"] / max(entry["seconds"], 1e-9)
        self._progress.update(self._task, advance=1, loss=f"{entry['loss']:.4f}", tps=f"{tps:,.0f}")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
