"""Datasets used throughout the book, found offline when possible and verified always.

Tiny Shakespeare is the book's corpus: every lesson trains and evaluates on it, with one split
(:func:`train_val_split`) so that losses compare across lessons and with published anchors.

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
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import platformdirs

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
