"""Direct preference optimization: learning from pairs without a reward model (Lesson 10).

Rafailov et al. (2023) showed that the policy maximizing reward with a KL penalty ``β`` has a
closed form, so the reward can be written through the policy itself: ``β · log π/π_ref``, the
*implicit reward*. Bradley–Terry on implicit rewards is :func:`dpo_loss`; it needs the
reference's log-probabilities of each pair, computed once before training (:class:`DPOPairs`).
Training goes through :func:`~llm_from_scratch.train.train`'s loss seam (:class:`DPOLoss`),
like the reward model's.

>>> import torch
>>> zero = torch.zeros(1)
>>> losses, chosen, rejected = dpo_loss(zero, zero, zero, zero, beta=0.1)
>>> round(float(losses), 6), float(chosen), float(rejected)  # ln 2 while policy == reference
(0.693147, 0.0, 0.0)
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm_from_scratch import runtime
from llm_from_scratch.model import GPT
from llm_from_scratch.preference import PreferencePairs, Responses, select, sequence_logprobs
from llm_from_scratch.rl_common import check_number
from llm_from_scratch.runtime import evaluating
from llm_from_scratch.train import RowDataset, TrainConfig, train


def dpo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the DPO loss, and the chosen and rejected replies' implicit rewards.

    ``loss = −log σ(β · ((log π_c − log π_r) − (log π_ref,c − log π_ref,r)))``, and the implicit
    rewards ``β · (log π − log π_ref)``, detached, as in the paper's reference implementation.
    """
    check_number("dpo_loss", "beta", beta, 0.0, low_open=True)
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                       ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"the chosen and rejected log-probabilities (policy and reference) must "
                         f"have one shape, got {sorted(shapes)}")
    policy_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (policy_logratios - ref_logratios))
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


@dataclass(frozen=True)
class DPOConfig:
    """DPO's settings; ``nll_coef > 0`` adds the chosen replies' negative log-likelihood (RPO)."""

    steps: int = 150
    batch_size: int = 32  # pairs per step
    learning_rate: float = 2e-5
    beta: float = 0.1
    nll_coef: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            check_number("DPOConfig", name, getattr(self, name), 1, integer=True)
        for name in ("learning_rate", "beta", "grad_clip"):
            check_number("DPOConfig", name, getattr(self, name), 0.0, low_open=True)
        check_number("DPOConfig", "nll_coef", self.nll_coef, 0.0)
        check_number("DPOConfig", "seed", self.seed, -(2**63), 2**63 - 1, integer=True)

    def to_dict(self) -> dict:
        return asdict(self)


def _logps(model: GPT, responses: Responses, rows: torch.Tensor) -> torch.Tensor:
    width = int(responses.last[rows].max()) + 1
    return sequence_logprobs(model, responses.ids[rows, :width], responses.mask[rows, :width])


