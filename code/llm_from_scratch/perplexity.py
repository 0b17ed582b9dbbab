"""Scoring text with a language model: perplexity per token and per character (Lesson 9).

A model's perplexity on a text is ``exp`` of its mean negative log-likelihood per token: the
number of equally likely choices that would leave it as unsure as it is. Per character, it
compares models whose tokenizers differ.

>>> import torch
>>> from llm_from_scratch.model import BigramLanguageModel
>>> model = BigramLanguageModel(7)
>>> with torch.no_grad():
...     _ = model.token_embedding.weight.zero_()      # every token equally likely
>>> round(perplexity(model, [1, 2, 3, 4]), 4)
7.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llm_from_scratch.model import LanguageModel, check_ids
from llm_from_scratch.runtime import evaluating


def perplexity(
    model: LanguageModel, ids: torch.Tensor | Sequence[int], *, stride: int | None = None
) -> float:
    """``exp`` of the mean negative log-likelihood of each token given the ones before it.

    ``ids`` is one text's ids, or ``(B, T)``; the first token only serves as context. A text
    longer than the model's context is read in windows of ``block_size`` tokens that start
    ``stride`` apart (default: half a window), each scoring the tokens not yet scored, so that
    every token but the first window's has at least ``block_size - stride`` tokens of context.
    """
    nll, count = _total_nll(model, ids, stride)
    return math.exp(nll / count)


def perplexity_per_char(model: LanguageModel, tokenizer: Any, text: str) -> float:
    """Perplexity per character of ``text``: comparable between tokenizers, unlike per token.

    ``exp(total negative log-likelihood / characters scored)``; the first token is context only,
    so its characters do not count.
    """
    ids = tokenizer.encode(text)
    nll, _ = _total_nll(model, ids, None)
    return math.exp(nll / (len(text) - len(tokenizer.decode(ids[:1]))))


@torch.no_grad()
def _total_nll(model: LanguageModel, ids: torch.Tensor | Sequence[int],
               stride: int | None) -> tuple[float, int]:
    ids = torch.as_tensor(ids, dtype=torch.long)
    ids = ids[None] if ids.dim() == 1 else ids
    check_ids(ids, model.vocab_size, None)
    T = ids.size(1)
    if T < 2:
        raise ValueError(f"ids must hold at least 2 tokens per row, got {T}")
    window = T - 1 if model.block_size is None else min(model.block_size, T - 1)
    stride = max(1, window // 2) if stride is None else stride
    if not (isinstance(stride, int) and 1 <= stride <= window):
        raise ValueError(f"stride must be an integer in [1, {window}], got {stride!r}")
    total, scored, begin = 0.0, 1, 0  # scored: the position of the next token to score
    with evaluating(model):
        while scored < T:
            end = min(begin + window, T - 1)  # reads [begin, end), predicts [begin + 1, end]
            targets = ids[:, begin + 1 : end + 1].clone()
            targets[:, : scored - begin - 1] = -100  # scored by an earlier window
            logits = model(ids[:, begin:end])[0].float()
            total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                           ignore_index=-100, reduction="sum"))
            scored, begin = end + 1, begin + stride
    return total, ids.size(0) * (T - 1)
