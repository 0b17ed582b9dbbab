"""The book's loss progression: each row changes one thing in the row it builds on.

Every row is trained by :func:`llm_from_scratch.train.train` with the same character-level
tokenizer, the same 90/10 split of Tiny Shakespeare, the same steps, learning rate and seed
(:data:`PROGRESSION_TRAIN`); up to Lesson 5 only the model changes. Lesson 7 scales the model
one dimension at a time (a longer context needs longer training windows), Lesson 8 changes
the training recipe, then reproduces nanoGPT's published CPU run at two learning rates. Each
row's validation loss is in nats per character, so it compares with the published anchors, and
each anchor names its source. Results are cached on disk (:mod:`llm_from_scratch.trained`), so
a later lesson shows the whole table without retraining.

>>> from llm_from_scratch.progression import ROWS, row
>>> [r.key for r in ROWS][:4]
['bigram', 'mlp', 'lstm', 'self_attention']
>>> row("multi_head").builds_on
'self_attention'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llm_from_scratch.baselines import LSTMConfig, MLPConfig
from llm_from_scratch.model import GPTConfig
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.train import TrainConfig
from llm_from_scratch.trained import ModelConfig, TrainedModel, TrainJob, train_cached_all

#: How every row is trained. CPU-sized: a few seconds per row on a 2-core laptop. One thread:
#: these models are too small to gain much from more, and a fixed count makes every row's loss
#: the same on every run, however busy the machine (see ``TrainConfig.threads``).
PROGRESSION_TRAIN = TrainConfig(
    block_size=8,
    batch_size=32,
    max_steps=1500,
    learning_rate=1e-2,
    eval_interval=100,
    eval_batches=10,
    threads=1,
)

#: The model every attention row starts from. GPT-2 initializes weights with std 0.02, a size
#: chosen for n_embd = 768; at n_embd = 32 it leaves the shallow early rows (no residual path)
#: with vanishing signals, so the progression uses 0.1, close to PyTorch's default at this width.
#: No weight tying, as in the classic ablation; the exact GELU, which is faster on a CPU than
#: GPT-2's tanh approximation (the two differ by less than 0.001).
BASE = GPTConfig(
    vocab_size=65,
    block_size=8,
    n_layer=1,
    n_head=4,
    n_embd=32,
    init_std=0.1,
    tie_weights=False,
    gelu="exact",
)


#: Where the anchors come from; both are {cite}`karpathy2023nanogpt` in the bibliography.
VIDEO = "Karpathy, *Let's build GPT* (2023), same step on a GPU"
NANOGPT_CPU = "nanoGPT's README (2023), its CPU run"

#: Lesson 7 scales the model one dimension at a time: context, then width, then depth.
CONTEXT = dataclasses.replace(BASE, n_layer=3, block_size=32)
#: Lesson 8's recipe on Lesson 7's last model: warmup, cosine decay, weight decay, nanoGPT's betas.
RECIPE = dataclasses.replace(
    PROGRESSION_TRAIN, block_size=32, learning_rate=1e-2, min_lr=1e-3, warmup_steps=100,
    schedule="cosine", weight_decay=0.1, betas=(0.9, 0.99),
)


@dataclass(frozen=True)
class Row:
    """One row of the progression: what it changes from the row it builds on, and its anchor."""

    key: str
    label: str
    lesson: str
    builds_on: str | None  # the row this one changes in exactly one way (None: a starting point)
    config: ModelConfig | None  # None: the bigram model
    train: TrainConfig | None = None  # None: PROGRESSION_TRAIN, as every row up to Lesson 5
    anchor: float | None = None  # a published validation loss for the same step, nats per char
    source: str | None = None  # the bibliography key of that anchor


ROWS: tuple[Row, ...] = (
    Row("bigram", "Bigram (lookup table)", "L02", None, None, anchor=2.5, source=VIDEO),
    # Appendix A: the models that came before attention, each in place of the bigram's table.
    Row("mlp", "MLP over 8 characters", "A", "bigram", MLPConfig(window=8)),
    Row("lstm", "LSTM", "A", "bigram", LSTMConfig()),
    Row("self_attention", "+ self-attention (1 head)", "L03", "bigram",
        dataclasses.replace(BASE, n_head=1, ffwd=False, residual=False, norm=None),
        anchor=2.4, source=VIDEO),
    Row("multi_head", "+ multi-head (4 heads)", "L04", "self_attention",
        dataclasses.replace(BASE, ffwd=False, residual=False, norm=None),
        anchor=2.3, source=VIDEO),
    Row("feed_forward", "+ feed-forward", "L05", "multi_head",
        dataclasses.replace(BASE, residual=False, norm=None), anchor=2.24, source=VIDEO),
    Row("three_blocks", "+ 3 blocks (no residual, no norm)", "L05", "feed_forward",
        dataclasses.replace(BASE, n_layer=3, residual=False, norm=None)),
    Row("residual", "+ residual connections", "L05", "three_blocks",
        dataclasses.replace(BASE, n_layer=3, norm=None)),
    Row("layernorm", "+ LayerNorm (pre-norm)", "L05", "residual",
        dataclasses.replace(BASE, n_layer=3), anchor=2.1, source=VIDEO),
    Row("context", "+ context 32 (from 8)", "L07", "layernorm", CONTEXT,
        dataclasses.replace(PROGRESSION_TRAIN, block_size=32)),
    Row("width", "+ width n_embd 64 (from 32)", "L07", "context",
        dataclasses.replace(CONTEXT, n_embd=64),
        dataclasses.replace(PROGRESSION_TRAIN, block_size=32)),
    Row("depth", "+ depth 4 blocks (from 3)", "L07", "width",
        dataclasses.replace(CONTEXT, n_embd=64, n_layer=4),
        dataclasses.replace(PROGRESSION_TRAIN, block_size=32)),
    Row("recipe", "+ Lesson 8's recipe (warmup, cosine, weight decay)", "L08", "depth",
        dataclasses.replace(CONTEXT, n_embd=64, n_layer=4), RECIPE),
    # nanoGPT's own CPU run (its README), reproduced: a published configuration, not one step.
    Row("nanogpt_cpu", "nanoGPT's CPU configuration (lr 1e-3)", "L08", None,
        PRESETS["nanogpt-cpu"].model,
        dataclasses.replace(PRESETS["nanogpt-cpu"].train, learning_rate=1e-3, min_lr=1e-4),
        anchor=1.88, source=NANOGPT_CPU),
    Row("nanogpt_cpu_3e3", "+ learning rate 3e-3 (the book's preset)", "L08", "nanogpt_cpu",
        PRESETS["nanogpt-cpu"].model, PRESETS["nanogpt-cpu"].train,
        anchor=1.88, source=NANOGPT_CPU),
)


def row(key: str) -> Row:
    """The row called ``key`` (see :data:`ROWS`)."""
    for r in ROWS:
        if r.key == key:
            return r
    raise KeyError(f"no progression row {key!r}; rows are {[r.key for r in ROWS]}")


def row_job(key: str) -> TrainJob:
    """The training run of row ``key``, for :func:`llm_from_scratch.trained.train_cached_all`."""
    r = row(key)
    return TrainJob(r.key, r.config, r.train or PROGRESSION_TRAIN)


def progression_row(key: str, progress: bool = True) -> TrainedModel:
    """Train (or load) the row ``key`` of the loss progression."""
    return row_job(key).run(progress)


def progression_rows(keys: list[str], progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or load) the rows ``keys``; the missing rows train side by side, one per free core.

    Each row trains on one thread, so its result is the same either way (see
    :func:`llm_from_scratch.trained.train_cached_all`).
    """
    runs = train_cached_all([row_job(key) for key in keys], progress=progress)
    return dict(zip(keys, runs, strict=True))


