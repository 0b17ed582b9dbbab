"""The book's training loop (Lesson 8), used by every lesson that trains a model.

:func:`train` reads top to bottom: set up the runtime, wrap the model, then a loop of
:func:`train_step`, evaluation, logging and checkpoints. What it trains on and what it
minimises are arguments: a dataset with ``sample`` and ``batches`` methods (a token stream,
:class:`~llm_from_scratch.data.TokenWindows`, by default) and a loss function of
``(model, batch)`` (:func:`next_token_loss` by default). Lesson 10's supervised fine-tuning,
reward model and DPO go through this same loop, with its schedule, clipping, accumulation,
checkpoints, progress bar and logging.

``batch_size`` is always the *global* batch of one optimizer step. Gradient accumulation
(``grad_accum_steps``) and data parallelism (processes) only split that batch into smaller
pieces, so they change the speed and memory of a run, never its result.

>>> from llm_from_scratch.model import BigramLanguageModel
>>> data = torch.randint(0, 5, (1000,))
>>> config = TrainConfig(max_steps=10, eval_interval=5, block_size=8)
>>> result = train(BigramLanguageModel(5), data, data, config, progress=False)
>>> len(result.history)
2
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from llm_from_scratch import distributed, runtime
from llm_from_scratch.checkpoint import RunDir, TrainingRun
from llm_from_scratch.data import TokenWindows
from llm_from_scratch.optim import AdamW, cosine_lr, param_groups

#: Targets with this value are not predicted (padding, prompts): PyTorch's ``ignore_index``.
IGNORE_INDEX = -100

Batch = tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class Dataset(Protocol):
    """What :func:`train` trains on: random batches, and every example once for evaluation."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...


class RowDataset:
    """A :class:`Dataset` of indexed examples. A subclass gives ``__len__`` and ``_rows(index)``,
    the batch of the examples at ``index``; this class draws the rows."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _rows(self, rows: torch.Tensor) -> Batch:
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Random examples (with replacement), for training."""
        return self._rows(torch.randint(len(self), (batch_size,), generator=generator))

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Every example once, in order, for evaluation."""
        for start in range(0, len(self), batch_size):
            yield self._rows(torch.arange(start, min(start + batch_size, len(self))))


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The language-modelling loss: mean cross-entropy of next-token targets, in nats."""
    x, y = batch
    _, loss = model(x, y)
    return loss


def count_targets(batch: Batch) -> int:
    """How many targets a batch's mean loss averages: its last tensor's entries but ``-100``."""
    return int((batch[-1] != IGNORE_INDEX).sum())


OPTIMIZERS = ("torch", "scratch")
SCHEDULES = ("constant", "cosine")


