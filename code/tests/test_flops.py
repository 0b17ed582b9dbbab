"""Tests for llm_from_scratch.flops: parameter and FLOP counts from formulas, checked against
the modules themselves and PyTorch's FLOP counter."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llm_from_scratch.flops import (
    flops_per_token,
    matmul_peak_flops,
    matmul_rate,
    matmul_weights,
    mfu,
    parameter_count,
)
from llm_from_scratch.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"bias": False},
        {"tie_weights": False},
        {"n_kv_head": 1},
        {"norm": "rmsnorm"},
        {"pos_encoding": "rope"},
        {"pos_encoding": "sinusoidal"},
        {"ffwd": False},
        {"prenorm": False},
        {"norm": None},
    ],
)
def test_parameter_count_formula(change):
    config = GPTConfig(vocab_size=37, block_size=12, n_layer=3, n_head=4, n_embd=24, **change)
    assert parameter_count(config) == GPT(config).num_parameters()


def test_gpt2_small_parameter_count():
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert parameter_count(config) == 124_439_808


def test_flops_per_token_matches_pytorchs_flop_counter():
    config = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config)
    x = torch.randint(0, 37, (3, 16))
    # The math backend computes attention with matmuls, which the counter sees; PyTorch's
    # fused CPU kernel is invisible to it.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    measured = counter.get_total_flops() / x.numel()
    assert measured == flops_per_token(config)  # 6N + 12·n_layer·T·C, exactly
    assert matmul_weights(config) / parameter_count(config) > 0.9
    assert flops_per_token(config, training=False) * 3 == flops_per_token(config)


def test_mfu_is_model_flops_over_the_peak():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    assert mfu(1000.0, config, 1e9) == pytest.approx(1000 * flops_per_token(config) / 1e9)


def test_matmul_rate_is_flops_per_second():
    rate = matmul_rate(64, 32, 16, seconds=0.05, dtype=torch.float32)
    assert 1e6 < rate < 1e15


def test_matmul_peak_flops_measures_a_rate():
    # How fast the machine is belongs to code/benchmarks/timing_checks.py; here only that the
    # measurement returns a rate.
    peak = matmul_peak_flops(size=32, seconds=0.01)
    assert math.isfinite(peak) and peak > 0
