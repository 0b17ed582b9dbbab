"""The language models of the book: a bigram table and the GPT (Lessons 2–7).

:class:`GPT` is built from the components of Lessons 2–6. Its defaults are GPT-2's design;
the switches in :class:`GPTConfig` (``ffwd``, ``residual``, ``norm``, ``prenorm``, ``causal``,
``pos_encoding``) turn single pieces off so that each lesson can train the model *without* its
new piece and measure what that piece is worth (the book's loss progression).

>>> import torch
>>> config = GPTConfig(vocab_size=65, block_size=8, n_layer=2, n_head=4, n_embd=32)
>>> ids = torch.zeros(1, 8, dtype=torch.long)
>>> logits, loss = GPT(config)(ids, ids)
>>> logits.shape
torch.Size([1, 8, 65])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.attention import KVCache, check_heads
from llm_from_scratch.blocks import GELU_FORMS, Block
from llm_from_scratch.norm import make_norm
from llm_from_scratch.positions import sinusoidal_positions

POS_ENCODINGS = ("learned", "sinusoidal", "rope", "none")


@dataclass
class GPTConfig:
    """Everything that fixes a GPT's shape. Defaults: GPT-2 design at a CPU-sized scale."""

    vocab_size: int = 65
    block_size: int = 64  # the longest context the model can see
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_kv_head: int | None = None  # None: one key/value head per query head (no GQA)
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    pos_encoding: str = "learned"  # "learned" (GPT-2), "sinusoidal", "rope" or "none"
    ffwd: bool = True  # the feed-forward network in each block
    residual: bool = True  # residual connections around attention and feed-forward
    norm: str | None = "layernorm"  # "layernorm", "rmsnorm" or None
    prenorm: bool = True  # normalize before each sub-layer (GPT-2) or after (original)
    causal: bool = True  # the causal mask; False lets positions see the future (Lesson 6)
    tie_weights: bool = True  # the output layer shares the token embedding matrix (GPT-2)
    init_std: float = 0.02  # std of the normal initialisation of weights (GPT-2: 0.02)
    gelu: str = "tanh"  # GELU form: "tanh" (GPT-2's approximation) or "exact"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_heads(self.n_embd, self.n_head, self.n_kv_head)
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(
                f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}"
            )
        if self.norm not in ("layernorm", "rmsnorm", None):
            raise ValueError(f"norm must be 'layernorm', 'rmsnorm' or None, got {self.norm!r}")
        if self.gelu not in GELU_FORMS:
            raise ValueError(f"gelu must be one of {GELU_FORMS}, got {self.gelu!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


def check_ids(idx: torch.Tensor, vocab_size: int, block_size: int | None) -> None:
    """A clear error for ids a model cannot read, instead of an IndexError deep in torch."""
    if idx.dim() != 2:
        raise ValueError(f"expected token ids of shape (B, T), got {tuple(idx.shape)}")
    if idx.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"token ids must be integers (torch.long), got {idx.dtype}")
    if block_size is not None and idx.size(1) > block_size:
        raise ValueError(
            f"sequence length {idx.size(1)} exceeds block_size={block_size}; crop the input to "
            f"its last {block_size} tokens (generate() does this for you)"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}); got ids from {int(idx.min())} to "
            f"{int(idx.max())}. Was the text encoded with a different tokenizer?"
        )


def _loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    if targets is None:
        return None
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match ids {tuple(logits.shape[:-1])}"
        )
    # Mean negative log-likelihood per token, in nats; targets of -100 are ignored (padding).
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
    )


class LanguageModel(nn.Module):
    """Shared by the book's models: vocabulary and context size, and checking their input.

    :func:`llm_from_scratch.generation.generate` samples text from any of them (Lesson 9).
    """

    vocab_size: int
    block_size: int | None
    #: Check the ids of every call. The trainer checks its whole dataset once and turns this
    #: off while it trains (reading the ids would make every step wait for them).
    check_inputs: bool = True


