"""The book's training pipeline (Lessons 3–8) and its command line.

Every lesson that trains a model calls :func:`train`, so that losses differ only by the model,
never by the loop. Lesson 8 builds the pieces up one by one: random batches and an honest
evaluation, AdamW with weight-decay groups, warmup and cosine decay, gradient clipping,
gradient accumulation, checkpoints that resume exactly, CSV logs and throughput, and
data-parallel training over several processes with ``torchrun``.

``batch_size`` is always the *global* batch of one optimizer step. Gradient accumulation
(``grad_accum_steps``) and data parallelism (processes) only split that batch into smaller
pieces, so they change the speed and memory of a run, never its result.

>>> import torch
>>> from llm_from_scratch.model import BigramLanguageModel
>>> data = torch.randint(0, 5, (1000,))
>>> config = TrainConfig(max_steps=10, eval_interval=5, block_size=8)
>>> result = train(BigramLanguageModel(5), data, data, config, progress=False)
>>> len(result.history)
2

The command line trains any configuration; ``--help`` lists the options and presets::

    python -m llm_from_scratch.train --preset nanogpt-cpu
    torchrun --nproc_per_node=2 -m llm_from_scratch.train --preset tiny
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.optim import AdamW, cosine_lr, param_groups

OPTIMIZERS = ("torch", "scratch")
SCHEDULES = ("constant", "cosine")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str) -> str:
    """``"auto"``: bfloat16 where the hardware multiplies it fast, else float32.

    GPUs from NVIDIA's Ampere generation on, and CPUs with bfloat16 matrix units (Intel AMX),
    multiply bfloat16 matrices several times faster than float32 ones; elsewhere a CPU
    converts bfloat16 in software and mixed precision would only slow training down.
    """
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bfloat16" if fast else "float32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bfloat16" if amx() else "float32"


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
    device: str = "cpu"
    dtype: str = "float32"  # autocast: "bfloat16", "float16" (GPU only) or "auto" (resolve_dtype)
    compile: bool = False  # torch.compile the training step's model (needs a C++ compiler on CPU)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("block_size", "batch_size", "max_steps", "eval_interval", "eval_batches",
                     "grad_accum_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, min_lr and weight_decay must not be negative")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by "
                f"grad_accum_steps={self.grad_accum_steps}"
            )
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("dtype", (*DTYPES, "auto"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) ``step``."""
        if self.schedule == "constant":
            return cosine_lr(step, self.learning_rate, self.warmup_steps, math.inf)
        return cosine_lr(step, self.learning_rate, self.warmup_steps, self.max_steps, self.min_lr)


