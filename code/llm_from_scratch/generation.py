"""Inference: sampling, beam search, streaming and scoring with the book's models (Lesson 9).

A language model gives, for every position, logits over the next token. Generating text is a
loop: pick one token, append it, ask again. :func:`generate` picks by sampling, shaped by
:func:`filter_logits` (temperature, top-k, top-p, min-p) and
:func:`apply_repetition_penalty`; :func:`beam_search` keeps the most likely sequences instead;
:func:`stream` yields text as it is produced. A GPT reads each token once, thanks to its KV
cache (:class:`llm_from_scratch.attention.KVCache`). :func:`perplexity` and
:func:`perplexity_per_char` (from :mod:`llm_from_scratch.perplexity`) score a text.

>>> import torch
>>> from llm_from_scratch.model import GPT, GPTConfig
>>> model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
>>> out = generate(model, torch.tensor([[1, 2]]), max_new_tokens=5, top_k=3,
...                generator=torch.Generator().manual_seed(0))
>>> out.shape
torch.Size([1, 7])
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llm_from_scratch.attention import KVCache
from llm_from_scratch.model import GPT, LanguageModel, check_ids
from llm_from_scratch.perplexity import perplexity, perplexity_per_char
from llm_from_scratch.runtime import evaluating

__all__ = ["apply_repetition_penalty", "beam_search", "decode_stream", "filter_logits",
           "generate", "generate_steps", "perplexity", "perplexity_per_char", "stream"]


def filter_logits(
    logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
    top_p: float | None = None, min_p: float | None = None,
) -> torch.Tensor:
    """``logits`` ``(..., V)`` divided by ``temperature``, excluded tokens set to ``-inf``.

    Applied in Hugging Face's order, with its rules: ``top_k`` keeps the ``k`` largest logits
    (ties with the ``k``-th survive); ``top_p`` keeps the smallest set of most likely tokens whose
    probabilities add up to at least ``p`` (always one token at least); ``min_p`` keeps tokens at
    least ``min_p`` times as likely as the most likely one (after the temperature).

    >>> filter_logits(torch.tensor([2.0, 1.0, 1.0, 0.0]), top_k=2).tolist()
    [2.0, 1.0, 1.0, -inf]
    >>> filter_logits(torch.tensor([2.0, 1.0, 0.0]), temperature=0.5, top_p=0.9).tolist()
    [4.0, 2.0, -inf]
    """
    _check_filters(temperature, top_k, top_p, min_p, greedy_allowed=False)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # From the least likely up: drop tokens while all of them together hold <= 1 - p.
        ascending, order = torch.sort(logits, descending=False)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    if min_p is not None:
        probs = logits.softmax(dim=-1)
        threshold = min_p * probs.amax(dim=-1, keepdim=True)
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def apply_repetition_penalty(
    logits: torch.Tensor, ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make the tokens of ``ids`` ``(B, T)`` less likely in ``logits`` ``(B, V)``.

    CTRL (Keskar et al., 2019) divides a seen token's logit by ``penalty``, which would raise a
    negative one; as in ``transformers``, a positive logit is divided and a negative one
    multiplied, so a penalty above 1 always lowers it. Each token counts once.

    >>> apply_repetition_penalty(torch.tensor([[2.0, -2.0, 1.0]]), torch.tensor([[0, 1]]), 2.0)
    tensor([[ 1., -4.,  1.]])
    """
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, ids)
    penalised = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, ids, penalised)


