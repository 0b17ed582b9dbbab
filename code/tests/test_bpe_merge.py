"""Tests for llm_from_scratch.bpe_merge: both merge loops follow tiktoken's rule exactly, and
long chunks (a megabyte of one letter is a single regex chunk) encode about as fast, relative
to tiktoken, as ordinary text does.

The tokenizer-level tests of the same functions are in test_tokenizer.py.
"""

from __future__ import annotations

import pytest
import tiktoken
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken_ext import openai_public

from llm_from_scratch.bpe_merge import LONG_CHUNK, byte_pair_merge, byte_pair_merge_heap
from llm_from_scratch.tokenizer import BPETokenizer, gpt2_files

BYTES = {bytes([b]): b for b in range(256)}
# A merge can make a pair of *lower* rank: "b"+"c" (rank 300) after an "a" makes "abc" (256),
# which the lowest-rank rule must take before any other "bc". The heap pauses its sweep then.
LOWER_RANK_TABLE = BYTES | {b"abc": 256, b"xa": 257, b"bc": 300, b"ab": 400}
# Long runs: one regex chunk each, with many merges ("a", "ab", "\n", CJK) or none (spaces).
LONG_RUNS = {
    "letter": "a" * 200_000,
    "two_letters": "ab" * 100_000,
    "spaces": " " * 200_000,
    "newlines": "\n" * 200_000,
    "cjk": "日本語" * 22_000,
    "digits": "7" * 200_000,
}


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2() -> tiktoken.Encoding:
    encoder_json, vocab_bpe = gpt2_files()
    return tiktoken.Encoding(
        name="gpt2-from-files",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            str(vocab_bpe), str(encoder_json)
        ),
        special_tokens={},
    )


def test_heap_pauses_for_a_lower_rank() -> None:
    for piece in (b"abc", b"abcabcabc", b"xabcbcabc", b"bcabcxa" * 20):
        assert byte_pair_merge_heap(piece, LOWER_RANK_TABLE) == byte_pair_merge(
            piece, LOWER_RANK_TABLE
        )
    assert byte_pair_merge_heap(b"abcabc", LOWER_RANK_TABLE) == [256, 256]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80).map(lambda b: bytes(b"abcx"[x % 4] for x in b)))
def test_heap_matches_simple_loop_with_lower_ranks(piece: bytes) -> None:
    assert byte_pair_merge_heap(piece, LOWER_RANK_TABLE) == byte_pair_merge(piece, LOWER_RANK_TABLE)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_heap_matches_simple_loop_on_random_vocabularies(data: st.DataObject) -> None:
    # Random merges over a 4-letter alphabet: every corner of the rank rule shows up here.
    tokens = [bytes([c]) for c in b"abcd"]
    ranks = dict(BYTES)
    for left, right in data.draw(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)))):
        token = tokens[left % len(tokens)] + tokens[right % len(tokens)]
        if token not in ranks:
            ranks[token] = len(ranks)
            tokens.append(token)
    piece = data.draw(st.binary(max_size=60).map(lambda b: bytes(b"abcd"[x % 4] for x in b)))
    assert byte_pair_merge_heap(piece, ranks) == byte_pair_merge(piece, ranks)


def test_heap_on_short_and_empty_pieces() -> None:
    assert byte_pair_merge_heap(b"", BYTES) == []
    assert byte_pair_merge_heap(b"q", BYTES) == [ord("q")]
    assert byte_pair_merge_heap(b"qq", BYTES | {b"qq": 256}) == [256]


@pytest.mark.parametrize("name", LONG_RUNS)
def test_long_runs_match_tiktoken(
    gpt2: BPETokenizer, tiktoken_gpt2: tiktoken.Encoding, name: str
) -> None:
    text = LONG_RUNS[name]
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@pytest.mark.parametrize("length", [LONG_CHUNK - 1, LONG_CHUNK, LONG_CHUNK + 1, 5 * LONG_CHUNK])
def test_both_sides_of_the_long_chunk_threshold_match_tiktoken(
    gpt2: BPETokenizer, tiktoken_gpt2: tiktoken.Encoding, length: int
) -> None:
    for text in ("a" * length, "xo" * (length // 2), "supercalifragilistic" * length):
        text = text[:length]
        assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
