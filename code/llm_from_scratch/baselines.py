"""The language models that came before attention: an MLP over a fixed window, and an LSTM.

Both read the same character ids as the book's GPT and return ``(logits, loss)`` like it, so
:func:`llm_from_scratch.train.train` trains them unchanged and they take their rows in the loss
progression (appendix "Before attention").

- :class:`MLPLanguageModel` is Bengio et al. (2003)'s neural probabilistic language model: embed
  the last ``window`` characters, concatenate the embeddings, one ``tanh`` hidden layer,
  logits. Its context is fixed: it never sees further back than its window.
- :class:`LSTMLanguageModel` is a one-layer LSTM (Hochreiter & Schmidhuber, 1997, with the
  forget gate of Gers, Schmidhuber & Cummins, 2000), its cell written out gate by gate with the
  same parameter layout as :class:`torch.nn.LSTM`, so the two can be compared weight for weight.
  Its context is unbounded, but it reads one step at a time.

>>> model = MLPLanguageModel(MLPConfig(vocab_size=65, window=8, n_embd=16, n_hidden=64))
>>> model(torch.zeros(2, 5, dtype=torch.long))[0].shape
torch.Size([2, 5, 65])
>>> lstm = LSTMLanguageModel(LSTMConfig(vocab_size=65, n_embd=16, n_hidden=32))
>>> lstm(torch.zeros(2, 5, dtype=torch.long))[0].shape
torch.Size([2, 5, 65])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.model import LanguageModel, _loss, check_ids
from llm_from_scratch.train import check_number


@dataclass(frozen=True)
class MLPConfig:
    """An MLP language model: a window of ``window`` characters, each embedded in ``n_embd``."""

    vocab_size: int = 65
    window: int = 8  # how many characters the model sees, the current one included; no more
    n_embd: int = 16  # embedding size of one character
    n_hidden: int = 128  # width of the tanh hidden layer

    def __post_init__(self) -> None:
        for name in ("vocab_size", "window", "n_embd", "n_hidden"):
            check_number(f"MLPConfig.{name}", getattr(self, name), 0, low_open=True, integer=True)

    def to_dict(self) -> dict:
        return {"kind": "mlp", **asdict(self)}


class MLPLanguageModel(LanguageModel):
    """Bengio et al. (2003): concatenated embeddings of a fixed window, a tanh layer, logits.

    Positions near the start of a sequence see fewer than ``window`` characters; the missing
    ones are zero vectors, as if the text were padded on the left.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size, self.block_size = config.vocab_size, None  # any length: it slides
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.hidden = nn.Linear(config.window * config.n_embd, config.n_hidden)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.check_inputs:
            check_ids(idx, self.vocab_size, None)
        k = self.config.window
        emb = self.token_embedding(idx)  # (B, T, C)
        emb = F.pad(emb, (0, 0, k - 1, 0))  # k-1 zero vectors before the first character
        windows = emb.unfold(1, k, 1)  # (B, T, C, k): the k embeddings ending at each position
        x = windows.transpose(2, 3).flatten(2)  # (B, T, k*C), oldest character first
        logits = self.head(torch.tanh(self.hidden(x)))
        return logits, _loss(logits, targets)


@dataclass(frozen=True)
class LSTMConfig:
    """A one-layer LSTM language model."""

    vocab_size: int = 65
    n_embd: int = 32  # embedding size of one character
    n_hidden: int = 64  # size of the hidden and cell states

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_embd", "n_hidden"):
            check_number(f"LSTMConfig.{name}", getattr(self, name), 0, low_open=True,
                         integer=True)

    def to_dict(self) -> dict:
        return {"kind": "lstm", **asdict(self)}


def lstm_cell(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_ih: torch.Tensor,
    weight_hh: torch.Tensor, bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step: gates from the input and the last hidden state, then the new ``(h, c)``.

    The rows of the weights are the input, forget, cell and output gates, as in ``nn.LSTM``.
    """
    i, f, g, o = (x @ weight_ih.T + h @ weight_hh.T + bias).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # forget some, write some
    h = torch.sigmoid(o) * torch.tanh(c)  # expose some of the cell
    return h, c


class LSTMLanguageModel(LanguageModel):
    """Embed, run :func:`lstm_cell` over the sequence from a zero state, read logits from ``h``."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size, self.block_size = config.vocab_size, None
        C, H = config.n_embd, config.n_hidden
        self.token_embedding = nn.Embedding(config.vocab_size, C)
        bound = H**-0.5  # nn.LSTM's initialization: uniform in ±1/sqrt(hidden size)
        self.weight_ih = nn.Parameter(torch.empty(4 * H, C).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(4 * H).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(4 * H).uniform_(-bound, bound))
        self.head = nn.Linear(H, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.check_inputs:
            check_ids(idx, self.vocab_size, None)
        emb = self.token_embedding(idx)  # (B, T, C)
        h = c = emb.new_zeros(idx.shape[0], self.config.n_hidden)
        bias = self.bias_ih + self.bias_hh
        states = []
        for t in range(idx.shape[1]):  # one step at a time: step t needs step t-1's state
            h, c = lstm_cell(emb[:, t], h, c, self.weight_ih, self.weight_hh, bias)
            states.append(h)
        logits = self.head(torch.stack(states, dim=1))  # (B, T, V)
        return logits, _loss(logits, targets)
