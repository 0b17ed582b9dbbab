"""The merge step of byte-level BPE, for training and for encoding.

* :func:`merge_pair` replaces every occurrence of one pair of ids: one step of training.
* :func:`byte_pair_merge` and :func:`byte_pair_merge_heap` encode one pre-tokenized chunk with a
  rank table (token bytes -> id) by tiktoken's rule: repeatedly merge the adjacent pair whose
  joined bytes have the lowest rank, the leftmost such pair on ties. The first is the textbook
  loop, quadratic in the chunk's length; the second gives the same ids in O(n log n).

>>> ranks = {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"abc": 4}
>>> byte_pair_merge(b"abc", ranks) == byte_pair_merge_heap(b"abc", ranks) == [4]
True
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from itertools import pairwise

# Chunks longer than this (in bytes) are merged with byte_pair_merge_heap. Measured with
# GPT-2's vocabulary, the two take the same time at about 32 bytes; beyond, the simple loop's
# cost grows with the square of the length (think of 10,000 "a"s), the heap's as n log n.
LONG_CHUNK = 32


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
    """Same result as :func:`byte_pair_merge`, in O(n log n): for long chunks.

    The parts form a linked list over byte offsets: part ``i`` is ``piece[i:nxt[i]]`` and
    ``pair_rank[i]`` the rank of part ``i`` joined to the next part (-1: no such token). A heap
    holds the distinct ranks of the pairs, and ``waiting[rank]`` the offsets of the pairs with
    that rank. Popping the lowest rank merges its pairs in one left-to-right sweep, which is the
    order the leftmost rule takes them in: a merge never makes another pair of the same rank
    (any new pair holds the merged token and more bytes). Should it make a pair of a *lower*
    rank, which real vocabularies rarely do, the sweep pauses and the heap decides again.

    >>> byte_pair_merge_heap(b"abc", {b"a": 0, b"b": 1, b"c": 2, b"bc": 3, b"abc": 4})
    [4]
    """
    n = len(piece)
    get = ranks.get
    # Long chunks are repetitive ("aaaa...", runs of spaces): look up each distinct pair once.
    rank_of = {pair: get(bytes(pair), -1) for pair in set(pairwise(piece))}
    if all(rank < 0 for rank in rank_of.values()):  # nothing to merge: one token per byte
        byte_ids = {b: ranks[bytes([b])] for b in set(piece)}
        return list(map(byte_ids.__getitem__, piece))
    pair_rank = list(map(rank_of.__getitem__, pairwise(piece))) + [-1]
    nxt = list(range(1, n + 1))  # -1 once the part has been merged into the one before it
    prv = list(range(-1, n - 1))
    waiting: dict[int, list[int]] = {}
    for i, rank in enumerate(pair_rank):
        if rank >= 0:
            waiting.setdefault(rank, []).append(i)
    heap = list(waiting)
    heapq.heapify(heap)

    def update(i: int, end: int) -> int:  # part i now pairs with the bytes up to `end`
        rank = pair_rank[i] = get(piece[i:end], -1)
        if rank >= 0:
            if rank not in waiting:
                waiting[rank] = []
                heapq.heappush(heap, rank)
            waiting[rank].append(i)
        return rank

    while heap:
        rank = heapq.heappop(heap)
        offsets = sorted(waiting.pop(rank))
        for at, i in enumerate(offsets):
            if pair_rank[i] != rank:
                continue  # out of date: part i has grown, or was merged away, since
            j = nxt[i]
            k = nxt[j]
            nxt[i] = k  # part i absorbs part j
            nxt[j] = pair_rank[j] = -1
            right = left = -1
            if k < n:
                prv[k] = i
                right = update(i, nxt[k])
            else:
                pair_rank[i] = -1
            if prv[i] >= 0:
                left = update(prv[i], k)
            if 0 <= right < rank or 0 <= left < rank:
                waiting[rank] = offsets[at + 1 :]  # resume after the lower rank's merges
                heapq.heappush(heap, rank)
                break
    return [ranks[piece[i:end]] for i, end in enumerate(nxt) if end > i]