def check_number(name: str, value: object, low: float, high: float = math.inf,
                  low_open: bool = False, integer: bool = False) -> None:
    """A clear error unless ``value`` is a finite number (an integer if asked) in range."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}"
        bound += f" and <= {high}" if high < math.inf else ""
        raise ValueError(f"{name} must be a finite {kind.__name__ if integer else 'number'} "
                         f"{bound}, got {value!r}")


@dataclass
class TrainConfig:
    """How to train. The defaults are the loss progression's plain loop (constant rate)."""

    block_size: int = 8  # context length of the training windows
    batch_size: int = 32  # sequences per optimizer step, over all micro-batches and processes
    max_steps: int = 3000
    learning_rate: float = 1e-3  # the peak rate, after warmup
    weight_decay: float = 0.0  # applied to weight matrices only (see optim.param_groups)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # clip the global gradient norm to this; None: no clipping
    schedule: str = "constant"  # "constant" or "cosine" (decay to min_lr at max_steps)
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_accum_steps: int = 1  # micro-batches per optimizer step (same gradients, less memory)
    optimizer: str = "torch"  # "torch": PyTorch's fused AdamW; "scratch": optim.AdamW
    eval_interval: int = 250  # steps between quick validation estimates (for curves)
    eval_batches: int = 20  # batches in each quick estimate
    seed: int = 1337
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: str = "float32"  # autocast: "bfloat16", "float16" (GPU only) or "auto" (by hardware)
    compile: bool = False  # torch.compile the training step's model (needs a C++ compiler on CPU)
    # CPU threads while training. None: as many as the machine has free, following its load
    # (fastest, but a model's last digits then depend on the load: matrix products sum in a
    # different order on another thread count). A number makes every run give the same losses.
    threads: int | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("block_size", "batch_size", "max_steps", "eval_interval", "eval_batches",
                     "grad_accum_steps"):
            check_number(name, getattr(self, name), 0, low_open=True, integer=True)
        check_number("warmup_steps", self.warmup_steps, 0, integer=True)
        check_number("seed", self.seed, -math.inf, integer=True)
        if self.threads is not None:
            check_number("threads", self.threads, 0, low_open=True, integer=True)
        check_number("learning_rate", self.learning_rate, 0, low_open=True)
        check_number("min_lr", self.min_lr, 0, self.learning_rate)
        check_number("weight_decay", self.weight_decay, 0)
        if self.grad_clip is not None:  # 0 would zero every gradient, a negative flip them
            check_number("grad_clip", self.grad_clip, 0, low_open=True)
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            check_number(f"betas[{i}]", beta, 0, 1, low_open=False)
            if beta == 1:
                raise ValueError(f"betas[{i}] must be below 1, got {beta}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by "
                             f"grad_accum_steps={self.grad_accum_steps}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("dtype", (*runtime.DTYPES, "auto"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device == "cpu" and self.dtype == "float16":
            raise ValueError("dtype float16 needs a GPU; on a CPU use bfloat16 or float32")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) ``step``."""
        if self.schedule == "constant":
            return cosine_lr(step, self.learning_rate, self.warmup_steps, math.inf)
        return cosine_lr(step, self.learning_rate, self.warmup_steps, self.max_steps, self.min_lr)


@dataclass
class TrainResult:
    """What a run produced: the final full validation loss, curves and timing."""

    val_loss: float  # mean loss over the whole validation set (nats per token for an LM)
    train_loss: float  # mean of the last eval_interval training losses
    seconds: float  # wall time of the optimisation loop (evaluation excluded)
    steps: int
    n_params: int
    history: list[dict] = field(default_factory=list)  # step, lr, losses, grad norm, speed
    tokens_per_second: float = 0.0  # training tokens per second of optimisation
    compile_seconds: float = 0.0  # time of the first step beyond a later one (torch.compile)
    dtype: str = "float32"  # the precision of the matmuls (TrainConfig.dtype, resolved)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def steady_seconds(self) -> float:
        """Seconds of optimisation once compiled: the first step's compilation is a fixed cost,
        not part of the rate."""
        return self.seconds - self.compile_seconds

    @property
    def steady_ms_per_step(self) -> float:
        return 1000 * self.steady_seconds / max(1, self.steps)

    @property
    def steady_tokens_per_second(self) -> float:
        return self.tokens_per_second * self.seconds / self.steady_seconds


@dataclass
class TrainState:
    """What a run carries from one step to the next, and saves in its checkpoints."""

    generator: torch.Generator  # draws the training batches
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # seconds of optimisation so far
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    recent: list[float] = field(default_factory=list)  # the last eval_interval training losses
    first_step_seconds: float = 0.0  # includes compiling, when the model is compiled
    last_step_seconds: float = 0.0

    def begin_step(self) -> None:
        """Remember the random state a step starts from (see :meth:`rewind_unfinished_step`)."""
        self._step_start = (self.step, self.generator.get_state(), torch.get_rng_state())

    def rewind_unfinished_step(self) -> None:
        """After an interruption inside a step, give back the random draws it made: the
        checkpoint must not mark its batch and dropout as used, or a resumed run skips them."""
        start = getattr(self, "_step_start", None)
        if start is not None and start[0] == self.step:
            self.generator.set_state(start[1])
            torch.set_rng_state(start[2])

    def record(self, loss: float, seconds: float, window: int) -> None:
        """Count one finished step: its loss and its time."""
        self.step += 1
        self.elapsed += seconds
        self.first_step_seconds = self.first_step_seconds or seconds
        self.last_step_seconds = seconds
        self.recent = [*self.recent, loss][-window:]

    def compile_seconds(self) -> float:
        """The first step's time beyond a later one's: what compiling cost."""
        return max(0.0, self.first_step_seconds - self.last_step_seconds) if self.step > 1 else 0.0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | torch.Tensor,
    block_size: int | None = None,
    batch_size: int = 256,
    max_batches: int | None = None,
    loss_fn: LossFn = next_token_loss,
) -> float:
    """Mean loss over ``data``'s batches, each weighted by the targets it counts.

    ``data`` is a dataset, or a tensor of token ids read as windows of ``block_size``. With
    ``max_batches=None`` every example is used exactly once, so two evaluations agree.
    """
    data = as_dataset(data, block_size)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with runtime.evaluating(model):
        for i, batch in enumerate(data.batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            n = count_targets(batch)
            total += loss_fn(model, tuple(t.to(device) for t in batch)).item() * n
            count += n
    return total / count


def as_dataset(data: Dataset | torch.Tensor, block_size: int | None) -> Dataset:
    """A dataset as is; a tensor of token ids as windows of ``block_size`` tokens."""
    if not isinstance(data, torch.Tensor):
        return data
    if block_size is None:
        raise ValueError("block_size is needed to read a tensor of token ids as windows")
    return TokenWindows(data, block_size)


def micro_batch_weights(counts: list[int], world_size: int = 1) -> list[float]:
    """Weights that turn micro-batch *mean* losses into the mean over the whole batch.

    Each micro-batch loss is a mean over its own counted targets (``-100`` is ignored). The
    step's loss is the mean over *all* counted targets, so micro-batch ``i`` must be weighted
    ``n_i / N``, not ``1 / k``: the two agree only when every micro-batch counts the same
    number of targets. Data-parallel training averages gradients over ``world_size``
    processes, hence the factor ``world_size`` (``N`` is then the count over all processes).

    >>> micro_batch_weights([2, 4])  # 2 and 4 counted targets: not 0.5 and 0.5
    [0.3333333333333333, 0.6666666666666666]
    """
    total = distributed.all_reduce_sum(float(sum(counts)))
    return [c * world_size / total for c in counts]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`~llm_from_scratch.optim.param_groups`: ours or PyTorch's fused one."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "scratch":
        return AdamW(groups, lr=config.learning_rate, betas=config.betas)
    # The fused implementation updates all parameters in one kernel: the same arithmetic as
    # optim.AdamW (Lesson 8 checks it), and with small models about twice as fast on a CPU.
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, fused=True)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: TrainConfig,
    lr: float,
    loss_fn: LossFn = next_token_loss,
    precision: contextlib.AbstractContextManager | None = None,
    world_size: int = 1,
) -> tuple[float, float]:
    """One optimizer step on ``batch``, in ``grad_accum_steps`` micro-batches: (loss, grad norm).

    ``precision`` is the autocast context of mixed precision. Raises ``FloatingPointError``
    before any weight changes if the loss is not finite.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro = list(zip(*(t.chunk(config.grad_accum_steps) for t in batch), strict=True))
    split = len(micro) > 1 or world_size > 1
    weights = micro_batch_weights([count_targets(b) for b in micro], world_size) if split else [1]
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for i, (micro_batch, weight) in enumerate(zip(micro, weights, strict=True)):
        # Gradients add up over micro-batches; DDP need only average them after the last one.
        with distributed.no_sync(model, sync=i == len(micro) - 1):
            with precision or contextlib.nullcontext():
                loss = loss_fn(model, micro_batch)
            (loss * weight).backward()
        loss_sum += loss.item() * weight
    loss_value = distributed.all_reduce_sum(loss_sum) / world_size
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"the training loss became {loss_value}")
    grad_norm = math.nan
    if config.grad_clip is not None:
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
    optimizer.step()
    return loss_value, grad_norm


