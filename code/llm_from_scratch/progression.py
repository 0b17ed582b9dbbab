"""The book's loss progression: one model per lesson, each adding one idea, trained alike.

Every row is trained by :func:`llm_from_scratch.train.train` with the same character-level
tokenizer, the same 90/10 split of Tiny Shakespeare, the same steps, learning rate and seed
(:data:`PROGRESSION_TRAIN`); only the model changes. Lesson 7's two rows then scale the model
up: a longer context needs longer training windows, and the full GPT is trained with Lesson
8's recipe (nanoGPT's CPU configuration), so those rows carry their own settings. Each row's
validation loss is in nats per character, so it compares with the well-known anchors of
from-scratch GPT tutorials (bigram ≈ 2.5 down to ≈ 1.5 for a 10.8M-parameter GPT on a GPU).
Results are cached on disk (:mod:`llm_from_scratch.trained`), so a later lesson shows the
whole table without retraining.

>>> from llm_from_scratch.progression import ROWS
>>> [row.key for row in ROWS][:2]
['bigram', 'self_attention']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llm_from_scratch.model import GPTConfig
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.train import TrainConfig
from llm_from_scratch.trained import TrainedModel, train_cached

#: How every row is trained. CPU-sized: a few seconds per row on a 2-core laptop.
PROGRESSION_TRAIN = TrainConfig(
    block_size=8,
    batch_size=32,
    max_steps=1500,
    learning_rate=1e-2,
    eval_interval=100,
    eval_batches=10,
)

#: The model every attention row starts from. GPT-2 initialises weights with std 0.02, a size
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


@dataclass(frozen=True)
class Row:
    """One row of the progression: what it adds, which lesson trains it, its published anchor."""

    key: str
    label: str
    lesson: str
    anchor: float  # validation loss reported by the classic GPU tutorials, nats per character
    config: GPTConfig | None  # None: the bigram model
    train: TrainConfig | None = None  # None: PROGRESSION_TRAIN, as every row up to Lesson 5


ROWS: tuple[Row, ...] = (
    Row("bigram", "Bigram (lookup table)", "L03", 2.5, None),
    Row(
        "self_attention",
        "+ self-attention (1 head)",
        "L03",
        2.4,
        dataclasses.replace(BASE, n_head=1, ffwd=False, residual=False, norm=None),
    ),
    Row(
        "multi_head",
        "+ multi-head (4 heads)",
        "L04",
        2.3,
        dataclasses.replace(BASE, ffwd=False, residual=False, norm=None),
    ),
    Row(
        "feed_forward",
        "+ feed-forward",
        "L05",
        2.24,
        dataclasses.replace(BASE, residual=False, norm=None),
    ),
    Row(
        "residual_layernorm",
        "+ residual & LayerNorm (3 blocks)",
        "L05",
        2.1,
        dataclasses.replace(BASE, n_layer=3),
    ),
    # Lesson 7: scale what Lesson 5 built. Wider, deeper, and a 4x longer context, which
    # needs longer training windows; everything else as before.
    Row(
        "scaled_up",
        "Scaled up (4 blocks, n_embd 64, context 32)",
        "L07",
        1.98,
        dataclasses.replace(BASE, n_layer=4, n_embd=64, block_size=32),
        dataclasses.replace(PROGRESSION_TRAIN, block_size=32),
    ),
    # The assembled GPT with GPT-2's design (tied head, 0.02 init) and the training
    # recipe of Lesson 8: nanoGPT's CPU configuration. The anchor is its GPU configuration.
    Row(
        "gpt",
        "Full GPT (nanoGPT's CPU configuration)",
        "L07",
        1.48,
        PRESETS["nanogpt-cpu"].model,
        PRESETS["nanogpt-cpu"].train,
    ),
)


def row(key: str) -> Row:
    """The row called ``key`` (see :data:`ROWS`)."""
    for r in ROWS:
        if r.key == key:
            return r
    raise KeyError(f"no progression row {key!r}; rows are {[r.key for r in ROWS]}")


def progression_row(key: str, progress: bool = True) -> TrainedModel:
    """Train (or load) the row ``key`` of the loss progression."""
    r = row(key)
    return train_cached(r.key, r.config, r.train or PROGRESSION_TRAIN,
                        progress=progress)


def progression_table(keys: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Rows ``keys`` (default: all) as dicts: label, lesson, parameters, losses, anchor, time."""
    table = []
    for key in keys or [r.key for r in ROWS]:
        r, exp = row(key), progression_row(key, progress=progress)
        table.append(
            {
                "key": r.key,
                "model": r.label,
                "lesson": r.lesson,
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
        "| Model | Lesson | Parameters | Train loss | Validation loss | Anchor (GPU tutorials) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for t in table:
        lines.append(
            f"| {t['model']} | {t['lesson']} | {t['parameters']:,} | {t['train_loss']:.3f} "
            f"| **{t['val_loss']:.3f}** | {t['anchor']:.2f} |"
        )
    return "\n".join(lines)
