"""One process or many: process group, FSDP sharding, and full adapter/optimizer state.

Under `torchrun` (WORLD_SIZE > 1) the decoder is sharded with PyTorch's FSDP (`fully_shard`,
one unit per block, then the root): each rank keeps 1/N of every weight and gathers a block
just before using it. Gradients of the adapters are reduce-scattered across ranks. The same
code runs single-process, where every call here is a no-op or a local operation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank among world processes, and its compute device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1


def setup(device: str) -> DistEnv:
    """Join the process group when launched by torchrun; gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank()
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return DistEnv(rank=rank, world=dist.get_world_size(), device=dev)


def teardown(env: DistEnv) -> None:
    if env.sharded and dist.is_initialized():
        dist.destroy_process_group()


def shard(model: nn.Module, env: DistEnv) -> nn.Module:
    """FSDP-shard the decoder (one unit per block, then the root); identity when single."""
    if not env.sharded:
        return model
    from torch.distributed.fsdp import fully_shard

    for layer in model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def all_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of a tensor over every rank (the tensor itself when single)."""
    if env.sharded:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Trainable weights and optimizer state as full CPU tensors keyed by parameter name.

    Collective under FSDP: every rank calls it; only rank 0 gets the tensors.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_state_dict(model, optimizer, options=opts)


def set_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict,
    optim_state: dict,
    env: DistEnv,
) -> None:
    """Load `full_state` output (read by rank 0, or by every rank) into a maybe-sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=env.sharded)
    set_state_dict(
        model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=opts
    )


def to_float(value: Any) -> float:
    """A Python float from a tensor or DTensor (e.g. a clipped gradient norm)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)
