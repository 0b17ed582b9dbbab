"""Tests for llm_from_scratch.presets: every named run is consistent and validated."""

from __future__ import annotations

import dataclasses

import pytest

from llm_from_scratch.data import TokenizedData
from llm_from_scratch.model import GPTConfig
from llm_from_scratch.presets import PRESETS, Preset
from llm_from_scratch.train import TrainConfig


def test_the_presets():
    assert sorted(PRESETS) == ["book", "nanogpt-cpu", "nanogpt-gpu", "tiny"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_consistent(name):
    p = PRESETS[name]
    assert isinstance(p.model, GPTConfig) and isinstance(p.train, TrainConfig)
    # the configs pass their own validation as they are
    assert GPTConfig(**p.model.to_dict()) == p.model
    assert TrainConfig(**p.train.to_dict()) == p.train
    assert p.model.block_size >= p.train.block_size  # the windows fit the model's context
    if p.tokenizer == "char":
        assert p.model.vocab_size == 65  # Tiny Shakespeare's characters
    else:
        assert p.model.vocab_size == p.vocab_size
    assert p.note


def test_nanogpt_presets_follow_its_recipe():
    for name in ("nanogpt-cpu", "nanogpt-gpu"):
        p = PRESETS[name]
        assert p.model.gelu == "exact" and not p.model.bias
        assert p.train.betas == (0.9, 0.99) and p.train.schedule == "cosine"
        assert p.train.min_lr == pytest.approx(p.train.learning_rate / 10)
        assert p.train.weight_decay == 0.1 and p.train.warmup_steps == 100
    gpu = PRESETS["nanogpt-gpu"]
    assert gpu.train.device == "cuda" and gpu.model.n_embd == 384 and gpu.model.dropout == 0.2
    assert all(PRESETS[name].train.device == "cpu" for name in ("tiny", "nanogpt-cpu", "book"))


@pytest.mark.parametrize(
    ("change", "message"),
    [({"tokenizer": "words"}, "tokenizer must be one of"),
     ({"vocab_size": 256}, r"vocab_size must be an integer in \[257, 100000\]"),
     ({"vocab_size": 1024.0}, "vocab_size must be an integer")],
)  # fmt: skip
def test_preset_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PRESETS["tiny"], **change)


def test_a_character_preset_feeds_the_character_data():
    data = PRESETS["tiny"].data()
    assert isinstance(data, TokenizedData)
    assert data.tokenizer.vocab_size == PRESETS["tiny"].model.vocab_size
    assert isinstance(Preset(PRESETS["tiny"].model, PRESETS["tiny"].train), Preset)
