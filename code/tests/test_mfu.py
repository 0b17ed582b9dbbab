"""The utilisation benchmark (code/benchmarks/mfu.py): its FLOP count and its clock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mfu  # noqa: E402

from llm_from_scratch.flops import flops_per_token, matmul_weights  # noqa: E402
from llm_from_scratch.model import GPT, GPTConfig  # noqa: E402
from llm_from_scratch.train import TrainConfig  # noqa: E402


def test_model_shapes_are_every_weight_multiply():
    config = GPTConfig(vocab_size=100, block_size=16, n_layer=3, n_head=2, n_embd=24)
    shapes = mfu.model_shapes(config, rows=7)
    per_layer = sum(k * n for name, (_, k, n) in shapes.items() if name != "head")
    assert config.n_layer * per_layer + shapes["head"][1] * shapes["head"][2] == \
        matmul_weights(config)
    assert {m for m, _, _ in shapes.values()} == {7}


def test_measure_times_the_steady_steps_of_a_run():
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)
    recipe = TrainConfig(block_size=16, batch_size=4, max_steps=500, threads=1)
    tokens = torch.randint(0, 50, (2000,), generator=torch.Generator().manual_seed(0))
    per_step = recipe.tokens_per_step * flops_per_token(config, recipe.block_size)
    run = mfu.Run("toy", "-", GPT(config), config, tokens, tokens, recipe, lambda: per_step)
    measured = mfu.measure(run, steps=4)
    assert measured.ms_per_step > 0 and measured.threads == 1
    assert measured.flops_per_second == pytest.approx(per_step / measured.ms_per_step * 1000)
    # The full recipe: the warm-up steps as timed, then the rest at the steady rate.
    expected = measured.first_steps_seconds + (500 - mfu.WARMUP_STEPS) * measured.ms_per_step / 1000
    assert measured.recipe_seconds() == pytest.approx(expected)
