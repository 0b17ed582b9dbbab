"""Direct preference optimization: learning from pairs without a reward model (Lesson 10).

Rafailov et al. (2023) showed that the policy maximizing reward with a KL penalty ``β`` has a
closed form, so the reward can be written through the policy itself: ``β · log π/π_ref``, the
*implicit reward*. Bradley–Terry on implicit rewards is :func:`dpo_loss`; it needs the
reference's log-probabilities of each pair, computed once before training.

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
from tqdm import tqdm

from llm_from_scratch.model import GPT
from llm_from_scratch.preference import PreferencePairs, Responses, sequence_logprobs
from llm_from_scratch.rl_common import check_number
from llm_from_scratch.runtime import evaluating


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


def train_dpo(sft: GPT, pairs: PreferencePairs, config: DPOConfig = DPOConfig(), *,
              progress: bool = True) -> tuple[GPT, list[dict[str, float]], float]:
    """DPO from the fine-tuned model ``sft`` (also the reference) on preference ``pairs``.

    Returns the policy, a row of figures per step (loss, implicit-reward margin and accuracy
    on the step's pairs), and the seconds taken.
    """
    torch.manual_seed(config.seed)
    policy = copy.deepcopy(sft).eval()
    ref_chosen, ref_rejected = reference_logps(sft, pairs)
    chosen_tokens = pairs.chosen.mask.sum(dim=1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    history, start = [], time.perf_counter()
    for step in tqdm(range(config.steps), desc="dpo", disable=not progress, mininterval=1.0):
        rows = torch.randint(len(pairs), (config.batch_size,), generator=generator)
        chosen = _logps(policy, pairs.chosen, rows)
        rejected = _logps(policy, pairs.rejected, rows)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, ref_chosen[rows], ref_rejected[rows], config.beta)
        nll = (-chosen / chosen_tokens[rows]).mean()  # per token, as RPO and TRL's "sft" term
        loss = losses.mean() + config.nll_coef * nll
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        optimizer.step()
        margin = chosen_rewards - rejected_rewards
        history.append({"step": step, "loss": losses.mean().item(), "nll": nll.item(),
                        "margin": float(margin.mean()),
                        "reward_accuracy": float((margin > 0).float().mean())})
    return policy.eval(), history, time.perf_counter() - start
