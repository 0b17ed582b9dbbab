"""Tests for llm_from_scratch.distributed on one process, where every helper is a no-op.

Two real processes under ``torchrun`` are tested in test_cli.py: they must reach the loss of
one process.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from llm_from_scratch.distributed import (
    all_reduce_sum,
    distributed_context,
    finish,
    no_sync,
    shard,
    wrap_ddp,
)


def test_one_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed_context() == (0, 1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: no process group
    assert distributed_context() == (0, 1)
    assert not torch.distributed.is_initialized()


def test_single_process_helpers_change_nothing():
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, world_size=1) is model
    assert isinstance(no_sync(model, sync=False), contextlib.nullcontext)
    assert all_reduce_sum(2.5) == 2.5
    finish()  # no process group to leave


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_shards_split_a_batch_into_equal_disjoint_blocks(world_size):
    batch = torch.arange(8)
    shards = [shard(batch, rank, world_size) for rank in range(world_size)]
    assert all(len(s) == 8 // world_size for s in shards)
    assert torch.equal(torch.cat(shards), batch)
