"""Optimisation for Lesson 8: AdamW from scratch, weight-decay groups, the learning-rate schedule.

:class:`AdamW` is the algorithm of Loshchilov & Hutter (2019) written out in a dozen lines; it
equals ``torch.optim.AdamW`` step for step (the book's tests run both for 100 steps). The
training pipeline can use either: PyTorch's fused kernel does the same arithmetic in one call,
which is faster for small models whose per-tensor overhead dominates.

>>> import torch
>>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
>>> opt = AdamW([w], lr=0.1, weight_decay=0.0)
>>> (w ** 2).sum().backward()
>>> opt.step()  # Adam's first step moves every weight by about lr, against its gradient
>>> [round(x, 6) for x in w.detach().tolist()]
[0.9, -1.9]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay: ``torch.optim.AdamW``'s algorithm, written out.

    For each parameter ``p`` with gradient ``g`` at step ``t``::

        p  ← p − lr·λ·p                      decoupled weight decay (the "W")
        m  ← β₁·m + (1 − β₁)·g               running mean of gradients (momentum)
        v  ← β₂·v + (1 − β₂)·g²              running mean of squared gradients
        m̂, v̂ = m / (1 − β₁ᵗ), v / (1 − β₂ᵗ)  bias correction: m and v start at zero
        p  ← p − lr · m̂ / (√v̂ + ε)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(
                f"need lr > 0, eps > 0, weight_decay >= 0; got {lr}, {eps}, {weight_decay}"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - the torch.optim.Optimizer signature
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # lazily, so the state matches the parameter's device and dtype
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1 - lr * group["weight_decay"])
                m.lerp_(g, 1 - beta1)  # m + (1 - β₁)(g − m) = β₁m + (1 − β₁)g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # p -= lr · m̂ / (√v̂ + ε), with m̂ = m / (1 − β₁ᵗ) and √v̂ = √v / √(1 − β₂ᵗ),
                # in the order PyTorch computes it, so that the two agree to the last bit.
                step_size = lr / (1 - beta1**t)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-step_size)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weight matrices decay, everything else does not.

    Weight decay pulls weights toward zero, which regularises the matrices that mix features.
    Decaying a norm's gain pulls it toward 0 rather than its natural value 1, decaying a bias
    has no regularising use, and decaying an input embedding shrinks rare tokens' rows simply
    because they seldom receive gradient. So, as in minGPT: decay only the 2-D weights of
    linear layers (nanoGPT decays embeddings too). A tied embedding / output matrix is one
    parameter and counts as an embedding.

    >>> from llm_from_scratch.model import GPT, GPTConfig
    >>> groups = param_groups(GPT(GPTConfig(n_layer=1)), weight_decay=0.1)
    >>> [g["weight_decay"] for g in groups], [len(g["params"]) for g in groups]
    ([0.1, 0.0], [4, 12])
    """
    decay_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2
    }
    no_decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # each distinct parameter once, tied ones included
        if not p.requires_grad:
            continue
        (decay if id(p) in decay_ids and id(p) not in no_decay_ids else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_lr(
    step: int, max_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``.

    Warmup: Adam's second-moment estimate is poor for the first steps, and a full-size step
    taken on it can throw a freshly initialised model into a bad region. Cosine decay: large
    steps early make fast progress, small steps late settle into a minimum.

    >>> [round(cosine_lr(s, 1.0, warmup_steps=2, max_steps=6), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
