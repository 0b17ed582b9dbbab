"""Training speed of the book's pipeline on nanoGPT's CPU configuration, next to nanoGPT's.

    python code/benchmarks/train_speed.py            # 3 rounds of 200 steps, ours and nanoGPT's
    python code/benchmarks/train_speed.py --full     # then all 2,000 steps, and the loss

nanoGPT's README trains this configuration on a CPU (4 layers, 4 heads, 128 dims, block 64,
batch 12, 2,000 iterations; float32, no compilation); on the book's 2-core build machine nanoGPT
takes about 33 ms per iteration and reaches a validation loss of 1.886. Our preset compiles the
model (during the first step) and multiplies in bfloat16 where the CPU has matrix units for it.

The speed of a shared machine drifts by tens of percent from minute to minute, so the script
alternates rounds of our trainer and of nanoGPT's model and step (``nanogpt_reference.py``) and
reports the ratio within each round, and the share of CPU time the hypervisor took ("steal").
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from nanogpt_reference import NanoGPT, make_step

from llm_from_scratch.data import get_batch
from llm_from_scratch.flops import flops_per_token, matmul_peak_flops
from llm_from_scratch.model import GPT
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.train import train

NANOGPT_MS_PER_ITER = 33.0  # nanoGPT on the book's build machine, as measured for issue #4
PRESET = "nanogpt-cpu"


def steal_ticks() -> int | None:
    """CPU time taken by the hypervisor so far (Linux ``/proc/stat``), in clock ticks."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    fields = stat.read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else None


def ours(data, steps: int, progress: bool = False):
    """Our trainer for ``steps`` steps: (ms per step once compiled, the TrainResult)."""
    preset = PRESETS[PRESET]
    config = preset.train
    if steps != config.max_steps:
        config = dataclasses.replace(config, max_steps=steps, eval_interval=steps)
    model_config = dataclasses.replace(preset.model, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(config.seed)
    result = train(GPT(model_config), data.train_ids, data.val_ids, config, progress=progress,
                   description=PRESET)
    return result.steady_ms_per_step, result


def nanogpt(data, steps: int, warmup: int = 5) -> float:
    """nanoGPT's model and step in float32, eager: ms per step (batches drawn in the loop)."""
    m, t = PRESETS[PRESET].model, PRESETS[PRESET].train
    torch.manual_seed(t.seed)
    step = make_step(NanoGPT(data.tokenizer.vocab_size, m.block_size, m.n_layer, m.n_head,
                             m.n_embd))
    generator = torch.Generator().manual_seed(t.seed)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        step(*get_batch(data.train_ids, t.block_size, t.batch_size, generator))
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (0: none)")
    parser.add_argument("--steps", type=int, default=200, help="steps per round")
    parser.add_argument("--full", action="store_true", help="then train all steps, report loss")
    args = parser.parse_args()
    data = PRESETS[PRESET].data()
    ratios = []
    for r in range(1, args.rounds + 1):
        steal, start = steal_ticks(), time.perf_counter()
        ms_ours, result = ours(data, args.steps)
        ms_ref = nanogpt(data, args.steps)
        wall = time.perf_counter() - start
        stolen = ""
        if steal is not None:
            share = (steal_ticks() - steal) / 100 / (wall * torch.get_num_threads())  # USER_HZ
            stolen = f", hypervisor steal {share:.0%}"
        ratios.append(ms_ref / ms_ours)
        print(f"round {r}: ours {ms_ours:.1f} ms/step ({result.dtype}, compiled in "
              f"{result.compile_seconds:.1f} s), nanoGPT {ms_ref:.1f} ms/step: "
              f"{ratios[-1]:.2f}x{stolen}", flush=True)
    if ratios:
        print(f"median over {len(ratios)} rounds: ours is {statistics.median(ratios):.2f}x "
              f"nanoGPT's iteration rate on {torch.get_num_threads()} threads")
    if args.full:
        ms, result = ours(data, PRESETS[PRESET].train.max_steps, progress=True)
        model_config = dataclasses.replace(PRESETS[PRESET].model,
                                           vocab_size=data.tokenizer.vocab_size)
        tokens_per_second = 1000 * PRESETS[PRESET].train.batch_size * model_config.block_size / ms
        peak = matmul_peak_flops(dtype=getattr(torch, result.dtype))
        achieved = tokens_per_second * flops_per_token(model_config)
        print(f"{PRESET}: {result.steps} steps in {result.seconds:.1f} s "
              f"({result.compile_seconds:.1f} s compiling), then {ms:.1f} ms/step, "
              f"{tokens_per_second:,.0f} tokens/s")
        print(f"model FLOPs: {achieved / 1e9:.1f} GFLOP/s of a measured {peak / 1e9:.0f} GFLOP/s "
              f"{result.dtype} matmul peak (MFU {achieved / peak:.0%})")
        print(f"against nanoGPT's {NANOGPT_MS_PER_ITER:.0f} ms/iteration measured for issue #4: "
              f"{NANOGPT_MS_PER_ITER / ms:.2f}x")
        print(f"validation loss: {data.per_char(result.val_loss):.4f} nats per character "
              f"(nanoGPT: 1.886)")


if __name__ == "__main__":
    main()
