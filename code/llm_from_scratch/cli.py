"""The command line: ``python -m llm_from_scratch train`` trains any preset (Lesson 8).

A preset sets every option and flags override it; ``--help`` lists them. Mistakes in the
options are usage errors, reported before any data is prepared. A run writes ``log.csv``,
``checkpoint.pt`` and ``result.json`` into ``--out-dir`` (default ``runs/<preset>``); Ctrl-C
saves a checkpoint that ``--resume`` continues.

    python -m llm_from_scratch train --preset nanogpt-cpu
    torchrun --nproc_per_node=2 -m llm_from_scratch train --preset tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch

from llm_from_scratch import distributed
from llm_from_scratch.checkpoint import RunDir
from llm_from_scratch.data import TOKENIZERS
from llm_from_scratch.flops import flops_per_token
from llm_from_scratch.model import GPT
from llm_from_scratch.presets import PRESETS, Preset
from llm_from_scratch.runtime import DTYPES
from llm_from_scratch.train import OPTIMIZERS, SCHEDULES, TrainResult, train

MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")
TRAIN_FLAGS = ("batch_size", "max_steps", "warmup_steps", "grad_accum_steps", "eval_interval",
               "eval_batches", "seed", "learning_rate", "min_lr", "weight_decay", "schedule",
               "optimizer", "device", "dtype", "compile", "block_size")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm_from_scratch train",
        description="Train a GPT on Tiny Shakespeare. A preset sets every option; flags "
        "override it. Under torchrun, processes split each batch (data parallelism).",
        epilog="presets: " + "; ".join(f"{k}: {p.note}" for k, p in PRESETS.items()),
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="nanogpt-cpu")
    model = p.add_argument_group("model (GPTConfig)")
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        model.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    model.add_argument("--dropout", type=float)
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None)
    run = p.add_argument_group("training (TrainConfig)")
    for name in ("batch_size", "max_steps", "warmup_steps", "grad_accum_steps",
                 "eval_interval", "eval_batches", "seed"):
        run.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    for name in ("learning_rate", "min_lr", "weight_decay"):
        run.add_argument(f"--{name.replace('_', '-')}", type=float, dest=name)
    run.add_argument("--grad-clip", type=float, dest="grad_clip", help="0 disables clipping")
    run.add_argument("--schedule", choices=SCHEDULES)
    run.add_argument("--optimizer", choices=OPTIMIZERS)
    run.add_argument("--device", help="cpu, cuda or cuda:N")
    run.add_argument("--dtype", choices=[*sorted(DTYPES), "auto"],
                     help="mixed precision: bfloat16/float16 matmuls; auto picks by hardware")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                     help="torch.compile the model (fused kernels; the first step compiles)")
    data = p.add_argument_group("data")
    data.add_argument("--tokenizer", choices=TOKENIZERS)
    data.add_argument("--vocab-size", type=int, dest="vocab_size", help="BPE vocabulary size")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", help="where log.csv, checkpoint.pt and result.json go "
                     "(default: runs/<preset>)")
    out.add_argument("--resume", action="store_true", help="continue from out-dir's checkpoint")
    out.add_argument("--overwrite", action="store_true", help="replace a finished run in out-dir")
    out.add_argument("--checkpoint-interval", type=int, default=None)
    out.add_argument("--threads", type=int, help="torch.set_num_threads (per process)")
    out.add_argument("--no-progress", action="store_true")
    return p


def configure(args: argparse.Namespace) -> Preset:
    """The preset named by ``args.preset`` with the command line's overrides applied."""
    p = PRESETS[args.preset]
    over = vars(args)
    model = dataclasses.replace(p.model, **{k: over[k] for k in MODEL_FLAGS if over[k] is not None})
    train_over = {k: over[k] for k in TRAIN_FLAGS if over[k] is not None}
    if over["grad_clip"] is not None:
        train_over["grad_clip"] = over["grad_clip"] or None
    return Preset(model, dataclasses.replace(p.train, **train_over),
                  over["tokenizer"] or p.tokenizer, over["vocab_size"] or p.vocab_size, p.note)


