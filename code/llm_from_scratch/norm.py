"""Normalization layers: BatchNorm, LayerNorm and RMSNorm, written out (Lesson 5).

All three rescale activations to a standard size so that deep stacks train; they differ in
*which numbers share the statistics*:

- :class:`BatchNorm` (Ioffe & Szegedy, 2015): each channel over the batch and time; needs
  running averages for inference and mixes examples (and, in a language model, future tokens).
- :class:`LayerNorm` (Ba et al., 2016): each token over its own channels; the GPT-2 choice.
- :class:`RMSNorm` (Zhang & Sennrich, 2019): LayerNorm without the mean; Llama's choice.

Input shape is ``(B, T, C)`` (or anything ending in ``C``).

>>> import torch
>>> x = torch.randn(2, 3, 8)
>>> torch.allclose(LayerNorm(8)(x), torch.nn.LayerNorm(8)(x), atol=1e-6)
True
"""

from __future__ import annotations

import torch
from torch import nn


def _check_channels(x: torch.Tensor, n_embd: int, name: str) -> None:
    if x.dim() == 0 or x.size(-1) != n_embd:
        raise ValueError(
            f"{name}({n_embd}) got input of shape {tuple(x.shape)}: last dim must be {n_embd}"
        )


class LayerNorm(nn.Module):
    """Normalize each token's channels to mean 0 and variance 1, then scale and shift.

    ``bias=False`` drops the shift, as many recent models do.

    >>> LayerNorm(4)(torch.tensor([1.0, 2.0, 3.0, 4.0])).mean().abs() < 1e-6
    tensor(True)
    """

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.n_embd, self.eps = n_embd, eps
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.n_embd, "LayerNorm")
        centred = x - x.mean(dim=-1, keepdim=True)
        var = centred.pow(2).mean(dim=-1, keepdim=True)  # biased, as PyTorch and the paper
        x_hat = centred * torch.rsqrt(var + self.eps)
        return x_hat * self.weight + self.bias if self.bias is not None else x_hat * self.weight


class RMSNorm(nn.Module):
    """Divide each token by the root mean square of its channels, then scale; no centring.

    >>> RMSNorm(2, eps=0.0)(torch.tensor([3.0, 4.0])).tolist()  # rms = sqrt(12.5)
    [0.8485..., 1.1313...]
    """

    def __init__(self, n_embd: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.n_embd, self.eps = n_embd, eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.n_embd, "RMSNorm")
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class BatchNorm(nn.Module):
    """Normalize each channel over every other dimension (batch, time) of a ``(..., C)`` input.

    In training it uses the current batch's statistics and updates running averages
    (``momentum`` as in PyTorch); in ``eval()`` it uses the running averages. Shown in the book
    to explain why sequence models do *not* use it.

    >>> bn = BatchNorm(3)
    >>> bn(torch.randn(16, 5, 3)).mean(dim=(0, 1)).abs().max() < 1e-6
    tensor(True)
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, n_embd: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.n_embd, self.eps, self.momentum = n_embd, eps, momentum
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd))
        self.register_buffer("running_mean", torch.zeros(n_embd))
        self.register_buffer("running_var", torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_channels(x, self.n_embd, "BatchNorm")
        if self.training:
            flat = x.reshape(-1, self.n_embd)
            if flat.size(0) < 2:
                raise ValueError("BatchNorm in training needs more than one value per channel")
            mean, var = flat.mean(dim=0), flat.var(dim=0, unbiased=False)
            with torch.no_grad():  # running variance is unbiased, as in PyTorch
                n = flat.size(0)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def make_norm(kind: str | None, n_embd: int, bias: bool = True) -> nn.Module:
    """A norm layer by name: ``"layernorm"``, ``"rmsnorm"`` or ``None`` (identity)."""
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "layernorm":
        return LayerNorm(n_embd, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(n_embd)
    raise ValueError(f"unknown norm {kind!r}: choose 'layernorm', 'rmsnorm' or None")
