"""A progress bar on stderr: done/total, items per second and time left (rich)."""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool, unit: str = "records") -> Any:
    """A `rich.progress.Progress` whose tasks show `unit`/s and an ETA; a no-op when disabled."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-" if speed is None else f"{speed:,.1f} {unit}/s")

    return Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), Rate(),
        TimeElapsedColumn(), "eta", TimeRemainingColumn(), console=Console(stderr=True),
        disable=not enabled, transient=True,
    )  # fmt: skip
