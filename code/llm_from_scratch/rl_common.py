"""What the reinforcement-learning methods of Lesson 10 share: masked means, config checks.

>>> import torch
>>> masked_mean(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[True, True, False]]))
tensor(1.5000)
"""

from __future__ import annotations

import math

import torch

from llm_from_scratch.train import check_number as _check


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the entries ``mask`` marks."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` shifted and scaled to mean 0 and variance 1 over the masked entries.

    Whitened advantages make one learning rate fit every batch, whatever the rewards' scale.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def check_number(owner: str, name: str, value: object, low: float, high: float = math.inf,
                 *, integer: bool = False, low_open: bool = False) -> None:
    """:func:`~llm_from_scratch.train.check_number`, the error naming ``owner.name``."""
    _check(f"{owner}.{name}", value, low, high, low_open=low_open, integer=integer)
