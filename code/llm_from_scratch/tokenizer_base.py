"""The tokenizer interface, and the simplest tokenizer: one id per character.

A tokenizer has a vocabulary (id -> bytes) and special tokens (text -> id); decoding is the same
for all of them. :class:`llm_from_scratch.tokenizer.BPETokenizer` builds on this base.

>>> tok = CharTokenizer.from_text("hello world")
>>> tok.decode(tok.encode("hold"))
'hold'
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable
from pathlib import Path

from llm_from_scratch.tokenizer_files import read_tokenizer_json


def check_text(text: object) -> None:
    """Raise TypeError unless ``text`` is a str (bytes, say, must be decoded first)."""
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")


class Tokenizer:
    """Base class: a vocabulary (id -> bytes) plus special tokens (text -> id).

    Subclasses build the vocabulary and implement ``encode``; decoding is shared.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'
    """

    def __init__(self) -> None:
        self.vocab: dict[int, bytes] = {}
        self.special_tokens: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids in use, special tokens included: ``tok.vocab_size`` -> 1024."""
        return len(self.vocab) + len(self.special_tokens)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes that one id stands for: ``BPETokenizer().id_to_bytes(104)`` -> b'h'."""
        # `type(...) is int` rather than isinstance: True and 3.0 would otherwise pass as ids
        # (3.0 == 3 as a dict key), and numpy/torch integers get a clear conversion below.
        if type(token_id) is not int:
            if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
                raise TypeError(f"token ids must be integers, got {token_id!r}")
            token_id = token_id.__index__()
        token = self.vocab.get(token_id)
        if token is not None:
            return token
        for text, special_id in self.special_tokens.items():
            if special_id == token_id:
                return text.encode("utf-8")
        raise ValueError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the tokens' bytes: ``tok.decode_bytes([104, 105])`` -> b'hi'."""
        return b"".join([self.id_to_bytes(token_id) for token_id in ids])

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text: ``tok.decode(tok.encode("hi"))`` -> 'hi'.

        A single token can hold part of a multi-byte character, so a list of ids need not be
        valid UTF-8; the broken bytes become U+FFFD (the replacement character) rather than
        an exception, which is what a model that samples one token at a time needs.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character, ids in sorted character order (as nanoGPT's shakespeare_char).

    >>> tok = CharTokenizer.from_text("hello world")
    >>> tok.encode("hold")
    [3, 5, 4, 1]
    """

    def __init__(self, chars: Iterable[str]) -> None:
        super().__init__()
        self.chars = list(chars)
        if not all(isinstance(ch, str) and len(ch) == 1 for ch in self.chars):
            raise ValueError("chars must be single characters")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("chars must not repeat")
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab = {i: ch.encode("utf-8") for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the sorted set of characters in ``text``: ``from_text("ba").chars``."""
        check_text(text)
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        """One id per character: ``CharTokenizer.from_text("ab").encode("ba")`` -> [1, 0]."""
        check_text(text)
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"characters not in the vocabulary: {shown}{more}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON: ``tok.save("chars.json")``."""
        data = {"type": "char", "chars": self.chars}
        Path(path).write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        """Read a file written by :meth:`save`: ``CharTokenizer.load("chars.json")``."""
        data = read_tokenizer_json(path, expected_type="char")
        try:
            return cls(data["chars"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid character tokenizer file ({err!r})") from err


def check_train_args(
    text: object, vocab_size: object, special_tokens: object
) -> tuple[int, list[str]]:
    """Check ``BPETokenizer.train``'s arguments; returns ``vocab_size, special_tokens``."""
    check_text(text)
    if isinstance(special_tokens, str) or not isinstance(special_tokens, Iterable):
        raise TypeError(
            "special_tokens must be a sequence of strings, e.g. ['<|eot|>'], got "
            f"{special_tokens!r}"
        )
    special_tokens = list(special_tokens)
    for token in special_tokens:
        if not isinstance(token, str):
            raise TypeError(f"special_tokens must be strings, got {token!r}")
        if not token:
            raise ValueError("special_tokens must be non-empty strings, got ''")
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens must not repeat, got duplicates in {special_tokens}")
    try:
        vocab_size = operator.index(vocab_size)  # ints, numpy ints; not 1024.0 or "1024"
    except TypeError:
        raise TypeError(f"vocab_size must be an integer, got {vocab_size!r}") from None
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (256 byte tokens + {len(special_tokens)} "
            f"special tokens), got {vocab_size}"
        )
    return vocab_size, special_tokens


def check_special_arg(name: str, value: object) -> None:
    # A str is a collection of characters: "<|endoftext|>" would quietly mean {"<", "|", ...}.
    if isinstance(value, str) and value != "all":
        raise TypeError(
            f"{name} must be 'all' or a set of special tokens, got the string {value!r}; "
            f"for a single token, write {name}={{{value!r}}}"
        )