@torch.no_grad()
def reference_logps(reference: GPT, pairs: PreferencePairs, batch_size: int = 256
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference model's log-probabilities of every chosen and rejected reply."""
    chosen, rejected = [], []
    with evaluating(reference):
        for rows in torch.arange(len(pairs)).split(batch_size):
            chosen.append(_logps(reference, pairs.chosen, rows))
            rejected.append(_logps(reference, pairs.rejected, rows))
    return torch.cat(chosen), torch.cat(rejected)


class DPOPairs(RowDataset):
    """Preference pairs as batches for :func:`~llm_from_scratch.train.train`, the reference's
    log-probabilities computed once: ``(chosen_ids, chosen_mask, rejected_ids, rejected_mask,
    ref_chosen, ref_rejected, chosen_tokens)``.

    ``chosen_tokens`` (each chosen reply's length, for the NLL per token) comes last, so the
    training loop counts a batch by its pairs.
    """

    def __init__(self, pairs: PreferencePairs, reference: GPT) -> None:
        self.chosen, self.rejected = pairs.chosen, pairs.rejected
        self.ref_chosen, self.ref_rejected = reference_logps(reference, pairs)
        self.chosen_tokens = pairs.chosen.mask.sum(dim=1)

    def __len__(self) -> int:
        return len(self.chosen)

    def _rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c_width = int(self.chosen.last[rows].max()) + 1
        r_width = int(self.rejected.last[rows].max()) + 1
        return (self.chosen.ids[rows, :c_width], self.chosen.mask[rows, :c_width],
                self.rejected.ids[rows, :r_width], self.rejected.mask[rows, :r_width],
                self.ref_chosen[rows], self.ref_rejected[rows], self.chosen_tokens[rows])


class DPOLoss:
    """The training loop's loss for DPO: mean :func:`dpo_loss`, plus ``nll_coef`` times the
    chosen replies' negative log-likelihood per token (RPO, TRL's "sft" term).

    The loop knows only the loss, so each training step's figures are kept in ``history``:
    the DPO loss, the NLL, the mean implicit-reward margin (chosen − rejected), the share of
    pairs it ranks right, and the chosen replies' log-probability change from the reference
    (nats per reply). Evaluation, which runs without gradients, is not recorded.
    """

    def __init__(self, beta: float, nll_coef: float = 0.0) -> None:
        self.beta, self.nll_coef = beta, nll_coef
        self.history: list[dict[str, float]] = []

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        c_ids, c_mask, r_ids, r_mask, ref_chosen, ref_rejected, chosen_tokens = batch
        chosen = sequence_logprobs(model, c_ids, c_mask)
        rejected = sequence_logprobs(model, r_ids, r_mask)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, self.beta)
        nll = (-chosen / chosen_tokens).mean()
        if torch.is_grad_enabled():  # a training step, not one of the loop's evaluations
            margin = chosen_rewards - rejected_rewards
            self.history.append({
                "step": len(self.history), "loss": losses.mean().item(), "nll": nll.item(),
                "margin": float(margin.mean()),
                "reward_accuracy": float((margin > 0).float().mean()),
                "chosen_logp_change": float(chosen_rewards.mean()) / self.beta})
        return losses.mean() + self.nll_coef * nll


def dpo_train_config(config: DPOConfig, block_size: int) -> TrainConfig:
    """The training loop's settings for ``config``: a constant rate, no weight decay, the
    precision the hardware runs fastest, and one evaluation at the end."""
    return TrainConfig(
        block_size=block_size, batch_size=config.batch_size, max_steps=config.steps,
        learning_rate=config.learning_rate, weight_decay=0.0, grad_clip=config.grad_clip,
        schedule="constant", eval_interval=config.steps, eval_batches=1, seed=config.seed,
        dtype="auto")


def train_dpo(sft: GPT, pairs: PreferencePairs, config: DPOConfig = DPOConfig(), *,
              progress: bool = True) -> tuple[GPT, list[dict[str, float]], float]:
    """DPO from the fine-tuned model ``sft`` (also the reference) on preference ``pairs``,
    through :func:`~llm_from_scratch.train.train`.

    Returns the policy, a row of figures per step (see :class:`DPOLoss`) and the seconds taken.
    The loop's validation loss is read on the first batch of training pairs only: it is not
    how DPO is judged, and the whole set would cost as much as training.
    """
    start = time.perf_counter()
    train_config = dpo_train_config(config, sft.config.block_size)
    # The reference's log-probabilities in the precision the policy's are computed in, so the
    # two agree exactly at the first step and the loss starts at ln 2.
    dtype = runtime.resolve_dtype(train_config.dtype, train_config.device)
    with runtime.autocast(train_config.device, dtype):
        data = DPOPairs(pairs, sft)
        val = DPOPairs(_first(pairs, config.batch_size), sft)
    policy, loss_fn = copy.deepcopy(sft), DPOLoss(config.beta, config.nll_coef)
    train(policy, data, val, train_config, loss_fn=loss_fn, progress=progress,
          description="dpo")
    return policy.eval(), loss_fn.history, time.perf_counter() - start


def _first(pairs: PreferencePairs, n: int) -> PreferencePairs:
    rows = range(min(n, len(pairs)))
    return PreferencePairs(select(pairs.chosen, rows), select(pairs.rejected, rows),
                           pairs.chosen_grades[:n], pairs.rejected_grades[:n])
