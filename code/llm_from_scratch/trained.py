"""Trained models, cached on disk: one routine that trains a model or loads it.

Lessons never retrain a model another lesson trained: :func:`train_cached` trains on a cache
miss and otherwise loads the weights *and the tokenizer* from disk
(:mod:`llm_from_scratch.artifacts`). The key holds the model and training settings, the
precision the hardware resolved, the tokenizer, the data's hash and the package's source, so a
change to any of them retrains instead of serving a stale model. The loss progression
(:mod:`llm_from_scratch.progression`) and the book's model (:func:`book_model`, trained in
Lesson 8 and used by Lessons 9 and 10) both go through it.

>>> from llm_from_scratch.model import GPTConfig
>>> from llm_from_scratch.train import TrainConfig
>>> tiny = train_cached("doctest-tiny", GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16),
...                     TrainConfig(max_steps=5, eval_interval=5), progress=False)
>>> tiny.tokenizer.vocab_size, tiny.result.steps
(65, 5)
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from llm_from_scratch.artifacts import cached
from llm_from_scratch.baselines import LSTMConfig, LSTMLanguageModel, MLPConfig, MLPLanguageModel
from llm_from_scratch.data import TINY_SHAKESPEARE_SHA256, shakespeare_tokens
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig, LanguageModel
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.runtime import resolve_dtype
from llm_from_scratch.tokenizer import BPETokenizer, CharTokenizer, Tokenizer
from llm_from_scratch.train import TrainConfig, TrainResult, train


@dataclass
class TrainedModel:
    """A trained model with its tokenizer and training record."""

    name: str
    model: LanguageModel
    tokenizer: Tokenizer
    result: TrainResult
    val_loss_per_char: float  # the validation loss per character of text, whatever the tokens
    from_cache: bool  # loaded from disk rather than trained now


ModelConfig = GPTConfig | MLPConfig | LSTMConfig
MODELS: dict[type, type[LanguageModel]] = {
    GPTConfig: GPT, MLPConfig: MLPLanguageModel, LSTMConfig: LSTMLanguageModel,
}


def build_model(config: ModelConfig | None, vocab_size: int, seed: int) -> LanguageModel:
    """A freshly initialized model (seeded); ``None`` means the bigram model."""
    torch.manual_seed(seed)
    if config is None:
        return BigramLanguageModel(vocab_size)
    return MODELS[type(config)](dataclasses.replace(config, vocab_size=vocab_size))


def train_cached(
    name: str,
    config: ModelConfig | None,
    train_config: TrainConfig,
    tokenizer: str = "char",
    vocab_size: int = 1024,
    progress: bool = True,
) -> TrainedModel:
    """Train ``config`` (``None``: the bigram model) on Tiny Shakespeare, or load it if trained.

    The model's vocabulary is the tokenizer's; ``vocab_size`` sizes a BPE tokenizer.
    """
    context = getattr(config, "block_size", None)  # the MLP and the LSTM take any length
    if context is not None and context < train_config.block_size:
        raise ValueError(
            f"the model's block_size={context} is shorter than the training windows "
            f"(block_size={train_config.block_size})"
        )
    spec = {
        "model": None if config is None else config.to_dict(),
        "train": train_config.to_dict(),
        # "auto" trains in bfloat16 on some machines and float32 on others: not one result.
        "dtype": resolve_dtype(train_config.dtype, train_config.device),
        "tokenizer": [tokenizer, vocab_size if tokenizer == "bpe" else None],
        "data": TINY_SHAKESPEARE_SHA256,
    }

    def compute() -> tuple[dict, dict]:
        data = shakespeare_tokens(tokenizer, vocab_size)
        model = build_model(config, data.tokenizer.vocab_size, train_config.seed)
        result = train(model, data.train_ids, data.val_ids, train_config, progress=progress,
                       description=name)
        info = {"result": result.to_dict(), "val_loss_per_char": data.per_char(result.val_loss),
                "tokenizer": tokenizer_to_text(data.tokenizer)}
        return info, model.state_dict()

    artifact = cached(name, spec, compute)
    tok = tokenizer_from_text(artifact.info["tokenizer"])
    model = build_model(config, tok.vocab_size, train_config.seed)
    model.load_state_dict(artifact.state_dict)
    model.eval()
    return TrainedModel(name, model, tok, TrainResult(**artifact.info["result"]),
                        artifact.info["val_loss_per_char"], artifact.from_cache)


def book_model(progress: bool = True, preset: str = "book") -> TrainedModel:
    """Train (on a cache miss) or load the book's model: Lesson 1's BPE tokenizer and a GPT."""
    p = PRESETS[preset]
    return train_cached(f"book-model-{preset}", p.model, p.train, p.tokenizer, p.vocab_size,
                        progress)


def tokenizer_to_text(tokenizer: Tokenizer) -> str:
    """The tokenizer's own file format, as text to store beside the weights."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        return path.read_text(encoding="utf-8")


def tokenizer_from_text(text: str) -> Tokenizer:
    """The tokenizer that :func:`tokenizer_to_text` wrote."""
    kind = BPETokenizer if '"type": "bpe"' in text else CharTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return kind.load(path)