def train_main(argv: list[str] | None = None) -> TrainResult:
    """Train, log, and print the final validation loss."""
    ap = parser()
    args = ap.parse_args(argv)
    try:  # GPTConfig, TrainConfig, Preset and RunDir check every value
        preset = configure(args)
        run_dir = RunDir(args.out_dir or f"runs/{args.preset}", resume=args.resume,
                         overwrite=args.overwrite, checkpoint_interval=args.checkpoint_interval)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
    except ValueError as err:
        ap.error(str(err))
    if preset.train.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda, but PyTorch sees no GPU (is the CPU build installed?)")
    if args.resume and not run_dir.checkpoint.is_file():
        ap.error(f"--resume needs a checkpoint: no checkpoint.pt in {run_dir.path}")
    if not (args.resume or args.overwrite) and run_dir.checkpoint.exists():
        ap.error(f"{run_dir.path} already holds a run: add --resume to continue it, --overwrite "
                 "to replace it, or choose another --out-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world_size = distributed.distributed_context()
    data = preset.data()
    config = dataclasses.replace(preset.model, vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(preset.train.seed)
    model = GPT(config)
    if rank == 0:
        print(f"{args.preset}: {model.num_parameters():,} parameters, {world_size} process(es), "
              f"{preset.tokenizer} tokens (vocab {config.vocab_size}), run in {run_dir.path}",
              flush=True)
    try:
        result = train(model, data.train_ids, data.val_ids, preset.train, run_dir=run_dir,
                       progress=not args.no_progress, description=args.preset)
    except (RuntimeError, ValueError, FileExistsError, FileNotFoundError) as err:
        # A run directory in use or holding another run, a checkpoint of other settings.
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"continue with: --out-dir {run_dir.path} --resume (and the same options)",
              file=sys.stderr)
        raise SystemExit(130) from None
    if rank == 0:
        report(args.preset, preset, config, data.per_char(result.val_loss), result, world_size,
               run_dir)
    distributed.finish()
    return result


def report(name, preset, config, per_char, result, world_size, run_dir) -> None:
    """Write ``result.json`` and print the run's summary."""
    summary = {
        "preset": name, "model": config.to_dict(), "train": preset.train.to_dict(),
        "tokenizer": preset.tokenizer, "world_size": world_size,
        "val_loss": result.val_loss, "val_loss_per_char": per_char,
        "train_loss": result.train_loss, "seconds": result.seconds, "steps": result.steps,
        "compile_seconds": result.compile_seconds,
        "ms_per_step": result.steady_ms_per_step,  # per step once compiled
        "dtype": result.dtype,
        "tokens_per_second": result.tokens_per_second,
        "model_flops_per_second": result.tokens_per_second * flops_per_token(config),
        "n_params": result.n_params,
    }
    run_dir.result_json.write_text(json.dumps(summary, indent=1))
    compiled = f", {result.compile_seconds:.1f} s of it compiling" if preset.train.compile else ""
    print(f"trained {result.steps} steps in {result.seconds:.1f} s{compiled} "
          f"({summary['ms_per_step']:.1f} ms/step, {result.dtype} matmuls)")
    print(f"final validation loss: {result.val_loss:.4f} nats/token, "
          f"{per_char:.4f} nats/char", flush=True)


def generate_main(argv: list[str] | None = None) -> int:
    """The ``generate`` command: ``python -m llm_from_scratch.generate``."""
    from llm_from_scratch import generate  # the text generator sits on top, beside this module

    return generate.main(argv)


def chat_main(argv: list[str] | None = None) -> int:
    """The ``chat`` command: ``python -m llm_from_scratch.chat``."""
    from llm_from_scratch import chat  # the chat sits on top too, beside the text generator

    return chat.main(argv)


COMMANDS = {"train": train_main, "generate": generate_main, "chat": chat_main}


def main(argv: list[str] | None = None) -> object:
    """``python -m llm_from_scratch COMMAND [options]``; ``COMMAND --help`` lists the options."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        names = ", ".join(COMMANDS)
        print(f"usage: python -m llm_from_scratch {{{names}}} [options]\n"
              f"commands: {names}; add --help after one for its options", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    return COMMANDS[argv[0]](argv[1:])
