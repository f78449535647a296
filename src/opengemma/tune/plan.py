"""Which examples each optimizer step, micro-batch and rank sees: a pure function of the step.

A step consumes a global batch of `batch * grad_accum * world` rows. Rows are visited in a
permutation drawn from (seed, epoch); the last step of an epoch wraps around to the epoch's
first rows, so every step is full and every rank runs the same number of forwards (FSDP
needs that). Because the plan depends only on the step number, resuming at step k sees the
data an uninterrupted run would have seen, and N processes with batch B/N see exactly the
rows of one process with batch B.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from opengemma.tune.data import Example, TuneDataError


@dataclass
class Plan:
    rows: list[Example]
    batch: int  # rows per micro-batch per process
    grad_accum: int  # micro-batches per optimizer step
    world: int  # processes
    seed: int
    epochs: int
    max_steps: int | None = None  # overrides epochs when set
    _orders: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise TuneDataError("--batch, --grad-accum and --epochs must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise TuneDataError("--max-steps must be at least 1")

    @property
    def global_batch(self) -> int:
        return self.batch * self.grad_accum * self.world

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.rows) / self.global_batch)

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.rows), generator=g).tolist()}
        return self._orders[epoch]

    def step_rows(self, step: int) -> list[Example]:
        """The global batch of optimizer step `step` (0-based), all ranks together."""
        order = self._order(self.epoch_of(step))
        start = (step % self.steps_per_epoch) * self.global_batch
        n = len(self.rows)
        return [self.rows[order[(start + j) % n]] for j in range(self.global_batch)]

    def micro_batches(self, step: int, rank: int) -> Iterator[list[Example]]:
        """This rank's `grad_accum` micro-batches of `batch` rows for the step."""
        rows = self.step_rows(step)
        for m in range(self.grad_accum):
            start = (m * self.world + rank) * self.batch
            yield rows[start : start + self.batch]

    def step_targets(self, step: int) -> int:
        """Target tokens in the whole global batch: the loss of a step is a mean over them."""
        return sum(r.n_targets for r in self.step_rows(step))

    def step_tokens(self, step: int) -> int:
        return sum(len(r.ids) for r in self.step_rows(step))
