"""Positions: telling a model *where* each token sits (Lesson 2).

Three ways to give a model positions, all used by real models:

- learned absolute positions (GPT-2): an ``nn.Embedding(block_size, n_embd)`` added to the tokens;
- sinusoidal encodings (the original Transformer): fixed sines and cosines,
  :func:`sinusoidal_positions`;
- rotary embeddings, RoPE (Llama, Mistral, GPT-NeoX): rotate queries and keys by an angle that
  grows with position, :class:`RotaryEmbedding`, so that ``q · k`` depends only on their offset.

>>> import torch
>>> from llm_from_scratch.positions import sinusoidal_positions, RotaryEmbedding
>>> sinusoidal_positions(block_size=8, n_embd=4).shape
torch.Size([8, 4])
>>> rope = RotaryEmbedding(head_dim=4, max_seq_len=8)
>>> rope(torch.randn(1, 2, 8, 4)).shape   # (B, n_head, T, head_dim)
torch.Size([1, 2, 8, 4])
"""

from __future__ import annotations

import torch
from torch import nn


def _check_even(name: str, value: int) -> None:
    if value <= 0 or value % 2:
        raise ValueError(
            f"{name} must be a positive even number (dimensions come in pairs), got {value}"
        )


def sinusoidal_positions(block_size: int, n_embd: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed positional encodings of Vaswani et al. (2017), shape ``(block_size, n_embd)``.

    Channel pair ``(2i, 2i+1)`` holds ``sin`` and ``cos`` of ``pos / base**(2i / n_embd)``: fast
    waves in the first channels, slow ones in the last, so every position gets a unique pattern and
    a shift by ``k`` positions is the same rotation at every position.

    >>> pe = sinusoidal_positions(4, 2)
    >>> pe[:, 0].tolist() == torch.sin(torch.arange(4.0)).tolist()
    True
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    _check_even("n_embd", n_embd)
    position = torch.arange(block_size, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = base ** (-torch.arange(0, n_embd, 2, dtype=torch.float32) / n_embd)  # (C/2,)
    angles = position * inv_freq  # (T, C/2)
    pe = torch.empty(block_size, n_embd)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map the halves ``(x1, x2)`` of the last dimension to ``(-x2, x1)``: a 90° turn per pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., 2021) for queries and keys ``(..., T, head_dim)``.

    Channel ``j`` and channel ``j + head_dim/2`` form a pair that is rotated by the angle
    ``pos * base**(-2j / head_dim)`` (the "rotate half" layout of GPT-NeoX and Llama). Rotating
    both ``q`` at position ``m`` and ``k`` at position ``n`` makes ``q · k`` a function of
    ``m - n`` only: attention sees relative positions, with no parameters to learn.

    >>> rope = RotaryEmbedding(head_dim=2, max_seq_len=4)
    >>> x = torch.tensor([[1.0, 0.0]] * 4)          # the same vector at positions 0..3
    >>> [round(v, 4) for v in rope(x)[1].tolist()]  # position 1: rotated by 1 radian
    [0.5403, 0.8415]
    """

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        _check_even("head_dim", head_dim)
        if max_seq_len <= 0:
            raise ValueError(f"max_seq_len must be positive, got {max_seq_len}")
        self.head_dim, self.max_seq_len = head_dim, max_seq_len
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq  # (T, d/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, d): both members of a pair
        # Buffers, not parameters: nothing to learn, but they follow the module to cuda/float16.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` (``(..., T, head_dim)``) as if its first row sat at position ``offset``."""
        if x.size(-1) != self.head_dim:
            raise ValueError(f"last dimension is {x.size(-1)}, expected head_dim={self.head_dim}")
        T = x.size(-2)
        if offset < 0 or offset + T > self.max_seq_len:
            raise ValueError(
                f"positions {offset}..{offset + T - 1} exceed max_seq_len={self.max_seq_len}"
            )
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        return x * cos + rotate_half(x) * sin