def progression_table(keys: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Rows ``keys`` (default: all) as dicts: label, lesson, parameters, losses, anchor, time."""
    table = []
    keys = keys or [r.key for r in ROWS]
    for key, exp in progression_rows(keys, progress=progress).items():
        r = row(key)
        table.append(
            {
                "key": r.key,
                "model": r.label,
                "lesson": r.lesson,
                "builds_on": r.builds_on,
                "source": r.source,
                "parameters": exp.result.n_params,
                "train_loss": exp.result.train_loss,
                "val_loss": exp.result.val_loss,
                "anchor": r.anchor,
                "seconds": exp.result.seconds,
            }
        )
    return table


def markdown_table(table: list[dict]) -> str:
    """A Markdown table of :func:`progression_table` rows, for ``IPython.display.Markdown``."""
    lines = [
        "| Model | Lesson | Parameters | Train loss | Validation loss | Anchor | Anchor's source |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for t in table:
        anchor = "—" if t.get("anchor") is None else f"{t['anchor']:.2f}"
        source = t.get("source") or "—"
        lines.append(
            f"| {t['model']} | {t['lesson']} | {t['parameters']:,} | {t['train_loss']:.3f} "
            f"| **{t['val_loss']:.3f}** | {anchor} | {source} |"
        )
    return "\n".join(lines)
