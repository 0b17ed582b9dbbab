"""The book's training routine: random batches, an optimizer loop, and honest evaluation.

Every lesson that trains a model calls :func:`train`, so that losses differ only by the model,
never by the loop. Lesson 8 grows this module into the full pipeline.

>>> import torch
>>> from llm_from_scratch.model import BigramLanguageModel
>>> data = torch.randint(0, 5, (1000,))
>>> config = TrainConfig(max_steps=10, eval_interval=5, block_size=8)
>>> result = train(BigramLanguageModel(5), data, data, config, progress=False)
>>> len(result.history)
2
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm import tqdm


@dataclass
class TrainConfig:
    """How to train: the same for every row of the book's loss progression."""

    block_size: int = 8  # context length of the training windows
    batch_size: int = 32
    max_steps: int = 3000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    eval_interval: int = 250  # steps between quick validation estimates (for curves)
    eval_batches: int = 20  # batches in each quick estimate
    seed: int = 1337

    def __post_init__(self) -> None:
        for name in ("block_size", "batch_size", "max_steps", "eval_interval", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What a run produced: the final full validation loss, curves and timing."""

    val_loss: float  # mean nats per token over the whole validation split
    train_loss: float  # mean of the last eval_interval training losses
    seconds: float  # wall time of the optimisation loop (evaluation excluded)
    steps: int
    n_params: int
    history: list[dict] = field(default_factory=list)  # step, train and val estimates, grad norm

    def to_dict(self) -> dict:
        return asdict(self)


def get_batch(
    data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``data``: inputs ``x`` and next-token targets ``y``.

    >>> x, y = get_batch(torch.arange(10), block_size=3, batch_size=2)
    >>> bool((y == x + 1).all())
    True
    """
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens; need more than block_size={block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x, y


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: torch.Tensor,
    block_size: int,
    batch_size: int = 256,
    max_batches: int | None = None,
) -> float:
    """Mean loss (nats per token) over consecutive, non-overlapping windows of ``data``.

    Deterministic: with ``max_batches=None`` every token of ``data`` (but a final partial
    window) is predicted exactly once, so two evaluations of a model always agree.
    """
    was_training = model.training
    model.eval()
    n = (len(data) - 1) // block_size
    if n == 0:
        raise ValueError(f"data has {len(data)} tokens; need more than block_size={block_size}")
    x_all = data[: n * block_size].view(n, block_size)
    y_all = data[1 : n * block_size + 1].view(n, block_size)
    total, count = 0.0, 0
    for i, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x_all[start : start + batch_size], y_all[start : start + batch_size]
        _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def train(
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Train ``model`` with AdamW on random windows of ``train_data``; evaluate on ``val_data``.

    Seeds its own random generators from ``config.seed``: the same model, data and config give
    the same losses. Quick validation estimates every ``eval_interval`` steps draw the curves;
    the reported ``val_loss`` is over the whole validation split.
    """
    torch.manual_seed(config.seed)  # dropout
    generator = torch.Generator().manual_seed(config.seed)
    # The fused implementation updates all parameters in one kernel: same algorithm, and on a
    # CPU with small models about twice as fast as the per-tensor loop.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    history: list[dict] = []
    recent: list[float] = []
    elapsed = 0.0
    model.train()
    bar = tqdm(
        range(1, config.max_steps + 1), desc=description, disable=not progress, mininterval=1.0
    )
    for step in bar:
        t0 = time.perf_counter()
        x, y = get_batch(train_data, config.block_size, config.batch_size, generator)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        else:
            grad_norm = math.nan
        optimizer.step()
        elapsed += time.perf_counter() - t0
        recent.append(loss.item())
        if step % config.eval_interval == 0 or step == config.max_steps:
            window = recent[-config.eval_interval :]
            val = evaluate(model, val_data, config.block_size, max_batches=config.eval_batches)
            history.append(
                {
                    "step": step,
                    "train_loss": sum(window) / len(window),
                    "val_loss": val,
                    "grad_norm": grad_norm,
                }
            )
            bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
    val_loss = evaluate(model, val_data, config.block_size)
    return TrainResult(
        val_loss=val_loss,
        train_loss=history[-1]["train_loss"],
        seconds=elapsed,
        steps=config.max_steps,
        n_params=sum(p.numel() for p in model.parameters()),
        history=history,
    )
