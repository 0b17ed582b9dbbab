"""Tests for llm_from_scratch.positions: sinusoidal positions and rotary embeddings (RoPE).

Both are compared with independent implementations of the papers' formulas: a NumPy loop for
Vaswani et al.'s encodings, and complex-number multiplication for RoPE's rotations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llm_from_scratch.positions import RotaryEmbedding, rotate_half, sinusoidal_positions

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def vaswani_loop(block_size: int, n_embd: int, base: float = 10000.0) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d))."""
    pe = np.zeros((block_size, n_embd), dtype=np.float64)
    for pos in range(block_size):
        for i in range(n_embd // 2):
            angle = pos / base ** (2 * i / n_embd)
            pe[pos, 2 * i] = math.sin(angle)
            pe[pos, 2 * i + 1] = math.cos(angle)
    return pe


def rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as complex multiplication: the pair (j, j + d/2) is the number x_j + i x_{j+d/2},
    multiplied by exp(i * pos * base^(-2j/d)). Computed in float64."""
    d = x.size(-1)
    half = d // 2
    x = x.double()
    z = torch.complex(x[..., :half], x[..., half:])
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    angles = positions.double()[:, None] * theta  # (T, d/2)
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((rotated.real, rotated.imag), dim=-1)


# ---- sinusoidal positions ---------------------------------------------------------------


@pytest.mark.parametrize(("block_size", "n_embd", "base"), [(16, 8, 10000.0), (50, 32, 100.0)])
def test_sinusoidal_positions_match_the_vaswani_formula(block_size, n_embd, base):
    pe = sinusoidal_positions(block_size, n_embd, base=base)
    assert pe.shape == (block_size, n_embd)
    assert pe.dtype == torch.float32
    np.testing.assert_allclose(pe.numpy(), vaswani_loop(block_size, n_embd, base), atol=2e-5)


def test_sinusoidal_position_zero_is_sin0_cos0():
    pe = sinusoidal_positions(4, 6)
    assert pe[0].tolist() == [0.0, 1.0] * 3


@pytest.mark.parametrize("n_embd", [0, 3, -2])
def test_sinusoidal_rejects_odd_or_non_positive_width(n_embd):
    with pytest.raises(ValueError, match="positive even number"):
        sinusoidal_positions(4, n_embd)


def test_sinusoidal_rejects_empty_block():
    with pytest.raises(ValueError, match="block_size must be positive"):
        sinusoidal_positions(0, 4)


# ---- rotate_half ------------------------------------------------------------------------


def test_rotate_half_is_a_quarter_turn_per_pair():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]
    # Two quarter turns are a half turn.
    y = torch.randn(3, 8)
    torch.testing.assert_close(rotate_half(rotate_half(y)), -y)


# ---- RoPE -------------------------------------------------------------------------------


@pytest.mark.parametrize(("head_dim", "base"), [(8, 10000.0), (16, 500.0)])
def test_rope_equals_complex_rotation_of_half_pairs(head_dim, base):
    torch.manual_seed(0)
    T = 24
    rope = RotaryEmbedding(head_dim, max_seq_len=T, base=base)
    x = torch.randn(2, 3, T, head_dim)
    expected = rope_complex(x, torch.arange(T), base=base)
    torch.testing.assert_close(rope(x).double(), expected, atol=1e-5, rtol=1e-5)


def test_rope_score_depends_only_on_relative_position():
    torch.manual_seed(0)
    d, T = 16, 64
    rope = RotaryEmbedding(d, max_seq_len=T)
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    # The same q and k placed at every position.
    rq = rope(q.expand(T, d).float()).double()
    rk = rope(k.expand(T, d).float()).double()
    scores = rq @ rk.T  # scores[m, n] = <R_m q, R_n k>
    for offset in range(-T + 1, T):
        diagonal = torch.diagonal(scores, offset=-offset)  # entries with m - n = offset
        assert diagonal.numel() == T - abs(offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4, rtol=1e-4)
    # ...and it does depend on the offset (otherwise the check above would be vacuous).
    assert not torch.allclose(scores[0, 0], scores[5, 0], atol=1e-3)
    # Offset 0 gives the unrotated dot product.
    torch.testing.assert_close(scores[7, 7], q @ k, atol=1e-4, rtol=1e-4)


def test_rope_preserves_norms():
    torch.manual_seed(1)
    rope = RotaryEmbedding(32, max_seq_len=40)
    x = torch.randn(3, 4, 40, 32)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1), atol=1e-4, rtol=1e-5)


def test_rope_at_offset_equals_slicing_a_longer_sequence():
    torch.manual_seed(2)
    rope = RotaryEmbedding(8, max_seq_len=20)
    x = torch.randn(2, 20, 8)
    full = rope(x)
    for offset, length in [(0, 5), (3, 7), (13, 7), (19, 1)]:
        part = rope(x[:, offset : offset + length], offset=offset)
        torch.testing.assert_close(part, full[:, offset : offset + length])


def test_rope_position_zero_is_identity_and_dtype_is_kept():
    rope = RotaryEmbedding(4, max_seq_len=3)
    x = torch.randn(3, 4, dtype=torch.float64)
    y = rope(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y[0], x[0])
    assert not torch.allclose(y[1], x[1])


@pytest.mark.parametrize("head_dim", [0, 5, -4])
def test_rope_rejects_odd_head_dim(head_dim):
    with pytest.raises(ValueError, match="head_dim must be a positive even number"):
        RotaryEmbedding(head_dim, max_seq_len=8)


def test_rope_rejects_non_positive_max_seq_len():
    with pytest.raises(ValueError, match="max_seq_len must be positive"):
        RotaryEmbedding(4, max_seq_len=0)


def test_rope_rejects_sequences_past_max_seq_len():
    rope = RotaryEmbedding(4, max_seq_len=8)
    rope(torch.randn(8, 4))  # exactly max_seq_len is fine
    with pytest.raises(ValueError, match="exceed max_seq_len=8"):
        rope(torch.randn(9, 4))
    with pytest.raises(ValueError, match=r"positions 5\.\.8 exceed max_seq_len=8"):
        rope(torch.randn(4, 4), offset=5)
    with pytest.raises(ValueError, match="exceed"):
        rope(torch.randn(2, 4), offset=-1)


def test_rope_rejects_wrong_last_dimension():
    with pytest.raises(ValueError, match="expected head_dim=4"):
        RotaryEmbedding(4, max_seq_len=8)(torch.randn(2, 6))


def test_rope_tables_are_non_persistent_buffers():
    rope = RotaryEmbedding(4, max_seq_len=8)
    assert dict(rope.named_parameters()) == {}
    assert rope.state_dict() == {}
    assert {name for name, _ in rope.named_buffers()} == {"cos", "sin"}
