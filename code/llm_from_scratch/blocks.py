"""The transformer block: attention and a feed-forward network, each wrapped in a residual
connection with a normalization in front (pre-norm, GPT-2 and every model since) or after
(post-norm, the original Transformer). Lesson 5 builds it; switches turn each piece off so the
book can measure what each one buys.

>>> import torch
>>> block = Block(n_embd=32, n_head=4, block_size=8)
>>> block(torch.randn(2, 8, 32)).shape
torch.Size([2, 8, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.attention import KVCache, MultiHeadAttention
from llm_from_scratch.norm import make_norm

#: GELU forms: GPT-2's tanh approximation, or the exact function.
GELU_FORMS = ("tanh", "exact")


class FeedForward(nn.Module):
    """Per-token MLP: expand to ``4 * n_embd``, GELU, project back (Vaswani et al.; GPT-2).

    Attention moves information *between* tokens; this is where each token *computes* on what it
    gathered. GELU defaults to GPT-2's tanh approximation, so GPT-2's weights reproduce exactly;
    ``gelu="exact"`` is the exact form (and on a CPU the faster one).

    >>> FeedForward(8)(torch.randn(3, 8)).shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        n_embd: int,
        hidden: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        gelu: str = "tanh",
    ) -> None:
        super().__init__()
        if gelu not in GELU_FORMS:
            raise ValueError(f"gelu must be one of {GELU_FORMS}, got {gelu!r}")
        hidden = 4 * n_embd if hidden is None else hidden
        # PyTorch's F.gelu names the exact form approximate="none".
        self.approximate = "tanh" if gelu == "tanh" else "none"
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """One transformer block. Defaults are GPT-2's: pre-norm, LayerNorm, residuals, MLP.

    - ``prenorm=True``: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``;
    - ``prenorm=False`` (post-norm): ``ln_1(x + attn(x))``, then ``ln_2(x + mlp(x))``;
    - ``residual=False`` drops the ``x +``; ``ffwd=False`` drops the MLP; ``norm=None`` the norms.
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
        ffwd: bool = True,
        residual: bool = True,
        norm: str | None = "layernorm",
        prenorm: bool = True,
        gelu: str = "tanh",
    ) -> None:
        super().__init__()
        self.residual, self.prenorm = residual, prenorm
        self.ln_1 = make_norm(norm, n_embd, bias)
        self.attn = MultiHeadAttention(
            n_embd, n_head, block_size, n_kv_head=n_kv_head, bias=bias, dropout=dropout,
            causal=causal, rope=rope,
        )
        self.ln_2 = make_norm(norm, n_embd, bias) if ffwd else None
        self.mlp = FeedForward(n_embd, bias=bias, dropout=dropout, gelu=gelu) if ffwd else None

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, layer, **kwargs) -> torch.Tensor:
        if self.prenorm:
            out = layer(norm(x), **kwargs)
            return x + out if self.residual else out
        out = layer(x, **kwargs)
        return norm(x + out if self.residual else out)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = self._sublayer(x, self.ln_1, self.attn, padding_mask=padding_mask, kv_cache=kv_cache)
        if self.mlp is not None:
            x = self._sublayer(x, self.ln_2, self.mlp)
        return x
