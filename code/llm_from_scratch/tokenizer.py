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

import heapq
import json
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import regex

# The merge loops, the tokenizer base class and the file helpers live in their own modules;
# they are imported here so that everything tokenizer-related imports from this one.
from llm_from_scratch.bpe_merge import LONG_CHUNK, byte_pair_merge, byte_pair_merge_heap, merge_pair
from llm_from_scratch.tokenizer_base import (  # noqa: F401
    CharTokenizer,
    Tokenizer,
    check_special_arg,
    check_text,
    check_train_args,
)
from llm_from_scratch.tokenizer_files import (  # noqa: F401
    GPT2_FILE_SHA256,
    bytes_to_unicode,
    gpt2_files,
    read_gpt2_files,
    read_tokenizer_json,
)

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
        ids; where their text occurs in ``text`` (``<|endoftext|>`` between documents), the text
        is cut there, so no merge ever spans or takes part of one. ``naive=True`` uses the slow
        textbook trainer, which gives the same merges. If training fails, the tokenizer is left
        as it was.

        >>> BPETokenizer().train("hello hello", vocab_size=260, special_tokens=["<|eot|>"])
        BPETokenizer(vocab_size=260, merges=3, special_tokens=1)
        """
        vocab_size, special_tokens = check_train_args(text, vocab_size, special_tokens)
        saved = dict(vars(self))  # to restore if training is interrupted (Ctrl-C) or fails
        try:
            self._build(byte_ids=range(256), merges=[], special_tokens={})
            trainer = self._train_naive if naive else self._train_fast
            num_merges = vocab_size - 256 - len(special_tokens)
            self.skipped_pairs = trainer(text, num_merges, verbose, special_tokens)
            first_special = len(self.vocab)  # fewer merges than asked if the pairs ran out
            specials = {s: first_special + i for i, s in enumerate(special_tokens)}
            self._set_special_tokens(specials)
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise
        if verbose:
            print(f"{len(self.merges)} merges, {len(self.skipped_pairs)} duplicates skipped")
        return self

    def _chunks(self, text: str, special_tokens: Collection[str]) -> Iterator[str]:
        """The regex chunks of ``text``, which is first cut at special tokens (left out)."""
        parts = _special_regex(special_tokens).split(text) if special_tokens else [text]
        for part in parts:
            yield from self.compiled_pattern.findall(part)

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

    def _train_naive(
        self, text: str, num_merges: int, verbose: bool, special_tokens: Collection[str] = ()
    ) -> list[tuple[int, int]]:
        """Textbook BPE: after every merge, recount every pair in the whole text."""
        chunks = [list(chunk.encode("utf-8")) for chunk in self._chunks(text, special_tokens)]
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

    def _train_fast(
        self, text: str, num_merges: int, verbose: bool, special_tokens: Collection[str] = ()
    ) -> list[tuple[int, int]]:
        """Incremental BPE: update only the counts of the words that contain the merged pair."""
        # Natural text repeats the same chunks (" the", " and") over and over, so work on each
        # distinct chunk ("word") once, weighted by how often it occurs.
        word_counts = Counter(self._chunks(text, special_tokens))
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
        check_text(text)
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
        check_text(text)
        check_special_arg("allowed_special", allowed_special)
        check_special_arg("disallowed_special", disallowed_special)
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
        data = read_tokenizer_json(path, expected_type="bpe")
        try:
            tok = cls(data["pattern"])
            tok._build(data["byte_ids"], data["merges"], data["special_tokens"])
        except (KeyError, TypeError, ValueError, regex.error) as err:
            raise ValueError(f"{path}: not a valid BPE tokenizer file ({err!r})") from err
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
        encoder, merge_pairs = read_gpt2_files(encoder_json_path, vocab_bpe_path)
        byte_encoder = bytes_to_unicode()
        byte_decoder = {ch: b for b, ch in byte_encoder.items()}
        try:
            byte_ids = [encoder[byte_encoder[b]] for b in range(256)]
            merges = []
            for i, (left, right) in enumerate(merge_pairs):
                if encoder.get(left + right) != 256 + i:
                    raise ValueError(f"merge {i} ({left} {right}) is not token {256 + i}")
                merges.append((encoder[left], encoder[right]))
            tok = cls(GPT2_SPLIT_PATTERN)
            tok._build(byte_ids, merges, {GPT2_END_OF_TEXT: encoder[GPT2_END_OF_TEXT]})
            # Every other entry of encoder.json must be exactly the token the merges built.
            for token, token_id in encoder.items():
                if token != GPT2_END_OF_TEXT:
                    if tok.vocab.get(token_id) != bytes(byte_decoder[ch] for ch in token):
                        raise ValueError(f"encoder.json: {token!r} -> {token_id} matches no merge")
        except (KeyError, ValueError) as err:  # KeyError: a token that encoder.json lacks
            raise ValueError(
                f"{encoder_json_path} and {vocab_bpe_path} are not GPT-2 tokenizer files that "
                f"agree: {err!r}"
            ) from err
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
