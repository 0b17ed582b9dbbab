"""Tiny GPTs, their data and a short training recipe, shared by the tests."""

from __future__ import annotations

import dataclasses

import torch

from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.train import TrainConfig, TrainResult

GPT_CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
RUN = TrainConfig(
    block_size=8,
    batch_size=8,
    max_steps=20,
    learning_rate=3e-3,
    eval_interval=5,
    eval_batches=2,
    schedule="cosine",
    warmup_steps=3,
    weight_decay=0.1,
)


def data(n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.arange(n) * 3 + torch.randint(0, 2, (n,), generator=g)) % 11


def fresh_model(config: GPTConfig = GPT_CONFIG) -> GPT:
    torch.manual_seed(0)
    return GPT(config)


def losses(result: TrainResult) -> list[tuple]:
    """The logged numbers of a run that do not depend on the clock."""
    return [
        (h["step"], h["lr"], h["train_loss"], h["val_loss"], h["grad_norm"]) for h in result.history
    ]


#: A small GPT with peaked (init_std 0.2) weights, for the model and generation tests.
SMALL = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, init_std=0.2)


def small_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(SMALL, **overrides)).eval()


def ids(B: int, T: int, vocab: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))
