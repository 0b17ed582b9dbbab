"""Scaled dot-product attention, one head and many (Lessons 3, 4 and 6).

Attention lets every token gather information from the others, weighting each by how well its
*key* matches the token's *query* (Vaswani et al., 2017). Shapes follow the book's notation:
``B`` batch, ``T`` time (sequence length), ``C = n_embd`` channels, ``H = n_head`` heads of
``head_size = C / H`` channels each.

Masks are boolean and mean "may attend" (``True`` keeps a score), as in PyTorch's
:func:`torch.nn.functional.scaled_dot_product_attention`, which :func:`attention` equals.

>>> import torch
>>> from llm_from_scratch.attention import MultiHeadAttention
>>> mha = MultiHeadAttention(n_embd=32, n_head=4, block_size=8)
>>> mha(torch.randn(2, 8, 32)).shape
torch.Size([2, 8, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.positions import RotaryEmbedding
from llm_from_scratch.runtime import fused_attention


def causal_mask(T: int, device: torch.device | str | None = None, past: int = 0) -> torch.Tensor:
    """``(T, past + T)`` boolean lower triangle: query ``t`` may attend to keys ``0..past + t``.

    ``past`` counts the keys of earlier tokens that a KV cache holds in front of the ``T`` new
    ones (Lesson 9): the diagonal then sits ``past`` columns to the right.

    >>> causal_mask(3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    >>> causal_mask(2, past=1).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)


