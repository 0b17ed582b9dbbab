"""Group relative policy optimization: PPO without a value model (Lesson 10).

DeepSeekMath (Shao et al., 2024) samples a *group* of replies to each prompt and uses each
reply's reward relative to its group as the advantage of all its tokens
(:func:`grpo_advantages`): no value model to train, and here no reward model either, since the
task suite's :func:`~llm_from_scratch.tasks.score` verifies each reply. The KL to the reference
is a loss term (:func:`k3_kl`), not a reward penalty.

>>> import torch
>>> grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2).tolist()
[0.7070..., -0.7070..., 0.0, 0.0]
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from llm_from_scratch.model import GPT
from llm_from_scratch.preference import sample_responses, token_logprobs
from llm_from_scratch.rl_common import check_number
from llm_from_scratch.tasks import Task

#: Added to a group's standard deviation, so a group whose rewards are all equal gets
#: advantages of exactly 0 (TRL's value).
GROUP_EPS = 1e-4


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


def train_grpo(sft: GPT, tokenizer, tasks: Sequence[Task], config: GRPOConfig = GRPOConfig(),
               *, progress: bool = True) -> tuple[GPT, list[dict[str, float]], float]:
    """GRPO from the fine-tuned model ``sft`` (also the reference) on ``tasks``, rewarded by
    their exact-match score.

    Returns the policy, a row of figures per step (the replies' mean reward, the share of
    groups whose rewards were all equal, the KL) and the seconds taken.
    """
    torch.manual_seed(config.seed)
    policy, reference = copy.deepcopy(sft).eval(), copy.deepcopy(sft).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=0.0)
    rng = random.Random(config.seed)
    history, start = [], time.perf_counter()
    for step in tqdm(range(config.steps), desc="grpo", disable=not progress, mininterval=1.0):
        chosen = rng.sample(list(tasks), config.prompts)
        with torch.no_grad():
            replies = sample_responses(policy, tokenizer, chosen, samples=config.group_size,
                                       temperature=config.temperature, seed=step,
                                       max_new_tokens=config.max_new_tokens)
            ids, mask = replies.ids, replies.mask
            rewards = torch.tensor(replies.scored())
            advantages = grpo_advantages(rewards, config.group_size)
            old_logprobs = token_logprobs(policy, ids, config.temperature)
            ref_logprobs = token_logprobs(reference, ids, config.temperature)
        for _ in range(config.iterations):
            logprobs = token_logprobs(policy, ids, config.temperature)
            loss = grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask,
                             config.clip, config.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
        groups = rewards.view(-1, config.group_size)
        flat = (groups == groups[:, :1]).all(dim=1).float().mean()
        kl = ((k3_kl(logprobs, ref_logprobs) * mask).sum(dim=1)).mean()
        history.append({"step": step, "reward": float(rewards.mean()), "flat_groups": float(flat),
                        "kl": kl.item(), "loss": loss.item()})
    return policy.eval(), history, time.perf_counter() - start
