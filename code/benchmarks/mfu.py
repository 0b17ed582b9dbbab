"""Model FLOP utilisation of the book's training runs, each against this CPU's own matmul peak.

    python code/benchmarks/mfu.py                    # natively: the peak, then every run
    python code/benchmarks/mfu.py --common-cpu       # on the common-CPU path (float32, AVX2)
    python code/benchmarks/mfu.py book sft --steps 40

A training run can be slow because the CPU is slow or because the run wastes it. The first is
measured here as the float32 (and, where the CPU multiplies it fast, bfloat16) matrix-multiply
rate on the shapes the book's models multiply: the practical peak. The second is the run's
model FLOP utilisation (MFU): the arithmetic its model needs per second, ``6·N`` per token plus
attention (:func:`~llm_from_scratch.flops.flops_per_token`), over that peak. A run near the
peak can only get faster by doing less; a run far below it loses time to something other than
its model's matrix multiplies (Python per step, small kernels, waiting for threads).

Each run trains a few dozen steps of its real recipe (compiled where the recipe compiles, on the
thread count the book's trainer chooses), from a fresh model: speed does not depend on the
weights. The first steps, which compile, are timed apart. The time of the full recipe is the
steady rate times its steps, plus the compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from llm_from_scratch.flops import flops_per_token, matmul_rate
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.runtime import resolve_dtype
from llm_from_scratch.train import TrainConfig, next_token_loss, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import COMMON_CPU, summary_line  # noqa: E402

# ----------------------------------------------------------------------------- the peak


SECONDS_PER_SHAPE = 0.5


def model_shapes(config: GPTConfig, rows: int) -> dict[str, tuple[int, int, int]]:
    """The forward pass's weight multiplies for ``rows`` tokens: name -> ``(m, k, n)``."""
    C = config.n_embd
    return {"qkv": (rows, C, 3 * C), "proj": (rows, C, C), "fc": (rows, C, 4 * C),
            "fc_proj": (rows, 4 * C, C), "head": (rows, C, config.vocab_size)}


def peak(dtype: torch.dtype, shapes: dict[str, tuple[int, int, int]]) -> tuple[float, dict]:
    """The best rate over a 1024-square product and ``shapes``: (FLOP/s, rate per shape)."""
    rates = {"1024²": matmul_rate(1024, 1024, 1024, SECONDS_PER_SHAPE, dtype=dtype)}
    rates |= {name: matmul_rate(*shape, SECONDS_PER_SHAPE, dtype=dtype)
              for name, shape in shapes.items()}
    return max(rates.values()), rates


# ----------------------------------------------------------------------------- the runs


@dataclass
class Run:
    """One of the book's training runs, ready to train: what it trains and how."""

    name: str
    page: str  # where the book trains it
    model: torch.nn.Module
    config: GPTConfig
    train_data: object
    val_data: object
    recipe: TrainConfig
    flops_per_step: Callable[[], float]  # model FLOPs of one step's batch, measured on a sample
    loss_fn: Callable = next_token_loss


