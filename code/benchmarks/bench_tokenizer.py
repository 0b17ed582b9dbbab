"""Benchmark our BPE tokenizer against Hugging Face `tokenizers` (training) and tiktoken (encoding).

Run from the repository root:

    python code/benchmarks/bench_tokenizer.py [--json results.json]

All timings are wall-clock seconds on the Tiny Shakespeare train split (first 90%). Encoding
compares like with like: tiktoken gets an Encoding built from *our* merges, so both produce
the same ids (checked). Ours is pure Python; the references are Rust. Long chunks (a megabyte
of one character is a single regex chunk) are timed with GPT-2's vocabulary, ours and
tiktoken's turn about, so that a change in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

from llm_from_scratch.data import tiny_shakespeare, train_val_split
from llm_from_scratch.tokenizer import BPETokenizer, gpt2_files

VOCAB_SIZE = 1024
NAIVE_SLICE_CHARS = 50_000
NAIVE_VOCAB_SIZE = 400
LONG_RUNS = {"letter": "a", "space": " "}  # one character, repeated --long-mb megabytes


def load_train_text() -> str:
    """Tiny Shakespeare's train split, the text every lesson trains on."""
    return train_val_split(tiny_shakespeare())[0]


def best_of(runs: int, fn: Callable[[], object], setup: Callable[[], object] = lambda: None):
    """Best wall-clock time of ``runs`` calls of ``fn`` (``setup`` runs untimed before each)."""
    times, result = [], None
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def best_alternating(runs: int, fns: list[Callable[[], object]]) -> list[float]:
    """Best wall-clock time of each of ``fns``, called in turn ``runs`` times."""
    times = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


def long_runs(runs: int, megabytes: float) -> dict[str, list[float]]:
    """Encoding time of a long run of one character, ours and tiktoken's (GPT-2's vocabulary)."""
    ours = BPETokenizer.gpt2()
    encoder_json, vocab_bpe = gpt2_files()
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    reference = tiktoken.Encoding(
        name="gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks, special_tokens={}
    )
    results = {}
    for name, char in LONG_RUNS.items():
        text = char * int(megabytes * 1e6)
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)
        results[name] = best_alternating(
            runs,
            [
                # Cold: the whole run is one chunk, which the cache would otherwise remember.
                lambda text=text: (ours.clear_cache(), ours.encode_ordinary(text)),
                lambda text=text: reference.encode_ordinary(text),
            ],
        )
    return results


def train_hf(text: str, vocab_size: int) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--runs", type=int, default=3, help="runs per timing (best is kept)")
    parser.add_argument(
        "--long-mb", type=float, default=1.0, help="megabytes of one character (0: skip)"
    )
    args = parser.parse_args()

    text = load_train_text()
    n_bytes = len(text.encode("utf-8"))
    print(f"Tiny Shakespeare train split: {len(text):,} chars, {n_bytes:,} bytes")
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs")

    # Training: ours vs HF tokenizers, same text, same vocabulary size.
    t_train, ours = best_of(args.runs, lambda: BPETokenizer().train(text, VOCAB_SIZE))
    t_hf, _ = best_of(args.runs, lambda: train_hf(text, VOCAB_SIZE))

    # Encoding: ours (cold cache and warm cache) vs tiktoken with our exact vocabulary.
    enc = tiktoken.Encoding(
        name="ours", pat_str=ours.pattern, mergeable_ranks=ours.ranks, special_tokens={}
    )
    t_cold, ids = best_of(args.runs, lambda: ours.encode(text), setup=ours.clear_cache)
    t_warm, _ = best_of(args.runs, lambda: ours.encode(text))
    t_tik, tik_ids = best_of(args.runs, lambda: enc.encode_ordinary(text))
    assert ids == tik_ids, "our ids differ from tiktoken's"
    assert ours.decode(ids) == text

    # Naive (recount everything after each merge) vs incremental training on a small slice.
    small = text[:NAIVE_SLICE_CHARS]
    t_naive, naive = best_of(1, lambda: BPETokenizer().train(small, NAIVE_VOCAB_SIZE, naive=True))
    t_fast, fast = best_of(args.runs, lambda: BPETokenizer().train(small, NAIVE_VOCAB_SIZE))
    assert naive.merges == fast.merges

    long = long_runs(args.runs, args.long_mb) if args.long_mb > 0 else {}

    mbps = n_bytes / 1e6
    rows = [
        (f"train BPE, vocab {VOCAB_SIZE}", t_train, "HF tokenizers (Rust)", t_hf),
        ("encode, cold cache", t_cold, "tiktoken (Rust)", t_tik),
        ("encode, warm cache", t_warm, "tiktoken (Rust)", t_tik),
        (
            f"train {NAIVE_SLICE_CHARS // 1000} KB to {NAIVE_VOCAB_SIZE}, incremental",
            t_fast,
            "our naive trainer",
            t_naive,
        ),
    ]
    for name, (t_ours, t_tik) in long.items():
        rows.append((f"encode {args.long_mb:g} MB, one {name}", t_ours, "tiktoken, GPT-2", t_tik))
    print()
    print(f"{'task':<36} {'ours (s)':>9}  {'reference':<20} {'ref (s)':>8} {'ours/ref':>9}")
    for task, t_ours, ref, t_ref in rows:
        print(f"{task:<36} {t_ours:9.3f}  {ref:<20} {t_ref:8.3f} {t_ours / t_ref:9.2f}")
    print()
    print(
        f"encode MB/s: ours cold {mbps / t_cold:.2f}, ours warm {mbps / t_warm:.2f}, "
        f"tiktoken {mbps / t_tik:.2f} ({len(ids):,} tokens; our ids == tiktoken's)"
    )
    print(f"naive trainer is {t_naive / t_fast:.0f}x slower than the incremental one")
    print(f"duplicate pairs skipped while training to {VOCAB_SIZE}: {len(ours.skipped_pairs)}")

    if args.json:
        results = {
            "train_bytes": n_bytes,
            "vocab_size": VOCAB_SIZE,
            "train_ours_s": t_train,
            "train_hf_s": t_hf,
            "encode_cold_ours_s": t_cold,
            "encode_warm_ours_s": t_warm,
            "encode_tiktoken_s": t_tik,
            "encode_cold_ours_mb_per_s": mbps / t_cold,
            "encode_warm_ours_mb_per_s": mbps / t_warm,
            "encode_tiktoken_mb_per_s": mbps / t_tik,
            "num_tokens": len(ids),
            "naive_slice_chars": NAIVE_SLICE_CHARS,
            "naive_vocab_size": NAIVE_VOCAB_SIZE,
            "train_naive_s": t_naive,
            "train_fast_small_s": t_fast,
            "skipped_duplicates": len(ours.skipped_pairs),
            "runs": args.runs,
            "long_run_mb": args.long_mb,
            **{f"encode_long_{name}_ours_s": t for name, (t, _) in long.items()},
            **{f"encode_long_{name}_tiktoken_s": t for name, (_, t) in long.items()},
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
