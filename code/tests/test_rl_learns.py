"""DPO, PPO and GRPO each learn: on a tiny chat model, a reward they can see rises.

The toy reward is 1 when a reply's first token has an even id, 0 otherwise. A freshly
initialised model starts such a reply about half the time; each method, given that reward (as
preference pairs, a reward model or a reward function), must raise the probability well beyond
anything sampling noise could do. With the sign of the advantage (or of DPO's logit) flipped,
the probability falls instead and the tests fail.
"""

from __future__ import annotations

import pytest
import torch

from llm_from_scratch import tasks
from llm_from_scratch.chat_template import add_chat_tokens
from llm_from_scratch.dpo import DPOConfig, train_dpo
from llm_from_scratch.grpo import GRPOConfig, train_grpo
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.ppo import PPOConfig, train_ppo
from llm_from_scratch.preference import PreferencePairs, Responses, sample_responses, select
from llm_from_scratch.reward import RewardModel
from llm_from_scratch.sft import prompt_ids
from llm_from_scratch.tokenizer import BPETokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def toy():
    text = " ".join(t.prompt + " " + t.answer for t in tasks.make_tasks(200, seed=1))
    tokenizer = add_chat_tokens(BPETokenizer().train(text, vocab_size=280))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2,
                          n_embd=32)).eval()
    prompts = tasks.make_tasks(16, seed=3)
    return tokenizer, model, prompts


@pytest.fixture(autouse=True)
def float32(monkeypatch):
    # The same numbers on every CPU: no bfloat16 even where the hardware has it.
    monkeypatch.setenv("LLMFS_NO_BF16", "1")


def first_even(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` 1.0 where the reply's first token (the first masked one) has an even id."""
    first = ids.gather(1, mask.int().argmax(dim=1, keepdim=True)).squeeze(1)
    return (first % 2 == 0).float()


@torch.no_grad()
def p_even(model: GPT, tokenizer, prompts: list[tasks.Task]) -> float:
    """The model's probability, averaged over ``prompts``, of starting its reply with an even
    id: exact, so no sampling noise enters the comparison."""
    total = 0.0
    for task in prompts:
        logits, _ = model(torch.tensor([prompt_ids(tokenizer, task.prompt)]))
        total += float(logits[0, -1].softmax(dim=-1)[::2].sum())
    return total / len(prompts)


class FirstEvenReward(RewardModel):
    """A reward model whose score is the toy reward; its (trainable) head still gives values."""

    def score(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return first_even(ids, mask)


def even_odd_pairs(model: GPT, tokenizer, prompts: list[tasks.Task]) -> PreferencePairs:
    """The model's own replies, 4 per prompt, every even-first one chosen over every odd-first
    one to the same prompt."""
    drawn = sample_responses(model, tokenizer, prompts, samples=4, temperature=1.0, seed=0,
                             max_new_tokens=3)
    good = first_even(drawn.ids, drawn.mask).tolist()
    chosen, rejected = [], []
    for start in range(0, len(drawn), 4):
        for i in range(start, start + 4):
            for j in range(start, start + 4):
                if good[i] > good[j]:
                    chosen.append(i)
                    rejected.append(j)
    return PreferencePairs(select(drawn, chosen), select(drawn, rejected),
                           [1.0] * len(chosen), [0.0] * len(chosen))


def test_dpo_learns_to_prefer_the_chosen_replies(toy):
    tokenizer, model, prompts = toy
    pairs = even_odd_pairs(model, tokenizer, prompts)
    assert len(pairs) >= 20
    config = DPOConfig(steps=30, batch_size=16, learning_rate=1e-2, beta=0.1)
    policy, history, _ = train_dpo(model, pairs, config, progress=False)
    first, last = history[:5], history[-5:]
    assert first[0]["margin"] == pytest.approx(0.0, abs=1e-6)
    assert sum(h["margin"] for h in last) / 5 > 0.5  # in units of β nats: a wide margin
    assert min(h["reward_accuracy"] for h in last) == 1.0
    before, after = p_even(model, tokenizer, prompts), p_even(policy, tokenizer, prompts)
    assert after > before + 0.15, (before, after)  # the pairs' lesson generalizes to new replies


def test_ppo_raises_the_reward_models_score(toy):
    tokenizer, model, prompts = toy
    config = PPOConfig(steps=30, batch_size=16, minibatch_size=8, epochs=2, learning_rate=1e-2,
                       kl_coef=0.01, temperature=1.0, max_new_tokens=3, missing_end_penalty=0.0)
    policy, history, _ = train_ppo(model, FirstEvenReward(GPT(model.config)), tokenizer,
                                   prompts, config, progress=False)
    before, after = p_even(model, tokenizer, prompts), p_even(policy, tokenizer, prompts)
    assert after > before + 0.25, (before, after)
    early = sum(h["reward"] for h in history[:5]) / 5
    late = sum(h["reward"] for h in history[-5:]) / 5
    assert late > early + 0.2, (early, late)


def test_grpo_raises_a_verifiable_reward(toy):
    tokenizer, model, prompts = toy

    def reward(replies: Responses) -> list[float]:
        return first_even(replies.ids, replies.mask).tolist()

    config = GRPOConfig(steps=30, prompts=4, group_size=8, learning_rate=1e-2, beta=0.01,
                        temperature=1.0, max_new_tokens=3)
    policy, history, _ = train_grpo(model, tokenizer, prompts, config, reward_fn=reward,
                                    progress=False)
    before, after = p_even(model, tokenizer, prompts), p_even(policy, tokenizer, prompts)
    assert after > before + 0.3, (before, after)
    early = sum(h["reward"] for h in history[:5]) / 5
    late = sum(h["reward"] for h in history[-5:]) / 5
    assert late > early + 0.2, (early, late)
