"""Named training runs: a model, how to train it, and the data that feeds it (Lessons 7–8).

The command line (:mod:`llm_from_scratch.cli`) trains any of them; Lesson 7's loss
progression and Lesson 8's book model are two of them.

>>> sorted(PRESETS)
['book', 'nanogpt-cpu', 'nanogpt-gpu', 'tiny']
>>> PRESETS["nanogpt-cpu"].model.n_layer
4
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_from_scratch.data import TOKENIZERS, TokenizedData, shakespeare_tokens
from llm_from_scratch.model import GPTConfig
from llm_from_scratch.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A named run: the model, how to train it and which tokenizer feeds it."""

    model: GPTConfig
    train: TrainConfig
    tokenizer: str = "char"  # "char" or "bpe" (the Lesson 1 tokenizer, trained on the train split)
    vocab_size: int = 1024  # BPE only: vocabulary size, special tokens included
    note: str = ""

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if not isinstance(self.vocab_size, int) or not 257 <= self.vocab_size <= 100_000:
            raise ValueError(f"vocab_size must be an integer in [257, 100000], "
                             f"got {self.vocab_size!r}")

    def data(self) -> TokenizedData:
        """The tokenized Tiny Shakespeare this preset trains on."""
        return shakespeare_tokens(self.tokenizer, self.vocab_size)


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
                  gelu="exact"),
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
                  dropout=0.2, gelu="exact"),
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
