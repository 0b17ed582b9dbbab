"""A reward model: the GPT with a scalar head, trained on preference pairs (Lesson 10).

:class:`RewardModel` reads the backbone's hidden states through one linear head: a score per
position. A reply's reward is the score at its last token, the end token that fine-tuning
taught the model to write, which has read the prompt and the whole reply.
:func:`bradley_terry_loss` trains it so that chosen replies outscore rejected ones
(Bradley & Terry, 1952; InstructGPT), through :func:`~llm_from_scratch.train.train`'s loss seam.

>>> import torch
>>> round(float(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))), 6)  # ln 2
0.693147
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch.model import GPT
from llm_from_scratch.preference import PreferencePairs, last_positions
from llm_from_scratch.train import RowDataset, TrainConfig, TrainResult, evaluate, train


class RewardModel(nn.Module):
    """A GPT backbone and a linear head from its hidden states to one number per position.

    >>> from llm_from_scratch.model import GPTConfig
    >>> rm = RewardModel(GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2,
    ...                                n_embd=8)))
    >>> ids, mask = torch.tensor([[1, 2, 3]]), torch.tensor([[False, True, True]])
    >>> rm(ids).shape, rm.score(ids, mask).shape
    (torch.Size([1, 3]), torch.Size([1]))
    """

    def __init__(self, backbone: GPT) -> None:
        super().__init__()
        self.backbone = backbone
        self.vocab_size = backbone.vocab_size
        self.head = nn.Linear(backbone.config.n_embd, 1)
        nn.init.zeros_(self.head.weight)  # every reply starts level: the loss starts at ln 2
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, T)``: the score at every position of ``ids`` ``(B, T)``."""
        return self.head(self.backbone.hidden_states(ids)).squeeze(-1).float()

    def score(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B,)``: each row's score at its last masked token (its reply's end token)."""
        if ids.shape != mask.shape:
            raise ValueError(f"ids and mask must have the same shape, got {tuple(ids.shape)} "
                             f"and {tuple(mask.shape)}")
        last = last_positions(mask)  # ValueError for an empty reply
        return self(ids).gather(1, last[:, None]).squeeze(1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(r_chosen − r_rejected)``: the chosen reply should score higher.

    Under the Bradley–Terry model, P(chosen preferred) = σ(r_chosen − r_rejected); this is
    its negative log-likelihood. ``logsigmoid`` keeps it finite for any margin.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen and r_rejected must have the same shape, got "
                         f"{tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}")
    return -F.logsigmoid(r_chosen - r_rejected).mean()


class PairDataset(RowDataset):
    """Preference pairs as batches ``(chosen_ids, chosen_last, rejected_ids, rejected_last)``.

    ``*_last`` hold each row's end-token position, so a batch knows where to read its scores;
    the training loop counts a batch's examples by its last tensor.
    """

    def __init__(self, pairs: PreferencePairs) -> None:
        self.chosen, self.rejected = pairs.chosen, pairs.rejected
        self.chosen_last, self.rejected_last = pairs.chosen.last, pairs.rejected.last

    def __len__(self) -> int:
        return len(self.chosen)

    def _rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c_last, r_last = self.chosen_last[rows], self.rejected_last[rows]
        return (self.chosen.ids[rows, : int(c_last.max()) + 1], c_last,
                self.rejected.ids[rows, : int(r_last.max()) + 1], r_last)


def _at(scores: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, last[:, None]).squeeze(1)


def pair_loss(model: RewardModel, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The training loop's loss for a reward model: Bradley–Terry on a batch of pairs."""
    chosen_ids, chosen_last, rejected_ids, rejected_last = batch
    return bradley_terry_loss(_at(model(chosen_ids), chosen_last),
                              _at(model(rejected_ids), rejected_last))


def pair_error(model: RewardModel, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The share of pairs that ``model`` ranks wrongly (ties count as half)."""
    chosen_ids, chosen_last, rejected_ids, rejected_last = batch
    margin = _at(model(chosen_ids), chosen_last) - _at(model(rejected_ids), rejected_last)
    return 1.0 - ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def pair_accuracy(model: RewardModel, pairs: PreferencePairs) -> float:
    """The share of ``pairs`` whose chosen reply ``model`` scores above the rejected one."""
    return 1.0 - evaluate(model, PairDataset(pairs), batch_size=256, loss_fn=pair_error)


#: The reward model's recipe: a hundred steps over a thousand-odd pairs, enough for a preference
#: as plain as manners (Lesson 10 measures it on held-out pairs).
REWARD_RECIPE = TrainConfig(
    block_size=128, batch_size=32, max_steps=100, learning_rate=3e-4, weight_decay=0.0,
    schedule="cosine", warmup_steps=10, min_lr=3e-5, eval_interval=25, eval_batches=1,
    seed=1337, dtype="auto",
)


def train_reward_model(
    sft: GPT, train_pairs: PreferencePairs, val_pairs: PreferencePairs,
    config: TrainConfig = REWARD_RECIPE, progress: bool = True,
) -> tuple[RewardModel, TrainResult]:
    """A reward model that starts from a copy of the fine-tuned model, trained on pairs."""
    torch.manual_seed(config.seed)
    model = RewardModel(copy.deepcopy(sft))
    result = train(model, PairDataset(train_pairs), PairDataset(val_pairs), config,
                   loss_fn=pair_loss, progress=progress, description="reward model")
    return model.eval(), result

