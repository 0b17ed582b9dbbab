"""Tests for llm_from_scratch.progression: the loss progression's rows and its table."""

from __future__ import annotations

import pytest
import torch

from llm_from_scratch import progression
from llm_from_scratch.artifacts import CACHE_DIR_ENV
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.progression import (
    BASE,
    PROGRESSION_TRAIN,
    ROWS,
    markdown_table,
    progression_table,
    row,
)
from llm_from_scratch.train import TrainConfig
from llm_from_scratch.trained import build_model, train_cached

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_progression_rows():
    assert [r.key for r in ROWS] == [
        "bigram",
        "self_attention",
        "multi_head",
        "feed_forward",
        "residual_layernorm",
        "scaled_up",
        "gpt",
    ]
    assert len({r.key for r in ROWS}) == len(ROWS)
    assert ROWS[0].config is None
    anchors = [r.anchor for r in ROWS]
    assert anchors == sorted(anchors, reverse=True)  # each idea should help
    for r in ROWS[1:]:
        assert GPTConfig(**r.config.to_dict()) == r.config  # passes validation
        assert r.config.block_size >= (r.train or PROGRESSION_TRAIN).block_size
        assert r.config.vocab_size == BASE.vocab_size
    # rows up to Lesson 5 share one training setup; Lesson 7's scale it up
    assert all(r.train is None for r in ROWS if r.lesson != "L07")
    assert row("gpt").train == PRESETS["nanogpt-cpu"].train
    assert row("gpt").config == PRESETS["nanogpt-cpu"].model
    assert row("multi_head").config.n_head == 4 and row("self_attention").config.n_head == 1
    assert row("residual_layernorm").config.residual and not row("feed_forward").config.residual


def test_row_unknown_key_lists_the_rows():
    with pytest.raises(KeyError, match=r"no progression row 'gpt5'; rows are \['bigram'"):
        row("gpt5")


@pytest.mark.parametrize("key", [r.key for r in ROWS])
def test_every_row_builds_and_runs(key):
    config = row(key).config
    a, b = build_model(config, 65, seed=3), build_model(config, 65, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    x = torch.randint(0, 65, (2, 8))
    logits, loss = a(x, x)
    assert logits.shape == (2, 8, 65) and torch.isfinite(loss)
    assert isinstance(a, BigramLanguageModel if config is None else GPT)


def test_markdown_table():
    table = [
        {"model": "Bigram", "lesson": "L03", "parameters": 4225, "train_loss": 2.4567,
         "val_loss": 2.4912, "anchor": 2.5},
    ]  # fmt: skip
    lines = markdown_table(table).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("| Model | Lesson | Parameters")
    assert lines[2] == "| Bigram | L03 | 4,225 | 2.457 | **2.491** | 2.50 |"


QUICK = TrainConfig(block_size=8, batch_size=8, max_steps=5, eval_interval=5, eval_batches=2)


def test_progression_table_uses_the_shared_training_config(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(progression, "PROGRESSION_TRAIN", QUICK)
    runs = []

    def spy(name, config, train_config, **kwargs):
        runs.append(train_cached(name, config, train_config, **kwargs))
        assert config is None and train_config == QUICK
        return runs[-1]

    monkeypatch.setattr(progression, "train_cached", spy)
    table = progression_table(["bigram"], progress=False)
    assert len(table) == 1 and len(runs) == 1
    entry = table[0]
    assert entry["key"] == "bigram" and entry["lesson"] == "L03" and entry["anchor"] == 2.5
    assert entry["parameters"] == 65 * 65
    assert entry["val_loss"] == runs[0].result.val_loss
    assert entry["train_loss"] == runs[0].result.train_loss
    assert "**" in markdown_table(table)
    # a second table loads the row instead of training it again
    progression_table(["bigram"], progress=False)
    assert runs[1].from_cache and runs[1].result == runs[0].result