def _lm_run(name: str, page: str, config: GPTConfig, recipe: TrainConfig, data) -> Run:
    config = dataclasses.replace(config, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(recipe.seed)
    per_step = recipe.tokens_per_step * flops_per_token(config, recipe.block_size)
    return Run(name, page, GPT(config), config, data.train_ids, data.val_ids, recipe,
               lambda: per_step)


def book_run() -> Run:
    p = PRESETS["book"]
    return _lm_run("book model", "L08", p.model, p.train, p.data())


def progression_run(key: str) -> Run:
    from llm_from_scratch.data import shakespeare_tokens
    from llm_from_scratch.progression import PROGRESSION_TRAIN, row

    r = row(key)
    return _lm_run(f"progression: {key}", r.lesson, r.config, r.train or PROGRESSION_TRAIN,
                   shakespeare_tokens("char"))


def sft_run() -> Run:
    """Lesson 10's fine-tuning: the book model's shape (weights do not change the speed) on the
    chat tasks, with the pretraining rows mixed in, as :func:`~llm_from_scratch.sft.fine_tune`."""
    from llm_from_scratch import sft
    from llm_from_scratch.chat_template import add_chat_tokens

    p = PRESETS["book"]
    data = p.data()
    tokenizer = add_chat_tokens(data.tokenizer)
    config = dataclasses.replace(p.model, vocab_size=tokenizer.vocab_size)
    recipe = sft.SFT_RECIPE
    mixed, held_out = sft.sft_datasets(tokenizer, data.tokenizer, recipe)

    def flops_per_step(samples: int = 50) -> float:
        g = torch.Generator().manual_seed(0)
        total = 0.0
        for _ in range(samples):
            text_x, _, x, _ = mixed.sample(recipe.batch_size, g)
            for batch in (text_x, x):
                total += batch.numel() * flops_per_token(config, batch.shape[1])
        return total / samples

    torch.manual_seed(recipe.seed)
    return Run("SFT", "L10_1", GPT(config), config, mixed, held_out, recipe, flops_per_step,
               sft.mixed_loss(sft.TEXT_WEIGHT))


RUNS: dict[str, Callable[[], Run]] = {
    "book": book_run,
    "depth": lambda: progression_run("depth"),
    "recipe": lambda: progression_run("recipe"),
    "nanogpt": lambda: progression_run("nanogpt_cpu_3e3"),
    "sft": sft_run,
}


@dataclass
class Measured:
    run: Run
    first_steps_seconds: float  # the warm-up steps, compilation included
    ms_per_step: float  # steady
    flops_per_step: float
    dtype: str
    threads: int

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step / (self.ms_per_step / 1000)

    def recipe_seconds(self) -> float:
        """The full recipe's optimisation time at this rate (evaluation excluded)."""
        steps = self.run.recipe.max_steps
        return self.first_steps_seconds + (steps - WARMUP_STEPS) * self.ms_per_step / 1000


WARMUP_STEPS = 5


def measure(run: Run, steps: int) -> Measured:
    """Train ``WARMUP_STEPS`` steps (compiling), then ``steps`` more, timed; the evaluations
    the recipe would run are left out (``eval_interval`` past the end)."""
    total = WARMUP_STEPS + steps
    config = dataclasses.replace(run.recipe, max_steps=total, eval_interval=total + 1,
                                 eval_batches=1, schedule="constant", warmup_steps=0)
    times: list[float] = []

    def timed_loss(model, batch):
        times.append(time.perf_counter())
        return run.loss_fn(model, batch)

    start = time.perf_counter()
    train(run.model, run.train_data, run.val_data, config, loss_fn=timed_loss, progress=False)
    # times[i] is when step i began its forward pass (later calls are the closing evaluation):
    # from step WARMUP_STEPS on, the steps are steady.
    times = times[:total]
    first = times[WARMUP_STEPS] - start
    steady = (times[-1] - times[WARMUP_STEPS]) / (len(times) - 1 - WARMUP_STEPS)
    dtype = resolve_dtype(run.recipe.dtype, run.recipe.device)
    return Measured(run, first, 1000 * steady, run.flops_per_step(), dtype,
                    run.recipe.threads or torch.get_num_threads())


# ----------------------------------------------------------------------------- the report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help=f"runs to measure (default: all of {', '.join(RUNS)})")
    parser.add_argument("--steps", type=int, default=30, help="steady steps timed per run")
    parser.add_argument("--common-cpu", action="store_true",
                        help="re-run on the common-CPU path: float32, AVX2 kernels")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    unknown = [name for name in args.runs if name not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; runs are {', '.join(RUNS)}")
    if args.common_cpu and not os.environ.get("LLMFS_NO_BF16"):
        env = os.environ | COMMON_CPU
        argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--common-cpu"]
        return subprocess.call([sys.executable, __file__, *argv], env=env)

    print(f"Measured on: {summary_line()}")
    book = PRESETS["book"]
    rows = book.train.tokens_per_step
    shapes = model_shapes(book.model, rows)
    dtypes = [torch.float32]
    if resolve_dtype("auto", "cpu") == "bfloat16":
        dtypes.append(torch.bfloat16)
    peaks = {}
    for dtype in dtypes:
        peaks[str(dtype).removeprefix("torch.")], rates = peak(dtype, shapes)
        shown = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
        print(f"{dtype} matmul GFLOP/s on the book model's shapes ({rows} tokens): "
              f"{shown}; peak {max(rates.values()) / 1e9:.0f}")
    print()
    print("| run | page | dtype | threads | ms/step | GFLOP/step | GFLOP/s | MFU | "
          "first steps (s) | recipe steps | recipe time (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.runs or RUNS:
        m = measure(RUNS[name](), args.steps)
        utilisation = m.flops_per_second / peaks[m.dtype]
        print(f"| {m.run.name} | {m.run.page} | {m.dtype} | {m.threads} | {m.ms_per_step:.1f} | "
              f"{m.flops_per_step / 1e9:.2f} | {m.flops_per_second / 1e9:.1f} | "
              f"{utilisation:.0%} | {m.first_steps_seconds:.1f} | {m.run.recipe.max_steps:,} | "
              f"{m.recipe_seconds():.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
