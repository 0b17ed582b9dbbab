"""Group relative policy optimization: PPO without a value model (Lesson 10).

DeepSeekMath (Shao et al., 2024) samples a *group* of replies to each prompt and uses each
reply's reward relative to its group as the advantage of all its tokens
(:func:`grpo_advantages`): no value model to train, and here no reward model either, since the
task suite's :func:`~llm_from_scratch.tasks.score` verifies each reply (any function of the
replies can stand in for it). The KL to the reference is a loss term (:func:`k3_kl`), not a
reward penalty.

>>> import torch
>>> grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2).tolist()
[0.7070..., -0.7070..., 0.0, 0.0]
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from llm_from_scratch.model import GPT
from llm_from_scratch.preference import Responses, sample_responses, token_logprobs
from llm_from_scratch.rl_common import Learner, check_number, policy_loop
from llm_from_scratch.tasks import Task

#: Added to a group's standard deviation, so a group whose rewards are all equal gets
#: advantages of exactly 0 (TRL's value).
GROUP_EPS = 1e-4

#: A reward function: one number per reply of a batch of :class:`Responses`.
RewardFn = Callable[[Responses], Sequence[float]]


def grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each reward minus its group's mean, over the group's standard deviation plus ``1e-4``.

    ``rewards`` is ``(N,)``, groups of ``group_size`` consecutive replies to one prompt. The
    standard deviation is the sample one (``n − 1``), as in TRL's GRPO trainer.
    """
    check_number("grpo_advantages", "group_size", group_size, 2, integer=True)
    if rewards.dim() != 1 or len(rewards) % group_size:
        raise ValueError(f"group_size={group_size} must divide the number of rewards, "
                         f"got rewards of shape {tuple(rewards.shape)}")
    groups = rewards.view(-1, group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + GROUP_EPS)).view(-1)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per token, ``π_ref/π − log(π_ref/π) − 1``: an unbiased, never negative estimate of
    KL(π ‖ π_ref) from samples of π (Schulman's "k3"; DeepSeekMath's KL term)."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip: float, beta: float
              ) -> torch.Tensor:
    """The clipped surrogate on each reply's advantage plus ``beta`` times the k3 KL, averaged
    over each reply's tokens, then over the replies (DeepSeekMath's normalization)."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    per_token = -(surrogate - beta * k3_kl(logprobs, ref_logprobs))
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO's settings; every one is checked when the config is made."""

    steps: int = 40
    prompts: int = 8  # prompts per step
    group_size: int = 8  # replies per prompt
    iterations: int = 2  # updates per batch of replies: the clip matters from the second on
    learning_rate: float = 2e-5
    beta: float = 0.04  # the KL term's weight
    clip: float = 0.2
    temperature: float = 0.7
    max_new_tokens: int = 16
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "prompts", "iterations", "max_new_tokens"):
            check_number("GRPOConfig", name, getattr(self, name), 1, integer=True)
        check_number("GRPOConfig", "group_size", self.group_size, 2, integer=True)
        for name in ("learning_rate", "clip", "temperature", "grad_clip"):
            check_number("GRPOConfig", name, getattr(self, name), 0.0, low_open=True)
        check_number("GRPOConfig", "beta", self.beta, 0.0)
        check_number("GRPOConfig", "seed", self.seed, -(2**63), 2**63 - 1, integer=True)

    def to_dict(self) -> dict:
        return asdict(self)


def exact_match(replies: Responses) -> list[float]:
    """GRPO's default reward: each reply's exact-match score, 1 if correct, else 0."""
    return replies.scored()


def train_grpo(sft: GPT, tokenizer, tasks: Sequence[Task], config: GRPOConfig = GRPOConfig(),
               *, reward_fn: RewardFn | None = None, progress: bool = True
               ) -> tuple[GPT, list[dict[str, float]], float]:
    """GRPO from the fine-tuned model ``sft`` (also the reference) on ``tasks``, rewarded by
    ``reward_fn`` (by default :func:`exact_match`).

    Returns the policy, a row of figures per step (the replies' mean reward, the share of
    groups whose rewards were all equal, the KL) and the seconds taken.
    """
    torch.manual_seed(config.seed)
    policy, reference = copy.deepcopy(sft).eval(), copy.deepcopy(sft).eval().requires_grad_(False)
    reward_fn = reward_fn or exact_match
    rng = random.Random(config.seed)

    def make_batch(step: int) -> tuple[Responses, torch.Tensor, torch.Tensor, torch.Tensor]:
        replies = sample_responses(policy, tokenizer, rng.sample(list(tasks), config.prompts),
                                   samples=config.group_size, temperature=config.temperature,
                                   seed=step, max_new_tokens=config.max_new_tokens)
        rewards = torch.tensor(reward_fn(replies), dtype=torch.float32)
        old_logprobs = token_logprobs(policy, replies.ids, config.temperature)
        ref_logprobs = token_logprobs(reference, replies.ids, config.temperature)
        return replies, rewards, old_logprobs, ref_logprobs

    def update(batch, learner: Learner) -> dict[str, float]:
        replies, rewards, old_logprobs, ref_logprobs = batch
        ids, mask = replies.ids, replies.mask
        advantages = grpo_advantages(rewards, config.group_size)
        for _ in range(config.iterations):
            with learner.precision():
                logprobs = token_logprobs(policy, ids, config.temperature)
                loss = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask,
                                 config.clip, config.beta)
            learner.step(loss)
        groups = rewards.view(-1, config.group_size)
        flat = (groups == groups[:, :1]).all(dim=1).float().mean()
        kl = ((k3_kl(logprobs, ref_logprobs) * mask).sum(dim=1)).mean()
        return {"reward": float(rewards.mean()), "flat_groups": float(flat), "kl": kl.item(),
                "loss": loss.item()}

    history, seconds = policy_loop([policy], config, make_batch, update, description="grpo",
                                   progress=progress)
    return policy.eval(), history, seconds
