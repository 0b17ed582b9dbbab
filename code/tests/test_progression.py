"""Tests for llm_from_scratch.progression: the loss progression's rows and its table."""

from __future__ import annotations

import pytest
import torch

from llm_from_scratch import progression
from llm_from_scratch.artifacts import CACHE_DIR_ENV
from llm_from_scratch.model import BigramLanguageModel
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
from llm_from_scratch.trained import MODELS, build_model, train_cached_all

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_progression_rows():
    assert [r.key for r in ROWS] == [
        "bigram", "mlp", "lstm", "self_attention", "multi_head", "feed_forward", "three_blocks",
        "residual", "layernorm", "context", "width", "depth", "recipe", "nanogpt_cpu",
        "nanogpt_cpu_3e3",
    ]  # fmt: skip
    assert len({r.key for r in ROWS}) == len(ROWS)
    assert ROWS[0].config is None and ROWS[0].lesson == "L02"
    for r in ROWS:
        assert (r.anchor is None) == (r.source is None), r.key  # every anchor names its source
        if r.config is not None:
            assert type(r.config)(**{k: v for k, v in r.config.to_dict().items()
                                     if k != "kind"}) == r.config  # passes validation
            assert r.config.vocab_size == BASE.vocab_size
            if getattr(r.config, "block_size", None) is not None:
                assert r.config.block_size >= (r.train or PROGRESSION_TRAIN).block_size
    # rows up to Lesson 5 share one training setup
    assert all(r.train is None for r in ROWS if r.lesson in ("L02", "A", "L03", "L04", "L05"))
    assert row("nanogpt_cpu_3e3").train == PRESETS["nanogpt-cpu"].train
    assert row("nanogpt_cpu").config == PRESETS["nanogpt-cpu"].model
    assert row("nanogpt_cpu").train.learning_rate == 1e-3  # nanoGPT's own rate
    assert row("nanogpt_cpu").anchor == 1.88


def changed_fields(r) -> set[str]:
    """What row ``r`` changes in the row it builds on: model fields and training fields."""
    parent = row(r.builds_on)
    if parent.config is None or type(parent.config) is not type(r.config):
        return {"model"}
    model = {k for k, v in r.config.to_dict().items() if parent.config.to_dict()[k] != v}
    mine, theirs = (x.train or PROGRESSION_TRAIN for x in (r, parent))
    train = {k for k, v in mine.to_dict().items() if theirs.to_dict()[k] != v}
    return model | {f"train.{k}" for k in train}


# What "one thing" means for each row: the fields that make up that one change.
ONE_CHANGE = {
    "multi_head": {"n_head"},
    "feed_forward": {"ffwd"},
    "three_blocks": {"n_layer"},
    "residual": {"residual"},
    "layernorm": {"norm"},
    "context": {"block_size", "train.block_size"},  # a longer context needs longer windows
    "width": {"n_embd"},
    "depth": {"n_layer"},
    "recipe": {"train.warmup_steps", "train.schedule", "train.min_lr", "train.weight_decay",
               "train.betas"},  # the recipe of Lesson 8
    "nanogpt_cpu_3e3": {"train.learning_rate", "train.min_lr"},  # min_lr is a tenth of the peak
}


@pytest.mark.parametrize("r", [r for r in ROWS if r.builds_on], ids=lambda r: r.key)
def test_each_row_changes_one_thing(r):
    changed = changed_fields(r)
    assert changed == ONE_CHANGE.get(r.key, {"model"}), (r.key, changed)
    assert ROWS.index(row(r.builds_on)) < ROWS.index(r)


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
    assert isinstance(a, BigramLanguageModel if config is None else MODELS[type(config)])


def test_markdown_table():
    table = [
        {"model": "Bigram", "lesson": "L02", "parameters": 4225, "train_loss": 2.4567,
         "val_loss": 2.4912, "anchor": 2.5, "source": "a video"},
        {"model": "LSTM", "lesson": "A", "parameters": 31393, "train_loss": 1.9,
         "val_loss": 2.0, "anchor": None, "source": None},
    ]  # fmt: skip
    lines = markdown_table(table).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| Model | Lesson | Parameters")
    assert lines[2] == "| Bigram | L02 | 4,225 | 2.457 | **2.491** | 2.50 | a video |"
    assert lines[3] == "| LSTM | A | 31,393 | 1.900 | **2.000** | — | — |"


QUICK = TrainConfig(block_size=8, batch_size=8, max_steps=5, eval_interval=5, eval_batches=2)


def test_progression_table_uses_the_shared_training_config(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(progression, "PROGRESSION_TRAIN", QUICK)
    runs = []

    def spy(jobs, **kwargs):
        runs.extend(train_cached_all(jobs, **kwargs))
        assert [(job.config, job.train_config) for job in jobs] == [(None, QUICK)]
        return runs[-len(jobs):]

    monkeypatch.setattr(progression, "train_cached_all", spy)
    table = progression_table(["bigram"], progress=False)
    assert len(table) == 1 and len(runs) == 1
    entry = table[0]
    assert entry["key"] == "bigram" and entry["lesson"] == "L02" and entry["anchor"] == 2.5
    assert entry["parameters"] == 65 * 65
    assert entry["val_loss"] == runs[0].result.val_loss
    assert entry["train_loss"] == runs[0].result.train_loss
    assert "**" in markdown_table(table)
    # a second table loads the row instead of training it again
    progression_table(["bigram"], progress=False)
    assert runs[1].from_cache and runs[1].result == runs[0].result