def padding_mask(lengths: torch.Tensor | list[int], T: int | None = None) -> torch.Tensor:
    """``(B, T)`` boolean mask, ``True`` on the real tokens of right-padded sequences.

    >>> padding_mask([3, 1]).int().tolist()
    [[1, 1, 1], [1, 0, 0]]
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty 1-D list of sequence lengths, got {lengths}")
    if (lengths < 0).any():
        raise ValueError(f"lengths must be non-negative, got {lengths.tolist()}")
    T = int(lengths.max()) if T is None else T
    if int(lengths.max()) > T:
        raise ValueError(f"a sequence of length {int(lengths.max())} does not fit in T={T}")
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q kᵀ · scale + mask) v``, written out; equals PyTorch's fused kernel.

    ``q`` is ``(..., T_q, d)``, ``k`` is ``(..., T_k, d)``, ``v`` is ``(..., T_k, d_v)``;
    ``mask`` (boolean, ``True`` = may attend) broadcasts to ``(..., T_q, T_k)``. The default
    ``scale`` is ``1/sqrt(d)``: it keeps the scores' variance near 1 whatever the head size, so
    the softmax does not saturate into a one-hot (Lesson 3). A query row whose keys are all
    masked gets zero output instead of the NaN a plain softmax would give.

    >>> q = k = v = torch.randn(1, 4, 8)
    >>> torch.allclose(attention(q, k, v, is_causal=True),
    ...                F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    True
    """
    if q.dim() < 2 or k.dim() < 2 or v.dim() < 2:
        raise ValueError("q, k and v need at least two dimensions (..., T, head_size)")
    if q.size(-1) != k.size(-1):
        raise ValueError(f"queries have {q.size(-1)} channels but keys have {k.size(-1)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"{k.size(-2)} keys but {v.size(-2)} values: they must pair up")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
    T_q, T_k = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if is_causal:
        # Aligned to the end, so a query block that continues a longer key block (a KV cache)
        # sees every earlier key: query i sits at absolute position T_k - T_q + i.
        causal = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.nan_to_num(0.0)  # rows with every key masked
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v
    return (out, weights) if return_weights else out


def check_heads(n_embd: int, n_head: int, n_kv_head: int | None = None) -> None:
    """Raise a clear ``ValueError`` unless ``n_embd`` splits into ``n_head`` equal heads and the
    query heads split into ``n_kv_head`` equal groups. Used by the layer and by ``GPTConfig``."""
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    if n_head <= 0 or n_embd <= 0:
        raise ValueError(f"n_embd and n_head must be positive, got {n_embd} and {n_head}")
    if n_embd % n_head:
        raise ValueError(
            f"n_embd={n_embd} is not divisible by n_head={n_head}: each head gets "
            f"n_embd // n_head channels, so choose n_head among the divisors of n_embd"
        )
    if n_kv_head <= 0 or n_head % n_kv_head:
        raise ValueError(
            f"n_head={n_head} is not divisible by n_kv_head={n_kv_head}: in grouped-query "
            f"attention every key/value head serves the same number of query heads, so "
            f"n_head={n_head} must be a multiple of n_kv_head={n_kv_head}"
        )


def _check_length(T: int, block_size: int, past: int = 0) -> None:
    if past + T > block_size:
        length = f"{past} cached + {T} new positions" if past else f"sequence length {T}"
        raise ValueError(
            f"{length} exceeds block_size={block_size}: the model was built for at "
            f"most {block_size} positions; crop the input to its last {block_size} tokens"
        )


def _check_input(x: torch.Tensor, n_embd: int) -> None:
    if x.dim() != 3 or x.size(-1) != n_embd:
        raise ValueError(f"expected input of shape (B, T, n_embd={n_embd}), got {tuple(x.shape)}")


class SelfAttentionHead(nn.Module):
    """One head of self-attention, the version Lesson 3 builds: separate query, key, value maps.

    >>> head = SelfAttentionHead(n_embd=32, head_size=16, block_size=8)
    >>> head(torch.randn(4, 8, 32)).shape
    torch.Size([4, 8, 16])
    """

    def __init__(self, n_embd: int, head_size: int, block_size: int, causal: bool = True) -> None:
        super().__init__()
        self.n_embd, self.head_size, self.block_size, self.causal = (
            n_embd,
            head_size,
            block_size,
            causal,
        )
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(
        self, x: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _check_input(x, self.n_embd)
        _check_length(x.size(1), self.block_size)
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, head_size) each
        return attention(q, k, v, is_causal=self.causal, return_weights=return_weights)


class KVCache:
    """The keys and values that one attention layer has computed so far (Lesson 9).

    In a causal layer, the keys and values of earlier tokens never change when later tokens
    arrive, so generation keeps them instead of recomputing them: each step computes keys and
    values for its new tokens only and appends them here. They are stored as
    ``(B, n_kv_head, T, head_size)``, before grouped-query attention repeats them, which is why
    GQA shrinks the cache.

    >>> cache = KVCache()
    >>> k, v = cache.append(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
    >>> k, v = cache.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    >>> len(cache), tuple(k.shape)
    (4, (1, 2, 4, 4))
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of positions cached."""
        return 0 if self.keys is None else self.keys.size(-2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys and values; return all of them, the cached ones first."""
        if self.keys is not None and self.values is not None:
            k, v = torch.cat((self.keys, k), dim=-2), torch.cat((self.values, v), dim=-2)
        self.keys, self.values = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` in that order, repeats allowed: beam search reorders so."""
        if self.keys is not None and self.values is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]


class MultiHeadAttention(nn.Module):
    """Multi-head (and grouped-query) self-attention with one fused query/key/value projection.

    ``n_head`` heads of ``n_embd // n_head`` channels run in parallel as one batched matrix
    multiply. ``n_kv_head`` (default ``n_head``) sets how many distinct key/value heads there
    are: ``1`` is multi-query attention, anything between is grouped-query attention (GQA,
    Ainslie et al., 2023), which shrinks the KV cache by ``n_head / n_kv_head``. Parameter names
    (``c_attn``, ``c_proj``) follow GPT-2 so its checkpoints load directly.

    ``forward`` takes an optional ``padding_mask`` (``(B, T)``, ``True`` on real tokens) and can
    return the attention weights ``(B, n_head, T, T)`` for plotting. Without weights requested it
    runs PyTorch's fused kernel; with them, the book's :func:`attention` (the two are equal).

    >>> gqa = MultiHeadAttention(n_embd=64, n_head=8, block_size=16, n_kv_head=2)
    >>> y, w = gqa(torch.randn(1, 16, 64), return_weights=True)
    >>> y.shape, w.shape
    (torch.Size([1, 16, 64]), torch.Size([1, 8, 16, 16]))
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        *,
        n_kv_head: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        causal: bool = True,
        rope: bool = False,
    ) -> None:
        super().__init__()
        check_heads(n_embd, n_head, n_kv_head)
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_size, self.block_size = n_embd // n_head, block_size
        self.causal, self.dropout = causal, dropout
        kv_dim = n_kv_head * self.head_size
        # One matrix for queries, keys and values: one large matmul is faster than three.
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * kv_dim, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = RotaryEmbedding(self.head_size, block_size) if rope else None

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
        *,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Self-attention over ``x`` ``(B, T, n_embd)``.

        With a ``kv_cache`` (Lesson 9), ``x`` holds only the tokens that follow the cached ones:
        their keys and values join the cache, and their queries attend to every cached key.
        """
        _check_input(x, self.n_embd)
        B, T, C = x.shape
        past = 0 if kv_cache is None else self._cached_length(kv_cache, padding_mask)
        _check_length(T, self.block_size, past)
        kv_dim = self.n_kv_head * self.head_size
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=-1)
        # (B, T, heads * head_size) -> (B, heads, T, head_size): heads become a batch dimension.
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)
        if self.rope is not None:
            # The new tokens sit at positions past, past + 1, ...: rotate them by those angles.
            q, k = self.rope(q, offset=past), self.rope(k, offset=past)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # every key and value so far, cached ones first
        if self.n_kv_head != self.n_head:
            # Each key/value head is shared by n_head / n_kv_head consecutive query heads.
            repeat = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        mask = None
        if padding_mask is not None:
            if padding_mask.shape != (B, T) or padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"padding_mask must be a boolean (B, T) = {(B, T)} tensor, got "
                    f"{padding_mask.dtype} {tuple(padding_mask.shape)}"
                )
            mask = padding_mask[:, None, None, :]  # (B, 1, 1, T): hide padded keys
        dropout_p = self.dropout if self.training else 0.0
        if return_weights:
            # attention() aligns its causal mask to the last key, so cached keys need nothing more
            y, weights = attention(
                q, k, v, mask=mask, is_causal=self.causal, dropout_p=dropout_p, return_weights=True
            )
        else:
            if self.causal and (mask is not None or past):
                # An explicit mask: PyTorch's is_causal aligns to the *first* key, which would hide
                # the cached keys from the new queries (Lesson 9).
                causal = causal_mask(T, x.device, past)
                mask = causal if mask is None else mask & causal
            # PyTorch's fused kernel (F.scaled_dot_product_attention), equal to attention() above
            y = fused_attention(
                q, k, v, attn_mask=mask, is_causal=self.causal and mask is None,
                dropout_p=dropout_p,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # concatenate the heads
        y = self.resid_dropout(self.c_proj(y))
        return (y, weights) if return_weights else y

    def _cached_length(self, kv_cache: KVCache, padding_mask: torch.Tensor | None) -> int:
        if not self.causal:
            raise ValueError(
                "a KV cache needs causal attention: without the mask, earlier tokens' outputs "
                "depend on later tokens, and a cache cannot update them"
            )
        if padding_mask is not None:
            raise ValueError("padding_mask cannot be combined with a kv_cache")
        return len(kv_cache)
