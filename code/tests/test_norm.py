"""Tests for llm_from_scratch.norm: each written-out norm equals PyTorch's own layer.

Weights and biases are randomised first, so that a scale/shift mix-up cannot hide behind the
ones and zeros they start as; gradients are compared as well as values.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llm_from_scratch.norm import BatchNorm, LayerNorm, RMSNorm, make_norm

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TOL = {"atol": 1e-5, "rtol": 1e-5}


def randomize(*modules: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        params = [list(m.parameters()) for m in modules]
        for group in zip(*params, strict=True):
            value = torch.randn(group[0].shape, generator=g) * 0.5 + 1.0
            for p in group:
                p.copy_(value)


def assert_same_forward_and_backward(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2, **TOL)
    w = torch.randn_like(y1)  # a non-trivial upstream gradient
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    for (name, p1), (_, p2) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, **TOL, msg=f"gradient of {name}")


# ---- LayerNorm --------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layernorm_equals_torch(bias, eps):
    ours, ref = LayerNorm(16, eps=eps, bias=bias), nn.LayerNorm(16, eps=eps, bias=bias)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    randomize(ours, ref)
    x = torch.randn(4, 7, 16) * 3 + 2
    assert_same_forward_and_backward(ours, ref, x)


def test_layernorm_default_output_has_zero_mean_unit_variance_per_token():
    y = LayerNorm(32)(torch.randn(5, 3, 32) * 10 + 4)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5, 3), atol=1e-3, rtol=0)


def test_layernorm_without_bias_has_no_bias_parameter():
    assert LayerNorm(8, bias=False).bias is None
    assert sum(p.numel() for p in LayerNorm(8, bias=False).parameters()) == 8
    assert sum(p.numel() for p in LayerNorm(8).parameters()) == 16


# ---- RMSNorm ----------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-6, 1e-1])
def test_rmsnorm_equals_torch(eps):
    ours, ref = RMSNorm(12, eps=eps), nn.RMSNorm(12, eps=eps)
    randomize(ours, ref)
    x = torch.randn(3, 5, 12) * 0.3 + 0.5
    assert_same_forward_and_backward(ours, ref, x)


def test_rmsnorm_does_not_centre():
    x = torch.full((1, 4), 3.0)
    torch.testing.assert_close(RMSNorm(4, eps=0.0)(x), torch.ones(1, 4))


# ---- BatchNorm --------------------------------------------------------------------------


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # (B, T, C) -> (B, C, T), the layout BatchNorm1d expects


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batchnorm_equals_batchnorm1d_in_training(momentum):
    ours, ref = BatchNorm(6, momentum=momentum), nn.BatchNorm1d(6, momentum=momentum)
    randomize(ours, ref)
    g = torch.Generator().manual_seed(3)
    for step in range(4):
        x = torch.randn(5, 7, 6, generator=g) * (step + 1) + step
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1 = ours(x1)
        y2 = to_channels_first(ref(to_channels_first(x2)))
        torch.testing.assert_close(y1, y2, **TOL)
        w = torch.randn_like(y1)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, **TOL)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **TOL)


def test_batchnorm_equals_batchnorm1d_in_eval():
    ours, ref = BatchNorm(4), nn.BatchNorm1d(4)
    randomize(ours, ref)
    for _ in range(3):  # accumulate running statistics
        x = torch.randn(8, 5, 4) * 2 + 1
        ours(x)
        ref(to_channels_first(x))
    ours.eval()
    ref.eval()
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x), to_channels_first(ref(to_channels_first(x))), **TOL)
    # eval mode uses running statistics: a single token is fine, and nothing is updated
    before = ours.running_mean.clone()
    ours(torch.randn(1, 1, 4))
    assert torch.equal(ours.running_mean, before)


def test_batchnorm_statistics_mix_the_batch():
    # Unlike LayerNorm, changing one example changes another's output (why LMs avoid it).
    bn = BatchNorm(3)
    x = torch.randn(4, 2, 3)
    changed = x.clone()
    changed[3] += 5.0
    assert not torch.allclose(bn(x)[0], bn(changed)[0])
    ln = LayerNorm(3)
    torch.testing.assert_close(ln(x)[0], ln(changed)[0])


def test_batchnorm_needs_more_than_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm(4)(torch.randn(1, 1, 4))


def test_norm_buffers_and_state_dict_match_torch_names():
    assert set(BatchNorm(4).state_dict()) >= {"weight", "bias", "running_mean", "running_var"}
    assert set(RMSNorm(4).state_dict()) == set(nn.RMSNorm(4).state_dict()) == {"weight"}


# ---- make_norm and shape errors ---------------------------------------------------------


def test_make_norm_builds_each_kind():
    assert isinstance(make_norm("layernorm", 8), LayerNorm)
    assert make_norm("layernorm", 8, bias=False).bias is None
    assert isinstance(make_norm("rmsnorm", 8), RMSNorm)
    for kind in (None, "none"):
        norm = make_norm(kind, 8)
        assert isinstance(norm, nn.Identity)
        x = torch.randn(2, 8)
        assert norm(x) is x


@pytest.mark.parametrize("kind", ["batchnorm", "LayerNorm", ""])
def test_make_norm_rejects_unknown_kinds(kind):
    with pytest.raises(ValueError, match=f"unknown norm {kind!r}"):
        make_norm(kind, 8)


@pytest.mark.parametrize(
    ("cls", "name"), [(LayerNorm, "LayerNorm"), (RMSNorm, "RMSNorm"), (BatchNorm, "BatchNorm")]
)
def test_wrong_channel_count_is_a_clear_error(cls, name):
    norm = cls(8)
    with pytest.raises(ValueError, match=rf"{name}\(8\) got input of shape \(2, 3, 7\)"):
        norm(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="last dim must be 8"):
        norm(torch.tensor(1.0))
