"""What the reinforcement-learning methods of Lesson 10 share: the policy-update loop, masked
means, config checks.

PPO and GRPO alternate between sampling a batch from the policy and a few optimizer steps on
it. :func:`policy_loop` runs that alternation with what :func:`~llm_from_scratch.train.train`
gives every other training run: mixed precision where the hardware has it, CPU threads that
follow the machine's load, a progress bar, and Ctrl-C that stops between steps.

>>> import torch
>>> masked_mean(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[True, True, False]]))
tensor(1.5000)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from llm_from_scratch import runtime
from llm_from_scratch.train import check_number as _check

Batch = TypeVar("Batch")


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


class LoopConfig(Protocol):
    """The settings :func:`policy_loop` reads (``PPOConfig`` and ``GRPOConfig`` have them)."""

    steps: int
    learning_rate: float
    grad_clip: float


class Learner:
    """The optimizer side of a policy update: forward passes under ``precision()``, then
    ``step(loss)``, one clipped AdamW step.

    >>> layer = torch.nn.Linear(2, 1)
    >>> learner = Learner(layer.parameters(), learning_rate=0.1, grad_clip=1.0)
    >>> with learner.precision():
    ...     loss = layer(torch.ones(1, 2)).square().sum()
    >>> learner.step(loss)
    """

    def __init__(self, params: Iterable[nn.Parameter], learning_rate: float, grad_clip: float,
                 rt: runtime.Runtime | None = None) -> None:
        self.params = list(params)
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=0.0)
        self.grad_clip = grad_clip
        self.rt = rt or runtime.Runtime(torch.device("cpu"), "float32")

    def precision(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward passes (a no-op in float32); backward runs outside it."""
        return self.rt.precision()

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step down ``loss``; ``FloatingPointError``, before any weight changes,
        if the loss is not finite (as in :func:`~llm_from_scratch.train.train_step`)."""
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the training loss became {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()


def policy_loop(
    models: Sequence[nn.Module], config: LoopConfig, make_batch: Callable[[int], Batch],
    update: Callable[[Batch, Learner], dict[str, float]], *, description: str,
    progress: bool = True,
) -> tuple[list[dict[str, float]], float]:
    """``config.steps`` times: ``make_batch(step)`` without gradients, then
    ``update(batch, learner)``, which trains ``models``' parameters through the :class:`Learner`.

    Precision (bfloat16 autocast where the hardware multiplies it fast), CPU threads and Ctrl-C
    are handled as :func:`~llm_from_scratch.train.train` handles them: Ctrl-C ends the run after
    the current step, never inside one, by raising ``KeyboardInterrupt``. Returns one row per
    step, ``{"step": step, **update(batch, learner)}``, and the seconds taken.

    >>> layer = torch.nn.Linear(1, 1)
    >>> def update(x, learner):
    ...     with learner.precision():
    ...         loss = (layer(x) - 1).square().mean()
    ...     learner.step(loss)
    ...     return {"loss": loss.item()}
    >>> from types import SimpleNamespace
    >>> config = SimpleNamespace(steps=3, learning_rate=0.1, grad_clip=1.0)
    >>> history, _ = policy_loop([layer], config, lambda step: torch.ones(4, 1), update,
    ...                          description="demo", progress=False)
    >>> [row["step"] for row in history]
    [0, 1, 2]
    """
    device = next(models[0].parameters()).device
    rt = runtime.Runtime(device, runtime.resolve_dtype("auto", device.type))
    learner = Learner([p for m in models for p in m.parameters()], config.learning_rate,
                      config.grad_clip, rt)
    history, start = [], time.perf_counter()
    bar = tqdm(range(config.steps), desc=description, disable=not progress, mininterval=1.0)
    with bar, runtime.stop_requests() as stop:
        for step in bar:
            with torch.no_grad(), learner.precision():
                batch = make_batch(step)
            row = {"step": step, **update(batch, learner)}
            history.append(row)
            if "reward" in row:
                bar.set_postfix(reward=f"{row['reward']:.3f}")
            rt.fit_threads()  # another program may have taken a core since the last look
            if stop.is_set():
                raise KeyboardInterrupt
    return history, time.perf_counter() - start