@dataclass
class TrainResult:
    """What a run produced: the final full validation loss, curves and timing."""

    val_loss: float  # mean nats per token over the whole validation split
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
    device = next(model.parameters()).device
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
        _, loss = model(x.to(device), y.to(device))
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def micro_batch_weights(targets: list[torch.Tensor], world_size: int = 1) -> list[float]:
    """Weights that turn micro-batch *mean* losses into the mean over the whole batch.

    Each micro-batch loss is a mean over its own counted targets (``-100`` is ignored). The
    step's loss is the mean over *all* counted targets, so micro-batch ``i`` must be weighted
    ``n_i / N``, not ``1 / k``: the two agree only when every micro-batch counts the same
    number of targets. Data-parallel training averages gradients over ``world_size``
    processes, hence the factor ``world_size`` (``N`` is then the count over all processes).

    >>> y = [torch.tensor([[1, 2, -100, -100]]), torch.tensor([[1, 2, 3, 4]])]
    >>> micro_batch_weights(y)  # 2 and 4 counted targets: not 0.5 and 0.5
    [0.3333333333333333, 0.6666666666666666]
    """
    counts = [int((y != -100).sum()) for y in targets]
    total = torch.tensor(float(sum(counts)))
    if world_size > 1:
        dist.all_reduce(total)
    return [c * world_size / float(total) for c in counts]


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` atomically (a crash mid-write never corrupts the previous checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def training_state(
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: TrainConfig,
) -> dict:
    """Everything the next step depends on, as tensors and plain data (``weights_only``-safe).

    The optimizer's moments and step count, and both random generators (the one that draws
    batches and the global one that drives dropout): without any of them, a resumed run
    silently becomes a different run.
    """
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "train_config": config.to_dict(),
    }


def restore_training_state(
    state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    """Put a model, its optimizer and the random generators back where ``state`` left them."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


# ----------------------------------------------------------------------------- distributed


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group when launched by ``torchrun``."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


# ----------------------------------------------------------------------------- training


def compiler_available() -> bool:
    """Whether ``torch.compile`` can build CPU kernels here: it needs a C++ compiler."""
    names = [os.environ.get("CXX", ""), "g++", "clang++", "c++", "cl"]
    return any(name and shutil.which(name) for name in names)


def check_token_data(data: torch.Tensor, vocab_size: int | None, name: str) -> None:
    """A clear error for token ids the model has no embedding for, checked once per dataset."""
    if vocab_size is None or not data.numel():
        return
    low, high = int(data.min()), int(data.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} holds token ids from {low} to {high}, but the model's vocabulary has "
            f"{vocab_size} tokens. Was it encoded with a different tokenizer?"
        )


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True):
    """Run the block with ``torch.use_deterministic_algorithms``, then restore the setting.

    Compiled CPU kernels may split a sum between threads in an order that varies from run to
    run; in deterministic mode they do not, so a seed fixes the losses of a compiled run too.
    """
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over :func:`~llm_from_scratch.optim.param_groups`: ours or PyTorch's fused one."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "scratch":
        return AdamW(groups, lr=config.learning_rate, betas=config.betas)
    # The fused implementation updates all parameters in one kernel: the same arithmetic as
    # optim.AdamW (Lesson 8 checks it), and with small models about twice as fast on a CPU.
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=config.betas, fused=True)


def train(
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    progress: bool = True,
    description: str = "training",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_interval: int | None = None,
    resume: bool = False,
    log_csv: str | os.PathLike | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` on random windows of ``train_data``; evaluate on ``val_data``.

    Seeds its own random generators from ``config.seed``: the same model, data and config give
    the same losses. Quick validation estimates every ``eval_interval`` steps draw the curves;
    the reported ``val_loss`` is over the whole validation split.

    ``checkpoint`` is written every ``checkpoint_interval`` steps and at the end; with
    ``resume=True`` training continues from it and produces the losses an uninterrupted run
    would. ``stop_after`` ends the run early at that step (to simulate an interruption).
    ``log_csv`` receives one row per evaluation. Launched by ``torchrun``, each process
    computes its share of every batch and gradients are averaged across processes.
    """
    rank, world_size = distributed_context()
    if (config.batch_size // config.grad_accum_steps) % world_size:
        raise ValueError(
            f"batch_size={config.batch_size} does not split into {config.grad_accum_steps} "
            f"micro-batches on each of {world_size} processes"
        )
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but PyTorch sees no GPU; use --device cpu")
    model.to(device)
    vocab_size = getattr(model, "vocab_size", None)
    check_token_data(train_data, vocab_size, "train_data")
    check_token_data(val_data, vocab_size, "val_data")
    # Mixed precision: matmuls in 16 bits, weights, optimizer and sums in float32. On a CPU
    # only bfloat16 is offered, and it pays only where the CPU has bfloat16 matrix units.
    dtype = resolve_dtype(config.dtype, device.type)
    if device.type == "cpu" and dtype == "float16":
        raise ValueError("dtype float16 needs a GPU; on a CPU use bfloat16 or float32")
    autocast = (
        torch.autocast(device.type, dtype=DTYPES[dtype])
        if dtype != "float32"
        else contextlib.nullcontext()
    )
    torch.manual_seed(config.seed)  # dropout
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    history: list[dict] = []
    recent: list[float] = []
    elapsed, start_step = 0.0, 1
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state["train_config"] != config.to_dict():
            raise ValueError(f"{checkpoint} was written by a different TrainConfig")
        restore_training_state(state, model, optimizer, generator)
        history, recent, elapsed = state["history"], state["recent"], state["elapsed"]
        start_step = state["step"] + 1

    def save(step: int) -> None:
        if checkpoint is None or rank != 0:
            return
        state = training_state(step, model, optimizer, generator, config)
        state.update(history=history, recent=recent, elapsed=elapsed)
        save_checkpoint(checkpoint, state)

    tokens_per_step = config.batch_size * config.block_size
    per_process = config.batch_size // world_size
    last_step = config.max_steps if stop_after is None else min(stop_after, config.max_steps)
    # Data parallelism: DDP broadcasts rank 0's weights at start and averages gradients across
    # processes during backward(), overlapping communication with computation.
    ddp_model = (
        nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    )
    compiled = config.compile and (device.type != "cpu" or compiler_available())
    if config.compile and not compiled:
        tqdm.write("compile=True but no C++ compiler was found: training without torch.compile")
    if compiled:
        # torch.compile traces the step once and fuses its element-wise work into a few
        # generated kernels; the first step pays for the compilation. Evaluation stays eager.
        ddp_model = torch.compile(ddp_model, dynamic=False)
    step_seconds: list[float] = []
    model.train()
    bar = tqdm(
        range(start_step, last_step + 1),
        desc=description,
        disable=not progress or rank != 0,
        mininterval=1.0,
    )
    with deterministic_kernels(compiled and device.type == "cpu"):
        for step in bar:
            t0 = time.perf_counter()
            lr = config.lr_at(step - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Every process draws the same global batch and keeps its own slice of it.
            x, y = get_batch(train_data, config.block_size, config.batch_size, generator)
            x = x[rank * per_process : (rank + 1) * per_process].to(device)
            y = y[rank * per_process : (rank + 1) * per_process].to(device)
            xs, ys = x.chunk(config.grad_accum_steps), y.chunk(config.grad_accum_steps)
            split = len(ys) > 1 or world_size > 1
            weights = micro_batch_weights(list(ys), world_size) if split else [1.0]
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i, (xb, yb, w) in enumerate(zip(xs, ys, weights, strict=True)):
                # Gradients add up across micro-batches; DDP need only average them after the last.
                last = i == len(xs) - 1
                sync = contextlib.nullcontext() if last or world_size == 1 else ddp_model.no_sync()
                with sync, autocast:
                    _, loss = ddp_model(xb, yb)
                (loss * w).backward()
                step_loss += loss.item() * w
            if world_size > 1:
                loss_t = torch.tensor(step_loss, device=device)
                dist.all_reduce(loss_t)
                step_loss = float(loss_t) / world_size
            if config.grad_clip is not None:
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            else:
                grad_norm = math.nan
            optimizer.step()
            step_seconds.append(time.perf_counter() - t0)
            elapsed += step_seconds[-1]
            recent.append(step_loss)
            del recent[: -config.eval_interval]
            if step % config.eval_interval == 0 or step == config.max_steps:
                val = evaluate(model, val_data, config.block_size, max_batches=config.eval_batches)
                history.append(
                    {
                        "step": step,
                        "lr": lr,
                        "train_loss": sum(recent) / len(recent),
                        "val_loss": val,
                        "grad_norm": grad_norm,
                        "elapsed": elapsed,
                        "tokens_per_second": step * tokens_per_step / elapsed,
                    }
                )
                bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
                if log_csv is not None and rank == 0:
                    _append_csv(log_csv, history[-1])
            if checkpoint_interval and step % checkpoint_interval == 0:
                save(step)
    bar.close()
    save(last_step)
    val_loss = evaluate(model, val_data, config.block_size)
    return TrainResult(
        val_loss=val_loss,
        train_loss=history[-1]["train_loss"] if history else math.nan,
        seconds=elapsed,
        steps=last_step,
        n_params=sum(p.numel() for p in model.parameters()),
        history=history,
        tokens_per_second=last_step * tokens_per_step / elapsed if elapsed else 0.0,
        dtype=dtype,
        compile_seconds=(
            max(0.0, step_seconds[0] - step_seconds[-1])
            if compiled and len(step_seconds) > 1 else 0.0
        ),
    )


def _append_csv(path: str | os.PathLike, row: dict) -> None:
    path = Path(path)
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


# ----------------------------------------------------------------------------- presets and CLI


@dataclass(frozen=True)
class Preset:
    """A named run: the model, how to train it and which tokenizer feeds it."""

    model: GPTConfig
    train: TrainConfig
    tokenizer: str = "char"  # "char" or "bpe" (the Lesson 1 tokenizer, trained on the train split)
    vocab_size: int | None = None  # BPE only: vocabulary size, special tokens included
    note: str = ""


# nanoGPT's train_shakespeare_char recipe (Karpathy, 2023): no biases, exact GELU, betas
# (0.9, 0.99), warmup then cosine decay to a tenth of the peak rate, weight decay 0.1. Quick
# validation estimates (for the curves) use about as many windows as nanoGPT's: one batch of
# 256 windows on a CPU (nanoGPT: 20 x 12), 50 on a GPU (200 x 64).
_NANOGPT_TRAIN = dict(
    learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, schedule="cosine", weight_decay=0.1,
    betas=(0.9, 0.99), grad_clip=1.0, eval_interval=250,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False),
        TrainConfig(block_size=16, batch_size=8, max_steps=40, eval_batches=4,
                    **{**_NANOGPT_TRAIN, "warmup_steps": 5, "eval_interval": 20}),
        note="seconds on a CPU; for tests and for trying the command line",
    ),
    "nanogpt-cpu": Preset(
        GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False,
                  gelu="none"),
        # nanoGPT's 1e-3 comes from its 10.8M-parameter GPU recipe; this 0.8M model learns
        # faster at 3e-3 (validation 1.90 -> 1.78 nats/char at 2,000 steps; 2e-3: 1.81, 4e-3:
        # 1.77). --learning-rate 1e-3 --min-lr 1e-4 --dtype float32 is nanoGPT's run exactly.
        TrainConfig(block_size=64, batch_size=12, max_steps=2000, eval_batches=1,
                    dtype="auto", compile=True,
                    **{**_NANOGPT_TRAIN, "learning_rate": 3e-3, "min_lr": 3e-4}),
        note="nanoGPT's CPU configuration of its README: about a minute on a laptop",
    ),
    "nanogpt-gpu": Preset(
        GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False,
                  dropout=0.2, gelu="none"),
        TrainConfig(block_size=256, batch_size=64, max_steps=5000, eval_batches=50,
                    device="cuda", dtype="bfloat16", **_NANOGPT_TRAIN),
        note="nanoGPT's shakespeare_char GPU configuration, 10.8M parameters: val ~1.47",
    ),
    "book": Preset(
        GPTConfig(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=256),
        TrainConfig(block_size=128, batch_size=16, max_steps=800, eval_batches=1, dtype="auto",
                    compile=True, **{**_NANOGPT_TRAIN, "learning_rate": 2e-3, "min_lr": 2e-4,
                       "warmup_steps": 50, "eval_interval": 100}),
        tokenizer="bpe",
        vocab_size=1024,
        note="the book's model (Lessons 8-10): BPE tokens, under 5 minutes on a 2-core CPU",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm_from_scratch.train",
        description="Train a GPT on Tiny Shakespeare. A preset sets every option; flags "
        "override it. Under torchrun, processes split each batch (data parallelism).",
        epilog="presets: " + "; ".join(f"{k}: {p.note}" for k, p in PRESETS.items()),
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="nanogpt-cpu")
    model = parser.add_argument_group("model (GPTConfig)")
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        model.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    model.add_argument("--dropout", type=float)
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None)
    run = parser.add_argument_group("training (TrainConfig)")
    for name in ("batch_size", "max_steps", "warmup_steps", "grad_accum_steps",
                 "eval_interval", "eval_batches", "seed"):
        run.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    for name in ("learning_rate", "min_lr", "weight_decay"):
        run.add_argument(f"--{name.replace('_', '-')}", type=float, dest=name)
    run.add_argument("--grad-clip", type=float, dest="grad_clip", help="0 disables clipping")
    run.add_argument("--schedule", choices=SCHEDULES)
    run.add_argument("--optimizer", choices=OPTIMIZERS)
    run.add_argument("--device", help="cpu or cuda")
    run.add_argument("--dtype", choices=[*sorted(DTYPES), "auto"],
                     help="mixed precision: bfloat16/float16 matmuls; auto picks by hardware")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="torch.compile the model (fused kernels; the first step compiles)")
    data = parser.add_argument_group("data")
    data.add_argument("--tokenizer", choices=("char", "bpe"))
    data.add_argument("--vocab-size", type=int, dest="vocab_size", help="BPE vocabulary size")
    out = parser.add_argument_group("output")
    out.add_argument("--out-dir", help="write log.csv, checkpoint.pt and result.json here")
    out.add_argument("--resume", action="store_true", help="continue from out-dir's checkpoint")
    out.add_argument("--checkpoint-interval", type=int, default=None)
    out.add_argument("--threads", type=int, help="torch.set_num_threads (per process)")
    out.add_argument("--no-progress", action="store_true")
    return parser


def configure(args: argparse.Namespace) -> Preset:
    """The preset named by ``args.preset`` with the command line's overrides applied."""
    p = PRESETS[args.preset]
    over = vars(args)
    model = dataclasses.replace(
        p.model,
        **{k: over[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")
           if over[k] is not None},
    )
    train_over = {
        k: over[k]
        for k in ("batch_size", "max_steps", "warmup_steps", "grad_accum_steps", "eval_interval",
                  "eval_batches", "seed", "learning_rate", "min_lr", "weight_decay",
                  "schedule", "optimizer", "device", "dtype", "compile", "block_size")
        if over[k] is not None
    }
    if over["grad_clip"] is not None:
        train_over["grad_clip"] = over["grad_clip"] or None
    return Preset(
        model,
        dataclasses.replace(p.train, **train_over),
        over["tokenizer"] or p.tokenizer,
        over["vocab_size"] or p.vocab_size,
        p.note,
    )


def main(argv: list[str] | None = None) -> TrainResult:
    """The command line: train, log, and print the final validation loss."""
    from llm_from_scratch.book import preset_data  # book imports this module: import late
    from llm_from_scratch.flops import flops_per_token

    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        preset = configure(args)  # GPTConfig and TrainConfig validate every value
    except ValueError as err:
        parser.error(str(err))
    if preset.train.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but PyTorch sees no GPU (is the CPU build installed?)")
    if args.resume and not (args.out_dir and (Path(args.out_dir) / "checkpoint.pt").is_file()):
        parser.error(f"--resume needs a checkpoint: no checkpoint.pt in --out-dir {args.out_dir}")
    rank, world_size = distributed_context()
    data = preset_data(preset)
    config = dataclasses.replace(preset.model, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(preset.train.seed)
    model = GPT(config)
    out = Path(args.out_dir) if args.out_dir else None
    if out is not None and not args.resume and rank == 0:
        (out / "log.csv").unlink(missing_ok=True)
    if rank == 0:
        print(f"{args.preset}: {model.num_parameters():,} parameters, {world_size} process(es), "
              f"{preset.tokenizer} tokens (vocab {config.vocab_size})", flush=True)
    result = train(
        model, data.train_ids, data.val_ids, preset.train,
        progress=not args.no_progress, description=args.preset,
        checkpoint=out / "checkpoint.pt" if out else None,
        checkpoint_interval=args.checkpoint_interval, resume=args.resume,
        log_csv=out / "log.csv" if out else None,
    )
    if rank == 0:
        per_char = data.per_char(result.val_loss)
        summary = {
            "preset": args.preset, "model": config.to_dict(), "train": preset.train.to_dict(),
            "tokenizer": preset.tokenizer, "world_size": world_size,
            "val_loss": result.val_loss, "val_loss_per_char": per_char,
            "train_loss": result.train_loss, "seconds": result.seconds, "steps": result.steps,
            "compile_seconds": result.compile_seconds,
            # per step once compiled: what the run's remaining steps cost
            "ms_per_step": result.steady_ms_per_step,
            "dtype": result.dtype,
            "tokens_per_second": result.tokens_per_second,
            "model_flops_per_second": result.tokens_per_second * flops_per_token(config),
            "n_params": result.n_params,
        }
        if out is not None:
            (out / "result.json").write_text(json.dumps(summary, indent=1))
        compiled = (f", {result.compile_seconds:.1f} s of it compiling"
                    if preset.train.compile else "")
        print(f"trained {result.steps} steps in {result.seconds:.1f} s{compiled} "
              f"({summary['ms_per_step']:.1f} ms/step, {result.dtype} matmuls)")
        print(f"final validation loss: {result.val_loss:.4f} nats/token, "
              f"{per_char:.4f} nats/char", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
