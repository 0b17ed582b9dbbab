"""Datasets used throughout the book, found offline when possible and verified always.

Tiny Shakespeare is the book's corpus: every lesson trains and evaluates on it, with one split
(:func:`train_val_split`) so that losses compare across lessons and with published anchors.
:func:`shakespeare_tokens` tokenizes that split; :class:`TokenWindows` serves a token stream
to the training loop: random windows to train on (:func:`get_batch`) and every window once,
in order, to evaluate on.

>>> from llm_from_scratch.data import tiny_shakespeare, train_val_split
>>> text = tiny_shakespeare()
>>> train, val = train_val_split(text)
>>> len(text), len(train), len(val)
(1115394, 1003854, 111540)
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import platformdirs
import torch

from llm_from_scratch.tokenizer import GPT2_END_OF_TEXT, BPETokenizer, CharTokenizer, Tokenizer

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_FILE = "tinyshakespeare.txt"

#: Environment variable naming a directory that already holds the data files (no download).
DATA_DIR_ENV = "LLMFS_DATA_DIR"


class DataUnavailableError(FileNotFoundError):
    """The data file is neither on disk nor downloadable; the message says where to put it."""


def cache_dir() -> Path:
    """Directory where downloaded data is kept: the user's cache directory for this book."""
    return Path(platformdirs.user_cache_dir("llm_from_scratch")) / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically, refusing content whose hash is wrong."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise ValueError(f"downloaded {url} has sha256 {digest}, expected {sha256}; not saved")
    # Write to a temporary name first so an interrupted download never leaves a partial file
    # that a later call would mistake for the real one.
    tmp = dest.with_suffix(dest.suffix + ".part")
    tmp.write_bytes(payload)
    tmp.replace(dest)


def tiny_shakespeare() -> str:
    """Return the Tiny Shakespeare corpus (1,115,394 characters) as one string.

    Looks in ``$LLMFS_DATA_DIR/tinyshakespeare.txt`` when that variable is set; otherwise in
    the user cache directory, downloading the file there from its canonical URL on first use.
    The SHA-256 is checked either way, so every reader trains on exactly the same bytes.

    >>> text = tiny_shakespeare()
    >>> text[:14]
    'First Citizen:'
    """
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        path = Path(env_dir).expanduser() / TINY_SHAKESPEARE_FILE
        if not path.is_file():
            raise DataUnavailableError(
                f"{DATA_DIR_ENV} is set to {env_dir!r}, but {path} does not exist. Put "
                f"Tiny Shakespeare there (download it from {TINY_SHAKESPEARE_URL}) or unset "
                f"{DATA_DIR_ENV} to download it automatically."
            )
    else:
        path = cache_dir() / TINY_SHAKESPEARE_FILE
        if not path.is_file():
            try:
                _download(TINY_SHAKESPEARE_URL, path, TINY_SHAKESPEARE_SHA256)
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                raise DataUnavailableError(
                    f"Tiny Shakespeare is not on disk and could not be downloaded ({err}). "
                    f"Download {TINY_SHAKESPEARE_URL} on a machine with internet access and "
                    f"save it as {path}, or save it as tinyshakespeare.txt in any directory "
                    f"and set the environment variable {DATA_DIR_ENV} to that directory."
                ) from err
    digest = _sha256(path)
    if digest != TINY_SHAKESPEARE_SHA256:
        raise ValueError(
            f"{path} has sha256 {digest}, expected {TINY_SHAKESPEARE_SHA256}: the file is "
            f"corrupt or a different text. Delete it (or replace it with {TINY_SHAKESPEARE_URL})."
        )
    return path.read_text(encoding="utf-8")


S = TypeVar("S", bound=Sequence)


def train_val_split(data: S, train_fraction: float = 0.9) -> tuple[S, S]:
    """Split a sequence (text, token ids, a tensor) into its first 90 % and last 10 %.

    Every lesson uses this split, as nanoGPT does, so validation losses compare with the
    book's anchors. No shuffling: the validation text is a contiguous, unseen stretch.

    >>> train_val_split("abcdefghij")
    ('abcdefghi', 'j')
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]


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


@dataclass
class TokenWindows:
    """A token stream as training data: windows of ``block_size`` tokens and their targets.

    >>> windows = TokenWindows(torch.arange(10), block_size=3)
    >>> [x.tolist() for x, _ in windows.batches(batch_size=2)]
    [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8]]]
    """

    ids: torch.Tensor
    block_size: int

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows, for training."""
        return get_batch(self.ids, self.block_size, batch_size, generator)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive, non-overlapping windows: every token (but a final partial window) is
        predicted exactly once, so two evaluations of one model always agree."""
        n = (len(self.ids) - 1) // self.block_size
        if n == 0:
            raise ValueError(
                f"data has {len(self.ids)} tokens; need more than block_size={self.block_size}"
            )
        x = self.ids[: n * self.block_size].view(n, self.block_size)
        y = self.ids[1 : n * self.block_size + 1].view(n, self.block_size)
        for start in range(0, n, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def check_vocab(self, vocab_size: int | None, name: str = "data") -> None:
        """A clear error for ids the model has no embedding for, checked once per dataset."""
        if vocab_size is None or not self.ids.numel():
            return
        low, high = int(self.ids.min()), int(self.ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"{name} holds token ids from {low} to {high}, but the model's vocabulary has "
                f"{vocab_size} tokens. Was it encoded with a different tokenizer?"
            )


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


TOKENIZERS = ("char", "bpe")


@lru_cache(maxsize=4)
def shakespeare_tokens(tokenizer: str = "bpe", vocab_size: int = 1024) -> TokenizedData:
    """Tiny Shakespeare's 90/10 split as ids of a character or BPE tokenizer.

    The BPE tokenizer is trained on the *training* split only (about a second): trained on all
    of the text, its merges would have seen the validation text. The character tokenizer's
    alphabet is the whole text's, as in nanoGPT (65 characters).

    >>> data = shakespeare_tokens("char")
    >>> data.tokenizer.vocab_size, len(data.val_ids) == data.val_chars
    (65, True)
    """
    text = tiny_shakespeare()
    train_text, val_text = train_val_split(text)
    if tokenizer == "char":
        tok: Tokenizer = CharTokenizer.from_text(text)
    elif tokenizer == "bpe":
        tok = BPETokenizer().train(
            train_text, vocab_size=vocab_size, special_tokens=[GPT2_END_OF_TEXT]
        )
    else:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    return TokenizedData(
        tok,
        torch.tensor(tok.encode(train_text), dtype=torch.long),
        torch.tensor(tok.encode(val_text), dtype=torch.long),
        len(train_text),
        len(val_text),
    )
