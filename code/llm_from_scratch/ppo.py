"""RLHF with PPO: a policy learns from a reward model, held near a reference (Lesson 10).

The recipe of InstructGPT (Ouyang et al., 2022), after Ziegler et al. (2019) and PPO (Schulman
et al., 2017), at the book's scale. Each step samples replies from the policy (a *rollout*),
scores them with the reward model at their end token, and subtracts at every reply token a
penalty ``kl_coef · (log π − log π_ref)`` for straying from the fine-tuned reference. A value
model (a copy of the reward model) estimates the return; :func:`gae` turns rewards and values
into advantages; then several epochs of minibatches follow the clipped surrogate
(:func:`ppo_losses`). :func:`~llm_from_scratch.rl_common.policy_loop` alternates the two.

Per-token tensors are ``(B, T)`` and aligned with the token ids: position ``t`` holds what
concerns token ``t`` (its log-probability, the reward for choosing it, the value of the state
before it); a mask marks the reply tokens.

>>> import torch
>>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), gamma=1.0, lam=1.0)
>>> adv.tolist(), ret.tolist()
([[0.5, 0.5]], [[1.0, 1.0]])
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from llm_from_scratch.model import GPT
from llm_from_scratch.preference import (
    Responses,
    last_positions,
    sample_responses,
    token_logprobs,
)
from llm_from_scratch.reward import RewardModel
from llm_from_scratch.rl_common import Learner, check_number, masked_mean, policy_loop, whiten
from llm_from_scratch.tasks import Task


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al., 2016): ``(advantages, returns)``.

    ``rewards`` and ``values`` are ``(B, T)``; the value after the last position is 0, so
    entries after a reply's last token must be 0 too. Going backward,
    ``δ_t = r_t + γ V_{t+1} − V_t`` and ``A_t = δ_t + γ λ A_{t+1}``; returns are ``A + V``.
    """
    if rewards.shape != values.shape or rewards.dim() != 2:
        raise ValueError(f"rewards and values must have the same (B, T) shape, got "
                         f"{tuple(rewards.shape)} and {tuple(values.shape)}")
    check_number("gae", "gamma", gamma, 0.0, 1.0)
    check_number("gae", "lam", lam, 0.0, 1.0)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, advantages + values


def kl_penalized_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
                         ) -> torch.Tensor:
    """``(B, T)`` rewards: ``−kl_coef · (log π − log π_ref)`` at every reply token, and the
    reward model's score added at the last one (the end token; TRL puts it on the padding
    after, which it acknowledges as a quirk)."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = last_positions(mask)
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def ppo_losses(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
    mask: torch.Tensor, clip: float = 0.2, value_clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The clipped surrogate and the clipped value loss, averaged over the masked tokens.

    The ratio ``π/π_old`` is clipped to ``[1 − clip, 1 + clip]`` and the pessimistic (larger)
    loss kept, so one rollout cannot push the policy far; the value prediction is clipped
    around the rollout's likewise.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    policy_loss = masked_mean(torch.max(-advantages * ratio,
                                        -advantages * ratio.clamp(1 - clip, 1 + clip)), mask)
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    value_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2,
                                             (clipped_values - returns) ** 2), mask)
    with torch.no_grad():
        clipped = masked_mean(((ratio - 1).abs() > clip).float(), mask)
    return policy_loss, value_loss, {"clip_fraction": float(clipped)}


@dataclass(frozen=True)
class PPOConfig:
    """PPO's settings; every one is checked when the config is made."""

    steps: int = 60  # rollouts
    batch_size: int = 32  # replies per rollout
    minibatch_size: int = 16
    epochs: int = 4  # passes over each rollout
    learning_rate: float = 2e-5
    kl_coef: float = 0.05  # β: the price of a nat of divergence from the reference
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    temperature: float = 0.7  # rollouts sample here, and log-probabilities are taken here
    max_new_tokens: int = 16
    missing_end_penalty: float = 1.0  # subtracted from a reply that never wrote its end token
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "minibatch_size", "epochs", "max_new_tokens"):
            check_number("PPOConfig", name, getattr(self, name), 1, integer=True)
        if self.batch_size % self.minibatch_size:
            raise ValueError(f"PPOConfig.minibatch_size={self.minibatch_size} must divide "
                             f"batch_size={self.batch_size}")
        check_number("PPOConfig", "learning_rate", self.learning_rate, 0.0, low_open=True)
        check_number("PPOConfig", "kl_coef", self.kl_coef, 0.0)
        for name in ("clip", "value_clip", "temperature", "grad_clip"):
            check_number("PPOConfig", name, getattr(self, name), 0.0, low_open=True)
        for name in ("value_coef", "missing_end_penalty"):
            check_number("PPOConfig", name, getattr(self, name), 0.0)
        for name in ("gamma", "lam"):
            check_number("PPOConfig", name, getattr(self, name), 0.0, 1.0)
        check_number("PPOConfig", "seed", self.seed, -(2**63), 2**63 - 1, integer=True)

    def to_dict(self) -> dict:
        return asdict(self)