def generate(
    model: LanguageModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``idx`` ``(B, T)`` followed by up to ``max_new_tokens`` sampled tokens per row.

    Each step applies :func:`apply_repetition_penalty` to the model's logits for the next
    token, then :func:`filter_logits`, and samples; ``temperature=0`` takes the most likely
    token instead (greedy). A row that produces ``eos_id`` is finished: its later positions are
    filled with ``eos_id``, and generation stops once every row is finished.

    Context: a prompt longer than ``block_size`` is cropped to its last ``block_size`` tokens.
    When the window is full, it restarts from its last ``block_size // 2`` tokens and grows
    again (see :class:`_Context`). A GPT with causal attention reads each token once through
    its KV cache (``use_cache``, on by default); without it, each step reads the whole window.
    Both read the same windows, so their logits agree to float rounding.

    The model runs in eval mode (no dropout) and is put back in its own mode afterwards, even
    if something fails.
    """
    steps = generate_steps(
        model, idx, max_new_tokens, use_cache=use_cache, generator=generator,
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, eos_id=eos_id,
    )
    return torch.cat([idx, *steps], dim=1)


@dataclass(frozen=True)
class _Sampling:
    """How :func:`generate` picks each token; checked when made."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    eos_id: int | None = None

    def __post_init__(self) -> None:
        _check_filters(self.temperature, self.top_k, self.top_p, self.min_p, greedy_allowed=True)
        penalty = self.repetition_penalty
        _require(math.isfinite(penalty) and penalty > 0, "repetition_penalty",
                 "a finite number > 0 (1 is none)", penalty)

    def choose(
        self, logits: torch.Tensor, idx: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The next token ``(B, 1)`` of each row of ``idx``, from the model's ``logits``."""
        logits = apply_repetition_penalty(logits, idx, self.repetition_penalty)
        if self.temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        # Subtract the maximum before dividing: a tiny temperature then gives 0 and -inf
        # (greedy), never inf - inf = nan. A temperature below float32's smallest normal
        # number would round to 0 (and 0 / 0 = nan); any such value is greedy too.
        logits = logits - logits.max(dim=-1, keepdim=True).values
        scale = max(self.temperature, torch.finfo(logits.dtype).tiny)
        logits = filter_logits(
            logits, temperature=scale, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p
        )
        return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def generate_steps(
    model: LanguageModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    **sampling: Any,
) -> Iterator[torch.Tensor]:
    """The tokens :func:`generate` appends, one ``(B, 1)`` tensor per step, as they come.

    Takes :func:`generate`'s arguments. They are checked at once; each step runs only when the
    loop asks for it, which lets a caller print or time the tokens one by one.

    >>> from llm_from_scratch.model import BigramLanguageModel
    >>> steps = generate_steps(BigramLanguageModel(5), torch.tensor([[0]]), 3, temperature=0)
    >>> [tuple(step.shape) for step in steps]
    [(1, 1), (1, 1), (1, 1)]
    """
    settings = _Sampling(**sampling)
    _check_prompt(model, idx, max_new_tokens, settings.eos_id)
    return _sample(model, idx, max_new_tokens, settings, use_cache, generator)


@torch.no_grad()  # on a generator function, torch switches gradients off only inside each step
def _sample(
    model: LanguageModel, idx: torch.Tensor, max_new_tokens: int, settings: _Sampling,
    use_cache: bool, generator: torch.Generator | None,
) -> Iterator[torch.Tensor]:
    eos_id = settings.eos_id
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    with evaluating(model):
        context = _Context(model, use_cache)
        for _ in range(max_new_tokens):
            next_id = settings.choose(context.next_logits(idx), idx, generator)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished[:, None], eos_id)
                finished |= next_id[:, 0] == eos_id
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id
            if finished.all():
                return


class _Context:
    """What the model reads each step: the context policy that every decoder here shares.

    The model reads ``idx[:, start:]``. While that fits in ``block_size`` positions, each step
    adds one token, and a KV cache lets a causal GPT read only that token. When it no longer
    fits, the window restarts from the last ``block_size // 2`` tokens, which are read afresh
    (cached again), and grows until it is full again. A window that slid by one token every
    step would move every token to a new position, so no cached key would stay valid and each
    step would read ``block_size`` tokens; restarting from half a window keeps the cache's
    saving for all but one step in ``block_size // 2``, at the price of a context between half
    a window and a whole one. The path without a cache reads the same windows, so both give
    the same logits.
    """

    def __init__(self, model: LanguageModel, use_cache: bool) -> None:
        self.model, self.block_size = model, model.block_size
        # Only a causal GPT can cache: without the mask, earlier outputs change as tokens arrive.
        cacheable = isinstance(model, GPT) and model.config.causal
        self.use_cache = use_cache and cacheable
        self.cache: list[KVCache] | None = None
        self.start = 0  # where the window begins in the sequence
        self.first_step = True

    def next_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``(B, V)`` for the token that follows each row of ``idx``."""
        T = idx.size(1)
        if self.block_size is not None and T - self.start > self.block_size:
            # A long prompt is cropped to a whole window; later, the window restarts at half.
            keep = self.block_size if self.first_step else max(1, self.block_size // 2)
            self.start, self.cache = T - keep, None
        self.first_step = False
        if not self.use_cache:
            return self.model(idx[:, self.start :])[0][:, -1, :].float()
        if self.cache is None:
            self.cache = self.model.new_kv_cache()
        read_from = self.start + len(self.cache[0])  # the tokens the cache has not seen
        return self.model(idx[:, read_from:], kv_cache=self.cache)[0][:, -1, :].float()

    def select(self, rows: torch.Tensor) -> None:
        """Keep the cache's batch rows ``rows``, to follow the beams beam search keeps."""
        for layer in self.cache or []:
            layer.select(rows)


@torch.no_grad()
def beam_search(
    model: LanguageModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
    early_stopping: bool | str = False,
) -> torch.Tensor:
    """The best continuation of each row of ``idx`` ``(B, T)``, by ``transformers``' beam search.

    Each step extends every beam by every token. Of the ``2 * num_beams`` best candidates by
    summed log-probability, those among the first ``num_beams`` that end in ``eos_id`` finish,
    scored ``sum / generated_length ** length_penalty`` (the end token counts, the prompt does
    not), and the ``num_beams`` best others go on; after ``max_new_tokens`` steps the best
    candidates finish. A row is done once it holds ``num_beams`` finished sequences and, unless
    ``early_stopping`` is True, no beam can beat the worst of them at its current length (False)
    or at its longest (``"never"``). Shorter results are padded with ``eos_id``. The context is
    as in :func:`generate`; ``num_beams=1`` is greedy decoding, as in ``transformers``.

    >>> from llm_from_scratch.model import BigramLanguageModel
    >>> beam_search(BigramLanguageModel(5), torch.tensor([[0]]), 3, num_beams=2).shape
    torch.Size([1, 4])
    """
    _check_beam_settings(num_beams, length_penalty, early_stopping)
    if num_beams == 1:
        return generate(model, idx, max_new_tokens, temperature=0, eos_id=eos_id)
    _check_prompt(model, idx, max_new_tokens, eos_id)
    B, T = idx.shape
    rows = [_Finished(num_beams, length_penalty, early_stopping, max_new_tokens) for _ in range(B)]
    # Every row starts as num_beams copies of its prompt; all but the first score -1e9, so that
    # the first step extends one beam only (Hugging Face's arrangement, kept for equal results).
    beams = idx.repeat_interleave(num_beams, dim=0)
    scores = torch.zeros(B, num_beams, device=idx.device)
    scores[:, 1:] = -1e9
    with evaluating(model):
        context = _Context(model, use_cache=True)
        for step in range(max_new_tokens):
            log_probs = F.log_softmax(context.next_logits(beams), dim=-1)
            V, last = log_probs.size(-1), step == max_new_tokens - 1
            totals = (scores[:, :, None] + log_probs.view(B, num_beams, V)).view(B, -1)
            top_scores, top = totals.topk(min(2 * num_beams, totals.size(-1)), dim=-1)
            parents = top // V + torch.arange(B, device=idx.device)[:, None] * num_beams
            kept = []  # (row of beams it extends, token, summed log-probability)
            for b, finished in enumerate(rows):
                candidates = zip(top_scores[b], parents[b].tolist(), (top[b] % V).tolist(),
                                 strict=True)
                kept += finished.take(candidates, beams, T, step + 1, last, eos_id)
            if last:
                break
            parents = torch.tensor([parent for parent, _, _ in kept], device=idx.device)
            tokens = torch.tensor([[token] for _, token, _ in kept], device=idx.device)
            beams = torch.cat((beams[parents], tokens), dim=1)
            scores = torch.stack([score for _, _, score in kept]).view(B, num_beams)
            context.select(parents)
            for b, finished in enumerate(rows):
                finished.update(scores[b, 0], step + 1)
            if all(finished.done for finished in rows):
                break
    return _best_sequences(idx, rows, eos_id)


class _Finished:
    """The best ``num_beams`` finished sequences of one row, and whether the row is done."""

    def __init__(
        self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_new: int
    ) -> None:
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.early_stopping, self.max_new = early_stopping, max_new
        self.best: list[tuple[float, torch.Tensor]] = []  # (score, generated tokens), best first
        self.done = False

    def take(
        self, candidates: Iterator[tuple[torch.Tensor, int, int]], beams: torch.Tensor, T: int,
        generated: int, last: bool, eos_id: int | None,
    ) -> list[tuple[int, int, torch.Tensor]]:
        """Keep the candidates that end; return the ``num_beams`` best of the others.

        Candidates come best first, as ``(summed log-probability, parent beam, token)``.
        """
        going_on = []
        for rank, (score, parent, token) in enumerate(candidates):
            if last or token == eos_id:
                # Only the first num_beams may finish: the rest are there so that num_beams go on.
                if rank < self.num_beams and not self.done:
                    tokens = torch.cat((beams[parent, T:], beams.new_tensor([token])))
                    self.best.append((float(score / generated**self.length_penalty), tokens))
                    self.best.sort(key=lambda entry: -entry[0])  # stable: ties keep the older
                    del self.best[self.num_beams :]
            elif len(going_on) < self.num_beams:
                going_on.append((parent, token, score))
        return going_on

    def update(self, best_running: torch.Tensor, generated: int) -> None:
        """Decide whether a beam with summed log-probability ``best_running`` can still win."""
        if self.done or len(self.best) < self.num_beams:
            return
        if self.early_stopping is True:
            self.done = True
            return
        # A longer sequence divides by a larger length: with a positive penalty, "never" asks
        # whether the best beam could win at the longest length it may reach.
        never = self.early_stopping == "never" and self.length_penalty > 0
        length = self.max_new if never else generated
        self.done = not float(best_running / length**self.length_penalty) > self.best[-1][0]


def _best_sequences(idx: torch.Tensor, rows: list[_Finished], eos_id: int | None) -> torch.Tensor:
    best = [finished.best[0][1] if finished.best else idx.new_empty(0) for finished in rows]
    out = idx.new_full((idx.size(0), max(map(len, best))), -1 if eos_id is None else eos_id)
    for b, tokens in enumerate(best):
        out[b, : len(tokens)] = tokens
    return torch.cat((idx, out), dim=1)


def stream(
    model: LanguageModel, tokenizer: Any, prompt: str, **generate_kwargs: Any
) -> Iterator[str]:
    """The text :func:`generate` continues ``prompt`` with, in pieces as the tokens come.

    A token can hold part of a character's UTF-8 bytes, so a piece is yielded as soon as its
    bytes decode; the pieces join into ``tokenizer.decode`` of the generated tokens. Arguments
    are checked at once, not at the first piece.

    >>> from llm_from_scratch.model import BigramLanguageModel
    >>> from llm_from_scratch.tokenizer_base import CharTokenizer
    >>> tok = CharTokenizer.from_text("ab")
    >>> pieces = stream(BigramLanguageModel(2), tok, "a", max_new_tokens=3)
    >>> len("".join(pieces))
    3
    """
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    return decode_stream(tokenizer, generate_steps(model, idx, **generate_kwargs))


def decode_stream(tokenizer: Any, steps: Iterable[torch.Tensor]) -> Iterator[str]:
    """The text of ``steps`` (one ``(1, 1)`` token each), a piece whenever whole characters end."""
    # The decoder keeps a character's first bytes until the rest arrives; "replace" turns
    # broken bytes into U+FFFD, as tokenizer.decode does.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for step in steps:
        if piece := decoder.decode(tokenizer.decode_bytes([int(step[0, 0])])):
            yield piece
    if tail := decoder.decode(b"", final=True):
        yield tail


def _check_filters(temperature: float, top_k: int | None, top_p: float | None,
                   min_p: float | None, greedy_allowed: bool) -> None:
    ok = math.isfinite(temperature) and (temperature > 0 or greedy_allowed and temperature == 0)
    allowed = ">= 0 (0 is greedy)" if greedy_allowed else "> 0"
    _require(ok, "temperature", f"a finite number {allowed}", temperature)
    _require(top_k is None or _is_int(top_k) and top_k >= 1, "top_k", "None or an integer >= 1",
             top_k)
    _require(top_p is None or 0 < top_p <= 1, "top_p", "None or a number in (0, 1]", top_p)
    _require(min_p is None or 0 <= min_p <= 1, "min_p", "None or a number in [0, 1]", min_p)


def _check_prompt(model: LanguageModel, idx: torch.Tensor, max_new_tokens: int,
                  eos_id: int | None) -> None:
    _require(_is_int(max_new_tokens) and max_new_tokens >= 0, "max_new_tokens",
             "an integer >= 0", max_new_tokens)
    V = model.vocab_size
    _require(eos_id is None or _is_int(eos_id) and 0 <= eos_id < V, "eos_id",
             f"None or a token id in [0, {V})", eos_id)
    check_ids(idx, V, None)  # a longer prompt is fine: it is cropped to block_size
    if idx.size(1) == 0:
        raise ValueError("idx must hold at least one token per row to continue from")


def _check_beam_settings(num_beams: int, length_penalty: float, early_stopping: Any) -> None:
    _require(_is_int(num_beams) and num_beams >= 1, "num_beams", "an integer >= 1", num_beams)
    _require(math.isfinite(length_penalty), "length_penalty", "a finite number", length_penalty)
    _require(early_stopping is True or early_stopping is False or early_stopping == "never",
             "early_stopping", "True, False or 'never'", early_stopping)


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    """Raise a ValueError naming the argument and what it may be, unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