def train(
    model: nn.Module,
    train_data: Dataset | torch.Tensor,
    val_data: Dataset | torch.Tensor,
    config: TrainConfig,
    *,
    loss_fn: LossFn = next_token_loss,
    run_dir: RunDir | None = None,
    progress: bool = True,
    description: str = "training",
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` on random batches of ``train_data``; evaluate on ``val_data``.

    Seeds its own random generators from ``config.seed``: the same model, data and config give
    the same losses. A tensor of token ids is read as windows of ``config.block_size``. Quick
    validation estimates every ``eval_interval`` steps draw the curves; the reported
    ``val_loss`` is over the whole validation set. ``run_dir`` keeps the log and checkpoints,
    resumable after Ctrl-C too. ``stop_after`` ends the run at that step, as a crash would.
    """
    rt = runtime.Runtime.setup(config)
    train_data = as_dataset(train_data, config.block_size)
    val_data = as_dataset(val_data, config.block_size)
    check_vocab(model, train_data=train_data, val_data=val_data)
    model.to(rt.device)
    torch.manual_seed(config.seed)  # dropout
    state = TrainState(torch.Generator().manual_seed(config.seed))
    optimizer = make_optimizer(model, config)
    run = TrainingRun(run_dir if rt.rank == 0 else None, model, optimizer, config, state)
    step_model = rt.wrap(model)
    last_step = config.max_steps if stop_after is None else min(stop_after, config.max_steps)
    bar = tqdm(range(state.step, last_step), desc=description, initial=state.step,
               total=last_step, disable=not progress or rt.rank != 0, mininterval=1.0)
    model.train()
    checked = runtime.inputs_checked_once(model)
    threads = runtime.fixed_threads(config.threads if rt.device.type == "cpu" else None)
    with run, bar, rt.kernels(), checked, threads, runtime.stop_requests() as stop:
        for _ in bar:
            t0 = time.perf_counter()
            lr = config.lr_at(state.step)
            state.begin_step()
            batch = train_data.sample(config.batch_size, state.generator)
            batch = tuple(distributed.shard(t, rt.rank, rt.world_size).to(rt.device)
                          for t in batch)
            loss, grad_norm = train_step(step_model, optimizer, batch, config, lr, loss_fn,
                                         rt.precision(), rt.world_size)
            state.record(loss, time.perf_counter() - t0, config.eval_interval)
            if config.threads is None:
                rt.fit_threads()  # another program may have taken a core since the last look
            if state.step % config.eval_interval == 0 or state.step == config.max_steps:
                row = log_evaluation(model, val_data, config, state, lr, grad_norm, loss_fn)
                bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
                run.log(row)
            if run.checkpoint_due(state.step):
                run.save()
            if stop.is_set():
                raise KeyboardInterrupt
        run.save()
    with runtime.fixed_threads(config.threads if rt.device.type == "cpu" else None):
        val_loss = evaluate(model, val_data, loss_fn=loss_fn)
    return TrainResult(
        val_loss=val_loss,
        train_loss=state.history[-1]["train_loss"] if state.history else math.nan,
        seconds=state.elapsed,
        steps=state.step,
        n_params=sum(p.numel() for p in model.parameters()),
        history=state.history,
        tokens_per_second=state.step * config.tokens_per_step / max(state.elapsed, 1e-9),
        compile_seconds=state.compile_seconds() if rt.compiled else 0.0,
        dtype=rt.dtype,
    )


def check_vocab(model: nn.Module, **datasets: Dataset) -> None:
    """A clear error, before training starts, for token ids the model has no embedding for."""
    for name, data in datasets.items():
        if hasattr(data, "check_vocab"):
            data.check_vocab(getattr(model, "vocab_size", None), name)


def log_evaluation(
    model: nn.Module,
    val_data: Dataset,
    config: TrainConfig,
    state: TrainState,
    lr: float,
    grad_norm: float,
    loss_fn: LossFn = next_token_loss,
) -> dict:
    """A quick validation estimate, recorded with the step's training figures in the history."""
    val = evaluate(model, val_data, max_batches=config.eval_batches, loss_fn=loss_fn)
    row = {
        "step": state.step,
        "lr": lr,
        "train_loss": sum(state.recent) / len(state.recent),
        "val_loss": val,
        "grad_norm": grad_norm,
        "elapsed": state.elapsed,
        "tokens_per_second": state.step * config.tokens_per_step / state.elapsed,
    }
    state.history.append(row)
    return row