def state_values(value_model: RewardModel, ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)``: at position ``t``, the value of the state before token ``t`` (read at t − 1)."""
    return F.pad(value_model(ids)[:, :-1], (1, 0))


@dataclass
class Rollout:
    """One batch of replies and everything PPO computes about it before it learns."""

    responses: Responses
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor  # the reward model's, with the missing-end penalty
    kl: torch.Tensor  # per reply: sum of log π − log π_ref


@torch.no_grad()
def rollout(policy: GPT, reference: GPT, reward_model: RewardModel, value_model: RewardModel,
            tokenizer, tasks: Sequence[Task], config: PPOConfig, seed: int) -> Rollout:
    """Sample replies to ``tasks`` from the policy and compute their rewards and advantages."""
    responses = sample_responses(policy, tokenizer, tasks, temperature=config.temperature,
                                 seed=seed, max_new_tokens=config.max_new_tokens)
    ids, mask = responses.ids, responses.mask
    logprobs = token_logprobs(policy, ids, config.temperature) * mask
    ref_logprobs = token_logprobs(reference, ids, config.temperature) * mask
    values = state_values(value_model, ids) * mask
    scores = reward_model.score(ids, mask) - config.missing_end_penalty * (~responses.ended)
    rewards = kl_penalized_rewards(logprobs, ref_logprobs, scores, mask, config.kl_coef)
    advantages, returns = gae(rewards, values, config.gamma, config.lam)
    advantages = whiten(advantages, mask)
    kl = (logprobs - ref_logprobs).sum(dim=1)
    return Rollout(responses, logprobs, values, advantages, returns, scores, kl)


def ppo_update(policy: GPT, value_model: RewardModel, learner: Learner, batch: Rollout,
               config: PPOConfig, generator: torch.Generator) -> dict[str, float]:
    """``epochs`` passes of minibatches over one rollout, an optimizer step on each (the
    :class:`~llm_from_scratch.rl_common.Learner` trains the policy and the value model
    together); the last minibatch's figures."""
    ids, mask = batch.responses.ids, batch.responses.mask
    for _ in range(config.epochs):
        for rows in torch.randperm(len(ids), generator=generator).split(config.minibatch_size):
            with learner.precision():
                logprobs = token_logprobs(policy, ids[rows], config.temperature)
                values = state_values(value_model, ids[rows])
                policy_loss, value_loss, stats = ppo_losses(
                    logprobs, batch.logprobs[rows], batch.advantages[rows], values,
                    batch.values[rows], batch.returns[rows], mask[rows], config.clip,
                    config.value_clip)
            learner.step(policy_loss + config.value_coef * value_loss)
    return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), **stats}


def train_ppo(
    sft: GPT, reward_model: RewardModel, tokenizer, tasks: Sequence[Task],
    config: PPOConfig = PPOConfig(), *, progress: bool = True,
) -> tuple[GPT, list[dict[str, float]], float]:
    """PPO from the fine-tuned model ``sft`` (also the frozen reference) on ``tasks``' prompts.

    ``reward_model`` is anything with :class:`~llm_from_scratch.reward.RewardModel`'s
    interface: its ``score`` rewards the replies, and a copy of it, trained, is the value model.
    Returns the policy, one row of figures per step (the reward model's mean score, the KL
    to the reference, the judge's mean grade of the rollout's replies) and the seconds taken.
    """
    torch.manual_seed(config.seed)
    policy, reference = copy.deepcopy(sft).eval(), copy.deepcopy(sft).eval()
    # InstructGPT starts the value model from the reward model; both are copies, so the
    # caller's models stay as they were (rollouts run without gradients anyway).
    value_model = copy.deepcopy(reward_model).eval().requires_grad_(True)
    reward_model = copy.deepcopy(reward_model).eval().requires_grad_(False)
    reference.requires_grad_(False)
    rng, generator = random.Random(config.seed), torch.Generator().manual_seed(config.seed)

    def make_batch(step: int) -> Rollout:
        return rollout(policy, reference, reward_model, value_model, tokenizer,
                       rng.sample(list(tasks), config.batch_size), config, seed=step)

    def update(batch: Rollout, learner: Learner) -> dict[str, float]:
        stats = ppo_update(policy, value_model, learner, batch, config, generator)
        grades = batch.responses.judged()
        return {"reward": float(batch.scores.mean()), "kl": float(batch.kl.mean()),
                "judge": sum(grades) / len(grades),
                "accuracy": sum(batch.responses.scored()) / len(grades), **stats}

    history, seconds = policy_loop([policy, value_model], config, make_batch, update,
                                   description="ppo", progress=progress)
    return policy.eval(), history, seconds