class BigramLanguageModel(LanguageModel):
    """The simplest language model: the next token depends only on the current one.

    A ``(V, V)`` table of logits, read by embedding lookup (Lesson 2).

    >>> model = BigramLanguageModel(vocab_size=5)
    >>> model(torch.tensor([[0, 1, 2]]))[0].shape
    torch.Size([1, 3, 5])
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.vocab_size, self.block_size = vocab_size, None
        self.token_embedding = nn.Embedding(vocab_size, vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.check_inputs:
            check_ids(idx, self.vocab_size, None)
        logits = self.token_embedding(idx)  # (B, T, V): row idx of the table
        return logits, _loss(logits, targets)


class GPT(LanguageModel):
    """A GPT: embeddings, ``n_layer`` transformer blocks, a final norm and a language-model head.

    >>> model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16))
    >>> sum(p.numel() for p in model.parameters())
    4480
    """

    pos_table: torch.Tensor | None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size, self.block_size = config.vocab_size, config.block_size
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)  # token embeddings
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if c.pos_encoding == "learned" else None
        pos_table = (
            sinusoidal_positions(c.block_size, c.n_embd) if c.pos_encoding == "sinusoidal" else None
        )
        self.register_buffer("pos_table", pos_table, persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList(
            Block(
                n_embd=c.n_embd,
                n_head=c.n_head,
                block_size=c.block_size,
                n_kv_head=c.n_kv_head,
                bias=c.bias,
                dropout=c.dropout,
                causal=c.causal,
                rope=c.pos_encoding == "rope",
                ffwd=c.ffwd,
                residual=c.residual,
                norm=c.norm,
                prenorm=c.prenorm,
                gelu=c.gelu,
            )
            for _ in range(c.n_layer)
        )
        # Pre-norm leaves the residual stream un-normalized, so one last norm before the head.
        self.ln_f = make_norm(c.norm, c.n_embd, c.bias) if c.prenorm else nn.Identity()
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            # Weight tying (Press & Wolf, 2017): reading a token in and writing it out share one
            # matrix; fewer parameters and, for small models, a better loss.
            self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=c.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # GPT-2: each residual branch's output projection starts smaller, by 1/sqrt(2 * n_layer),
        # so the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=c.init_std / math.sqrt(2 * c.n_layer))

    def num_parameters(self) -> int:
        """Distinct parameters (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self) -> list[KVCache]:
        """An empty KV cache for :meth:`forward`: one :class:`KVCache` per block (Lesson 9)."""
        return [KVCache() for _ in self.h]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        *,
        kv_cache: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab_size)`` for ids ``(B, T)``, and the loss if ``targets`` given.

        With ``kv_cache`` (from :meth:`new_kv_cache`), ``idx`` continues the tokens the cache
        has seen: it reads only the new ones and adds their keys and values to the cache.

        >>> model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8))
        >>> ids, cache = torch.tensor([[1, 2, 3]]), model.new_kv_cache()
        >>> first = model(ids[:, :2], kv_cache=cache)[0]        # reads tokens 0 and 1
        >>> step = model(ids[:, 2:], kv_cache=cache)[0]         # reads token 2 only
        >>> torch.allclose(step[:, -1], model(ids)[0][:, -1], atol=1e-6)
        True
        """
        logits = self.lm_head(self.hidden_states(idx, padding_mask, kv_cache=kv_cache))
        return logits, _loss(logits, targets)

    def hidden_states(
        self,
        idx: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        kv_cache: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """The last block's normalized outputs ``(B, T, n_embd)``: what the head reads.

        A reward model or a value head reads them instead of the logits (Lesson 10).
        """
        if self.check_inputs:
            check_ids(idx, self.vocab_size, self.block_size)
        past = 0 if kv_cache is None else self._cached_length(kv_cache, idx.size(1))
        T = idx.size(1)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + T, device=idx.device))
        elif self.pos_table is not None:
            x = x + self.pos_table[past : past + T]
        x = self.drop(x)
        for i, block in enumerate(self.h):
            layer_cache = None if kv_cache is None else kv_cache[i]
            x = block(x, padding_mask=padding_mask, kv_cache=layer_cache)
        return self.ln_f(x)

    def _cached_length(self, kv_cache: list[KVCache], T: int) -> int:
        if len(kv_cache) != len(self.h):
            raise ValueError(
                f"kv_cache has {len(kv_cache)} layers, the model {len(self.h)}: "
                "make one with model.new_kv_cache()"
            )
        past = len(kv_cache[0])
        if past + T > self.block_size:
            raise ValueError(
                f"{past} cached + {T} new tokens exceed block_size={self.block_size}: start a new "
                f"cache from the last {self.block_size} tokens"
            )
        return past
