"""Data-parallel training over several processes, launched by ``torchrun`` (Lesson 8).

Every process holds a full copy of the model, computes the gradients of its share of each
batch, and ``DistributedDataParallel`` averages them across processes during ``backward()``,
so every copy takes the same optimizer step. On one process all of this is a no-op.

>>> distributed_context()  # not launched by torchrun: one process
(0, 1)
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group when launched by ``torchrun``."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def wrap_ddp(model: nn.Module, world_size: int) -> nn.Module:
    """DDP broadcasts rank 0's weights at start and averages gradients during backward()."""
    return nn.parallel.DistributedDataParallel(model) if world_size > 1 else model


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient averaging on all but the last micro-batch: gradients just add up."""
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def all_reduce_sum(value: float, device: torch.device | str = "cpu") -> float:
    """The sum of ``value`` over all processes (``value`` itself on one process)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor(float(value), device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def shard(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's equal share of a batch (its rows ``rank::world_size`` as a block)."""
    per_process = len(tensor) // world_size
    return tensor[rank * per_process : (rank + 1) * per_process]


def finish() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
