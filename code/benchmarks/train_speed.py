"""Training speed of the book's pipeline on nanoGPT's CPU configuration.

    python code/benchmarks/train_speed.py            # 200 steps: ms/step, tokens/s, MFU
    python code/benchmarks/train_speed.py --full     # all 2,000 steps, and the validation loss

nanoGPT's README trains this configuration on a CPU (4 layers, 4 heads, 128 dims, block 64,
batch 12, 2,000 iterations); on the book's 2-core build machine nanoGPT takes about 33 ms per
iteration and reaches a validation loss of 1.886. The script prints ours for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from llm_from_scratch.book import preset_data
from llm_from_scratch.flops import flops_per_token, matmul_peak_flops
from llm_from_scratch.model import GPT
from llm_from_scratch.train import PRESETS, train

NANOGPT_MS_PER_ITER = 33.0  # nanoGPT on the book's build machine, as measured for issue #4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="train all steps, report the loss")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--preset", default="nanogpt-cpu", choices=sorted(PRESETS))
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    config = preset.train
    if not args.full:
        config = dataclasses.replace(
            config, max_steps=args.steps, eval_interval=args.steps, eval_batches=1
        )
    data = preset_data(preset)
    model_config = dataclasses.replace(preset.model, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(config.seed)
    model = GPT(model_config)
    result = train(model, data.train_ids, data.val_ids, config, description=args.preset)
    peak = matmul_peak_flops()
    ms = 1000 * result.seconds / result.steps
    achieved = result.tokens_per_second * flops_per_token(model_config)
    print(
        f"{args.preset}: {result.steps} steps, {ms:.1f} ms/step, "
        f"{result.tokens_per_second:,.0f} tokens/s on {torch.get_num_threads()} threads"
    )
    print(
        f"model FLOPs: {achieved / 1e9:.1f} GFLOP/s of a measured {peak / 1e9:.0f} GFLOP/s "
        f"matmul peak (MFU {achieved / peak:.0%})"
    )
    if args.preset == "nanogpt-cpu":
        print(
            f"nanoGPT here: about {NANOGPT_MS_PER_ITER:.0f} ms/iteration -> ours is "
            f"{NANOGPT_MS_PER_ITER / ms:.2f}x its iteration rate"
        )
    if args.full:
        print(f"validation loss: {data.per_char(result.val_loss):.4f} nats per character")


if __name__ == "__main__":
    main()
