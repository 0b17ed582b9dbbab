"""The book's trained model: Lesson 1's BPE tokenizer and a GPT, trained once and cached.

Lesson 8 trains it; Lessons 9 and 10 load it. :func:`book_model` trains on a cache miss and
otherwise loads the weights from disk (:mod:`llm_from_scratch.artifacts`): the cache key holds
the preset, the package source and the data hash, so a change to any of them retrains.

>>> data = shakespeare_tokens("char")
>>> data.tokenizer.vocab_size, len(data.val_ids) == data.val_chars
(65, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch

from llm_from_scratch.artifacts import cached
from llm_from_scratch.data import TINY_SHAKESPEARE_SHA256, tiny_shakespeare, train_val_split
from llm_from_scratch.model import GPT
from llm_from_scratch.tokenizer import BPETokenizer, CharTokenizer, Tokenizer
from llm_from_scratch.train import PRESETS, Preset, TrainResult, train

#: The special token that separates documents (Lesson 10 uses it between examples).
END_OF_TEXT = "<|endoftext|>"


@dataclass
class TokenizedData:
    """Tiny Shakespeare's split, tokenized; the character counts convert losses per character."""

    tokenizer: Tokenizer
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    train_chars: int
    val_chars: int

    def per_char(self, val_loss_per_token: float) -> float:
        """A validation loss in nats per token, as nats per character of the validation text."""
        return val_loss_per_token * len(self.val_ids) / self.val_chars


@lru_cache(maxsize=4)
def shakespeare_tokens(tokenizer: str = "bpe", vocab_size: int = 1024) -> TokenizedData:
    """Tiny Shakespeare's 90/10 split as ids of a character or BPE tokenizer.

    The BPE tokenizer is trained on the *training* split only (about a second): trained on all
    of the text, its merges would have seen the validation text.
    """
    text = tiny_shakespeare()
    train_text, val_text = train_val_split(text)
    if tokenizer == "char":
        tok: Tokenizer = CharTokenizer.from_text(text)
    elif tokenizer == "bpe":
        tok = BPETokenizer().train(train_text, vocab_size=vocab_size, special_tokens=[END_OF_TEXT])
    else:
        raise ValueError(f"tokenizer must be 'char' or 'bpe', got {tokenizer!r}")
    return TokenizedData(
        tok,
        torch.tensor(tok.encode(train_text), dtype=torch.long),
        torch.tensor(tok.encode(val_text), dtype=torch.long),
        len(train_text),
        len(val_text),
    )


def preset_data(preset: Preset) -> TokenizedData:
    """The tokenized data a preset trains on."""
    return shakespeare_tokens(preset.tokenizer, preset.vocab_size or 1024)


@dataclass
class BookModel:
    """The trained book model with its tokenizer and training record."""

    model: GPT
    tokenizer: Tokenizer
    result: TrainResult
    val_loss_per_char: float
    from_cache: bool


def book_model(progress: bool = True, preset: str = "book") -> BookModel:
    """Train (on a cache miss) or load the book's model. A cold train takes about 4 minutes."""
    p = PRESETS[preset]
    data = preset_data(p)
    config = dataclasses.replace(p.model, vocab_size=data.tokenizer.vocab_size)
    spec = {
        "model": config.to_dict(),
        "train": p.train.to_dict(),
        "tokenizer": [p.tokenizer, p.vocab_size],
        "data": TINY_SHAKESPEARE_SHA256,
    }

    def compute() -> tuple[dict, dict]:
        torch.manual_seed(p.train.seed)
        model = GPT(config)
        result = train(
            model, data.train_ids, data.val_ids, p.train, progress, f"book model ({preset})"
        )
        return result.to_dict(), model.state_dict()

    artifact = cached(f"book-model-{preset}", spec, compute)
    model = GPT(config)
    model.load_state_dict(artifact.state_dict)
    model.eval()
    result = TrainResult(**artifact.info)
    return BookModel(
        model, data.tokenizer, result, data.per_char(result.val_loss), artifact.from_cache
    )
