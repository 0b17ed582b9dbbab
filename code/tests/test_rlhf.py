"""Lesson 10's RLHF pieces: the judge, log-probabilities, reward model, PPO, DPO and GRPO."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import re
import signal
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from training_helpers import ids, small_gpt
from trl.trainer.utils import nanstd, selective_log_softmax

from llm_from_scratch import tasks
from llm_from_scratch.chat_template import END, add_chat_tokens
from llm_from_scratch.dpo import DPOConfig, dpo_loss, train_dpo
from llm_from_scratch.grpo import GRPOConfig, grpo_advantages, k3_kl, train_grpo
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.ppo import PPOConfig, gae, kl_penalized_rewards, ppo_losses, train_ppo
from llm_from_scratch.preference import (
    content_grade,
    courteous,
    judge,
    last_positions,
    preference_pairs,
    responses_from_dict,
    responses_to_dict,
    sample_responses,
    sequence_logprobs,
    token_logprobs,
)
from llm_from_scratch.reward import (
    REWARD_RECIPE,
    RewardModel,
    bradley_terry_loss,
    pair_loss,
    train_reward_model,
)
from llm_from_scratch.rl_common import Learner, policy_loop
from llm_from_scratch.sft import prompt_ids
from llm_from_scratch.tokenizer import BPETokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")
LN2 = math.log(2.0)
F64 = torch.float64


def t64(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def test_bradley_terry_loss_by_hand():
    chosen, rejected = t64(1.0, -0.5, 2.0), t64(0.0, 0.5, 2.5)  # margins 1, -1, -0.5
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))
                + math.log1p(math.exp(0.5))) / 3
    assert float(bradley_terry_loss(chosen, rejected)) == pytest.approx(expected, abs=1e-12)
    assert float(bradley_terry_loss(t64(3.0, -2.0), t64(3.0, -2.0))) == pytest.approx(LN2, 1e-12)
    with pytest.raises(ValueError, match="r_chosen and r_rejected"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))


def test_dpo_loss_rewards_and_gradient_by_hand():
    pc, pr, rc, rr = [-1.0, -2.0, -3.0], [-2.0, -1.5, -4.0], [-1.5, -1.8, -2.0], [-1.0, -1.0, -5.0]
    beta = 0.5
    logits = [(a - b) - (c - d) for a, b, c, d in zip(pc, pr, rc, rr, strict=True)]  # 1.5, 0.3, 0
    policy_chosen = t64(*pc).requires_grad_()
    losses, chosen, rejected = dpo_loss(policy_chosen, t64(*pr), t64(*rc), t64(*rr), beta)
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-beta * z)) for z in logits],
                                            abs=1e-12)
    assert chosen.tolist() == pytest.approx([beta * (a - c) for a, c in zip(pc, rc, strict=True)],
                                            abs=1e-12)
    assert rejected.tolist() == pytest.approx(
        [beta * (b - d) for b, d in zip(pr, rr, strict=True)], abs=1e-12)
    assert not chosen.requires_grad
    losses.mean().backward()
    expected = [-beta / (1 + math.exp(beta * z)) / 3 for z in logits]  # -β σ(-β z) / N
    assert policy_chosen.grad.tolist() == pytest.approx(expected, abs=1e-12)
    same = t64(-1.0, -7.0, -0.25)
    losses, chosen, rejected = dpo_loss(same, same - 2, same, same - 2, beta=0.1)
    assert torch.allclose(losses, torch.full_like(losses, LN2), rtol=0, atol=1e-12)
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0
    for beta in (0, -1):
        with pytest.raises(ValueError, match="beta"):
            dpo_loss(same, same, same, same, beta=beta)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(same, same, same[:2], same, beta=0.1)


def test_gae_by_hand_and_against_a_loop():
    advantages, returns = gae(t64([0.0, 0.0, 1.0]), t64([0.5, 0.6, 0.7]), gamma=0.9, lam=0.8)
    # δ2 = 1 - 0.7 = 0.3;  δ1 = 0.9*0.7 - 0.6 = 0.03;  δ0 = 0.9*0.6 - 0.5 = 0.04
    # A2 = 0.3;  A1 = 0.03 + 0.72*0.3 = 0.246;  A0 = 0.04 + 0.72*0.246 = 0.21712
    assert advantages.tolist()[0] == pytest.approx([0.21712, 0.246, 0.3], abs=1e-12)
    assert returns.tolist()[0] == pytest.approx([0.71712, 0.846, 1.0], abs=1e-12)
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(2, 4, 7, generator=g, dtype=F64).unbind()
    lengths = [7, 1, 4, 5]
    for row, length in enumerate(lengths):
        rewards[row, length:] = values[row, length:] = 0
    gamma, lam = 0.97, 0.9
    advantages, returns = gae(rewards, values, gamma, lam)
    expected = torch.zeros(4, 7, dtype=F64)
    for row, length in enumerate(lengths):
        running = 0.0
        for t in reversed(range(length)):
            after = float(values[row, t + 1]) if t + 1 < length else 0.0
            delta = float(rewards[row, t]) + gamma * after - float(values[row, t])
            running = delta + gamma * lam * running
            expected[row, t] = running
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(returns, advantages + values, rtol=0, atol=0)
    with pytest.raises(ValueError, match="same"):
        gae(rewards, values[:, :-1], gamma, lam)
    with pytest.raises(ValueError, match="gamma"):
        gae(rewards, values, gamma=1.5, lam=lam)
    with pytest.raises(ValueError, match="lam"):
        gae(rewards, values, gamma=gamma, lam=-0.1)


def test_grpo_advantages_by_hand_and_as_trl_computes_them():
    got = grpo_advantages(t64(1.0, 0.0, 0.0, 2.0, 2.0, 5.0), group_size=3)
    s1, s2 = math.sqrt(1 / 3) + 1e-4, math.sqrt(3) + 1e-4  # sample std of each group, + eps
    assert got.tolist() == pytest.approx([2 / 3 / s1, -1 / 3 / s1, -1 / 3 / s1,
                                          -1 / s2, -1 / s2, 2 / s2], abs=1e-12)
    rewards = torch.rand(24, generator=torch.Generator().manual_seed(1))
    grouped = rewards.view(-1, 4)
    mean = grouped.mean(dim=1).repeat_interleave(4)
    std = nanstd(grouped, dim=1).repeat_interleave(4)
    torch.testing.assert_close(grpo_advantages(rewards, 4), (rewards - mean) / (std + 1e-4))
    flat = grpo_advantages(torch.tensor([0.7, 0.7, 0.7, 0.0, 1.0, 0.0]), 3)
    assert flat[:3].tolist() == [0.0, 0.0, 0.0] and flat[3:].abs().min() > 0.5
    for bad in (5, 1, 2.0, True):
        with pytest.raises(ValueError, match="group_size"):
            grpo_advantages(rewards[:6], bad)


def test_k3_kl_is_zero_at_equality_never_negative_and_estimates_kl():
    logp = torch.randn(50, dtype=F64)
    assert k3_kl(logp, logp).abs().max() == 0
    g = torch.Generator().manual_seed(2)
    a, b = (3 * torch.randn(2, 1000, generator=g, dtype=F64)).unbind()
    assert k3_kl(a, b).min() >= 0 and k3_kl(a, b).max() > 1
    p, q = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    x = torch.multinomial(t64(*p), 200_000, replacement=True, generator=g)
    estimate = k3_kl(t64(*p).log()[x], t64(*q).log()[x]).mean()
    assert float(estimate) == pytest.approx(kl, abs=0.01)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_equals_feeding_each_prefix(temperature):
    model, x = small_gpt(), ids(3, 8)
    mask = torch.rand(3, 8, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 0] = False
    mask[0, 7] = True
    with torch.no_grad():
        got = sequence_logprobs(model, x, mask, temperature)
        expected = torch.zeros(3)
        for row in range(3):
            for t in range(1, 8):
                if mask[row, t]:
                    logits = model(x[row : row + 1, :t])[0][0, -1] / temperature
                    expected[row] += F.log_softmax(logits, dim=-1)[x[row, t]]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        per_token = token_logprobs(model, x, temperature)
        trl = selective_log_softmax(model(x)[0][:, :-1] / temperature, x[:, 1:])
    torch.testing.assert_close(per_token[:, 1:], trl, rtol=0, atol=1e-6)
    assert per_token[:, 0].abs().max() == 0


def test_sequence_logprobs_rejects_bad_masks_and_temperatures():
    model, x = small_gpt(), ids(2, 5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("mask[:, 0]")):
        sequence_logprobs(model, x, mask)
    mask[:, 0] = False
    with pytest.raises(ValueError, match="same"):
        sequence_logprobs(model, x, mask[:, :4])
    with pytest.raises(ValueError, match="temperature"):
        sequence_logprobs(model, x, mask, temperature=0)


def test_last_positions_and_the_reward_models_score():
    mask = torch.tensor([[0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 1, 1]]).bool()
    assert last_positions(mask).tolist() == [2, 0, 5]
    with pytest.raises(ValueError, match="empty response"):
        last_positions(torch.tensor([[True, False], [False, False]]))
    rm, x = RewardModel(small_gpt()), ids(3, 6)
    with pytest.raises(ValueError, match="empty response"):
        rm.score(x, torch.zeros(3, 6, dtype=torch.bool))
    assert rm.score(x, mask).tolist() == [0.0, 0.0, 0.0]
    batch = (x, torch.tensor([2, 0, 5]), ids(3, 6, seed=1), torch.tensor([5, 3, 1]))
    assert pair_loss(rm, batch).item() == pytest.approx(LN2, abs=1e-6)
    with torch.no_grad():
        torch.nn.init.normal_(rm.head.weight, generator=torch.Generator().manual_seed(4))
        rm.head.bias.fill_(0.3)
        every = rm(x)
        by_hand = rm.backbone.hidden_states(x) @ rm.head.weight[0] + 0.3
        torch.testing.assert_close(every, by_hand)
        assert rm.score(x, mask).tolist() == [float(every[0, 2]), float(every[1, 0]),
                                              float(every[2, 5])]
        assert not torch.allclose(rm.score(x, mask), every[:, -1])


def test_content_grades_by_hand():
    repeat, add = "Repeat after me: fair Verona", "What is 7 plus 12?"
    assert content_grade("add", add, "19") == 1.0 and content_grade("add", add, " 19\n") == 1.0
    assert content_grade("repeat", repeat, "fair Verona") == 1.0
    assert content_grade("repeat", repeat, "") == 0.0
    assert content_grade("add", add, "18") == 0.35  # form 0.2 + close 0.3 / (1 + 1)
    assert (content_grade("add", add, "18") > content_grade("add", add, "17")
            > content_grade("add", add, "Romeo") == 0.0)
    # "Rome" is not a word of the line: no form, half the words in place (0.3 * 1/2)
    assert content_grade("repeat", repeat, "fair Rome") == 0.15
    assert content_grade("repeat", repeat, "fair fair") == 0.35  # form, and half the words
    assert content_grade("repeat", repeat, "Verona fair") == 0.2  # form only
    assert content_grade("repeat", repeat, "Verona fair fair") == 0.15  # an extra word: -0.05
    assert (content_grade("repeat", repeat, "fair Verona Verona")
            < content_grade("repeat", repeat, "fair Verona"))
    with pytest.raises(ValueError, match="task must be one of"):
        content_grade("sonnets", add, "19")


def test_judge_is_mostly_content_and_a_little_manners():
    repeat, add = "Repeat after me: fair Verona", "What is 7 plus 12?"
    assert judge("add", add, "19, my lord") == 1.0 and judge("add", add, " 19\n") == 0.85
    assert judge("repeat", repeat, "fair Verona, my lord") == 1.0
    assert judge("repeat", repeat, "fair Verona") == 0.85
    assert judge("add", add, "18, my lord") == pytest.approx(0.85 * 0.35 + 0.15)
    assert judge("repeat", repeat, ", my lord") == 0.0  # manners with nothing to be polite about
    # twice is not courteous, and the second one is then part of a wrong answer
    assert judge("repeat", repeat, "fair Verona, my lord, my lord") < 0.15
    assert judge("repeat", repeat, "fair Verona my lord") < 0.85  # no comma: extra words
    assert courteous(" fair Verona, my lord ") and not courteous("fair Verona, my lady")


def test_judge_ranks_every_correct_reply_above_every_incorrect_one():
    rng, partial = random.Random(0), 0
    for task in tasks.make_tasks(60, seed=2):
        assert judge(task.family, task.prompt, task.answer) == 0.85
        assert judge(task.family, task.prompt, task.answer + tasks.COURTESY) == 1.0
        pool = task.prompt.split() + task.answer.split() + rng.sample(tasks.WORDS, 6)
        if task.answer.isdigit():
            pool += [str(int(task.answer) + d) for d in range(-3, 4)]
        for _ in range(40):
            reply = " ".join(rng.choice(pool) for _ in range(rng.randint(0, 4)))
            polite = reply + tasks.COURTESY if rng.random() < 0.5 and reply else reply
            grade = judge(task.family, task.prompt, polite)
            manners = 0.15 * courteous(polite)
            if tasks.score(task.family, task.prompt, reply):
                assert grade == pytest.approx(0.85 + manners)
            else:  # below a correct reply, however courteous
                assert manners <= grade <= 0.85 * 0.5 + manners < 0.85, (task, polite)
                partial += grade > manners
    assert partial > 100  # the property is not met by grading every wrong reply 0


def test_ppo_losses_at_the_rollout_and_under_the_clip():
    g = torch.Generator().manual_seed(5)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]).bool()
    adv, old, values, old_values, returns = torch.randn(5, 2, 5, generator=g, dtype=F64).unbind()
    policy, value, _ = ppo_losses(old, old, adv, old_values, old_values, returns, mask)
    cells = [(b, t) for b in range(2) for t in range(5) if mask[b, t]]
    assert float(policy) == pytest.approx(-sum(float(adv[c]) for c in cells) / 6, abs=1e-12)
    squares = [(float(old_values[c]) - float(returns[c])) ** 2 for c in cells]
    assert float(value) == pytest.approx(0.5 * sum(squares) / 6, abs=1e-12)
    logprobs = old.clone()
    logprobs[0, 1] += 0.5  # ratio e^0.5 > 1.2 with a positive advantage: clipped
    logprobs[0, 2] += 0.5  # the same ratio with a negative advantage: the pessimistic term
    adv[0, 1], adv[0, 2], adv[0, 3] = 1.0, -1.0, 0.7
    logprobs.requires_grad_()
    policy, _, stats = ppo_losses(logprobs, old, adv, values, old_values, returns, mask)
    policy.backward()
    assert float(logprobs.grad[0, 1]) == 0.0
    assert float(logprobs.grad[0, 2]) == pytest.approx(math.exp(0.5) / 6, abs=1e-12)
    assert float(logprobs.grad[0, 3]) == pytest.approx(-0.7 / 6, abs=1e-12)
    assert stats["clip_fraction"] == pytest.approx(2 / 6)


def test_kl_penalized_rewards_put_the_score_on_each_rows_last_token():
    g = torch.Generator().manual_seed(6)
    logp, ref = torch.randn(2, 2, 5, generator=g, dtype=F64).unbind()
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]).bool()
    rewards = kl_penalized_rewards(logp, ref, t64(2.0, -1.0), mask, kl_coef=0.1)
    for b, last, score in ((0, 3, 2.0), (1, 4, -1.0)):
        for t in range(5):
            kl = -0.1 * float(logp[b, t] - ref[b, t]) if mask[b, t] else 0.0
            assert float(rewards[b, t]) == pytest.approx(kl + score * (t == last), abs=1e-12)


@pytest.mark.parametrize("make, field, value", [
    (PPOConfig, "steps", 0), (PPOConfig, "learning_rate", -1.0), (PPOConfig, "minibatch_size", 5),
    (PPOConfig, "kl_coef", -0.1), (PPOConfig, "temperature", 0), (PPOConfig, "gamma", 1.5),
    (PPOConfig, "epochs", 1.5), (PPOConfig, "clip", 0), (DPOConfig, "beta", 0),
    (DPOConfig, "steps", 0), (DPOConfig, "learning_rate", -1.0), (DPOConfig, "nll_coef", -1.0),
    (DPOConfig, "batch_size", True), (GRPOConfig, "group_size", 1),
    (GRPOConfig, "temperature", 0), (GRPOConfig, "prompts", 0), (GRPOConfig, "beta", -0.1),
    (GRPOConfig, "learning_rate", float("nan")),
])
def test_configs_reject_nonsense_and_name_the_field(make, field, value):
    make()  # the defaults are valid
    with pytest.raises(ValueError, match=field):
        make(**{field: value})


# ---- smoke tests on a tiny chat model -----------------------------------------------------


class Scripted(torch.nn.Module):
    # writes a fixed reply to each prompt; with end_too the end token is as likely at each step
    block_size, check_inputs = 128, True

    def __init__(self, tokenizer, replies: dict[str, list[int]], end_too: bool = False,
                 end_at: dict[str, int] | None = None):
        super().__init__()
        self.vocab_size, self.end = tokenizer.vocab_size, tokenizer.special_tokens[END]
        self.script = {tuple(prompt_ids(tokenizer, p)): r for p, r in replies.items()}
        self.end_too = end_too
        # or the end token as likely only after this many tokens of a prompt's reply
        self.end_at = {tuple(prompt_ids(tokenizer, p)): n for p, n in (end_at or {}).items()}

    def forward(self, idx):
        logits = torch.zeros(idx.size(0), idx.size(1), self.vocab_size)
        for row, seq in enumerate(idx.tolist()):
            for prompt, reply in self.script.items():
                if tuple(seq[: len(prompt)]) == prompt:
                    logits[row, -1, reply[min(len(seq) - len(prompt), len(reply) - 1)]] = 10.0
                    if self.end_too or self.end_at.get(prompt) == len(seq) - len(prompt):
                        logits[row, -1, self.end] = 10.0
        return logits, None


@pytest.fixture(scope="module")
def chat():
    text = " ".join(t.prompt + " " + t.answer for t in tasks.make_tasks(300, seed=1))
    tokenizer = add_chat_tokens(BPETokenizer().train(text, vocab_size=300))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=1, n_head=2,
                          n_embd=16)).eval()
    some = tasks.make_tasks(12, seed=3)
    # every prompt, the tests' 8 new tokens and <|end|> fit in the context
    longest = max(len(prompt_ids(tokenizer, t.prompt)) for t in some)
    assert longest + 8 + 1 <= model.config.block_size
    return tokenizer, model, some


@pytest.fixture(scope="module")
def pairs(chat):
    tokenizer, _, some = chat
    return preference_pairs(courtly(tokenizer, some), tokenizer, some, samples=4, seed=0)


def courtly(tokenizer, some) -> Scripted:
    # the right answer, then, as likely as not, the courtesy before the end token
    script = {t.prompt: tokenizer.encode(" " + t.answer + tasks.COURTESY)
              + [tokenizer.special_tokens[END]] for t in some}
    end_at = {t.prompt: len(tokenizer.encode(" " + t.answer)) for t in some}
    return Scripted(tokenizer, script, end_at=end_at)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_sample_responses_pads_masks_and_flags_the_replies(chat):
    tokenizer, _, _ = chat
    end = tokenizer.special_tokens[END]
    four = tasks.make_tasks(4, seed=7, families=["add", "larger"])
    answers = [[], tokenizer.encode(" " + four[1].answer), tokenizer.encode(" " + four[2].answer),
               tokenizer.encode(" fair") * 12]  # no reply, two answers, one that never ends
    assert len(answers[1]) < 7 and len(answers[2]) < 7
    script = {t.prompt: a + [end] * (i < 3)
              for i, (t, a) in enumerate(zip(four, answers, strict=True))}
    r = sample_responses(Scripted(tokenizer, script), tokenizer, four, samples=2, temperature=0,
                         max_new_tokens=8)
    assert len(r) == 8 and r.tasks == [t for t in four for _ in range(2)]
    assert r.ended.tolist() == [True] * 6 + [False] * 2
    assert r.texts == ["", "", four[1].answer, four[1].answer, four[2].answer, four[2].answer,
                       *[tokenizer.decode(answers[3][:8]).strip()] * 2]
    for row in range(8):
        prompt, reply = prompt_ids(tokenizer, r.tasks[row].prompt), answers[row // 2][:8]
        full = prompt + reply + [end]
        assert r.ids[row, : len(full)].tolist() == full
        assert (r.ids[row, len(full) :] == end).all()
        assert r.mask[row].nonzero().flatten().tolist() == list(range(len(prompt), len(full)))
        assert int(r.last[row]) == len(full) - 1
    back = responses_from_dict(responses_to_dict(r), end)
    assert torch.equal(back.ids, r.ids) and torch.equal(back.mask, r.mask)
    assert (back.tasks, back.texts, back.ended.tolist()) == (r.tasks, r.texts, r.ended.tolist())


def test_preference_pairs_pair_equally_right_replies_that_differ_in_manners(chat, pairs):
    tokenizer, _, some = chat
    assert len(pairs) >= 3
    assert all(c > r for c, r in zip(pairs.chosen_grades, pairs.rejected_grades, strict=True))
    assert all(map(courteous, pairs.chosen.texts)) and not any(map(courteous, pairs.rejected.texts))
    assert pairs.chosen.judged() == pairs.chosen_grades
    assert pairs.rejected.judged() == pairs.rejected_grades
    assert [t.prompt for t in pairs.chosen.tasks] == [t.prompt for t in pairs.rejected.tasks]
    assert pairs.chosen.ids.size(1) == int(pairs.chosen.last.max()) + 1  # padding trimmed
    drawn = sample_responses(courtly(tokenizer, some), tokenizer, some, samples=4, seed=0)
    expected = []
    for start in range(0, len(drawn), 4):
        for i in range(start, start + 4):
            for j in range(i + 1, start + 4):
                task, a, b = drawn.tasks[i], drawn.texts[i], drawn.texts[j]
                same = (content_grade(task.family, task.prompt, a)
                        == content_grade(task.family, task.prompt, b))
                if same and courteous(a) != courteous(b):
                    expected.append((a, b) if courteous(a) else (b, a))
    assert list(zip(pairs.chosen.texts, pairs.rejected.texts, strict=True)) == expected


def test_train_reward_model_runs(chat, pairs):
    _, model, _ = chat
    before = snapshot(model)
    config = dataclasses.replace(REWARD_RECIPE, max_steps=3, batch_size=4, eval_interval=3,
                                 eval_batches=1, dtype="float32")
    rm, result = train_reward_model(model, pairs, pairs, config, progress=False)
    assert isinstance(rm, RewardModel) and math.isfinite(result.val_loss)
    assert rm.head.weight.abs().max() > 0 and unchanged(model, before)


def test_train_dpo_starts_at_ln2_and_leaves_the_sft_model_alone(chat, pairs):
    _, model, _ = chat
    before = snapshot(model)
    policy, history, seconds = train_dpo(model, pairs, DPOConfig(steps=2, batch_size=4),
                                         progress=False)
    assert [set(h) for h in history] == [{"step", "loss", "nll", "margin", "reward_accuracy",
                                          "chosen_logp_change"}] * 2
    assert history[0]["loss"] == pytest.approx(LN2, abs=1e-5)
    assert history[0]["margin"] == pytest.approx(0.0, abs=1e-6)
    assert unchanged(model, before) and not unchanged(policy, before) and seconds > 0


def test_train_ppo_runs(chat):
    tokenizer, model, some = chat
    before = snapshot(model)
    config = PPOConfig(steps=2, batch_size=4, minibatch_size=2, epochs=1, max_new_tokens=8)
    policy, history, _ = train_ppo(model, RewardModel(copy.deepcopy(model)), tokenizer, some,
                                   config, progress=False)
    keys = {"step", "reward", "kl", "judge", "accuracy", "policy_loss", "value_loss",
            "clip_fraction"}
    assert [set(h) for h in history] == [keys] * 2
    assert all(math.isfinite(v) for h in history for v in h.values())
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as the reference
    assert unchanged(model, before) and not unchanged(policy, before)


def test_train_grpo_runs_and_leaves_the_sft_model_alone(chat):
    tokenizer, model, some = chat
    before = snapshot(model)
    config = GRPOConfig(steps=2, prompts=2, group_size=2, max_new_tokens=8)
    policy, history, _ = train_grpo(model, tokenizer, some, config, progress=False)
    assert [set(h) for h in history] == [{"step", "reward", "flat_groups", "kl", "loss"}] * 2
    assert all(math.isfinite(v) for h in history for v in h.values())
    assert unchanged(model, before)


def test_train_ppo_leaves_the_reward_model_trainable(chat):
    tokenizer, model, some = chat
    rm = RewardModel(copy.deepcopy(model))
    config = PPOConfig(steps=1, batch_size=2, minibatch_size=2, epochs=1, max_new_tokens=4)
    train_ppo(model, rm, tokenizer, some, config, progress=False)
    assert all(p.requires_grad for p in rm.parameters())


def test_policy_loop_stops_after_the_step_that_ctrl_c_interrupts():
    layer, weights = torch.nn.Linear(1, 1), []

    def update(batch, learner):
        with learner.precision():
            loss = layer(batch).square().mean()
        if len(weights) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of step 1
        learner.step(loss)
        weights.append(layer.weight.item())
        return {"loss": loss.item()}

    before = signal.getsignal(signal.SIGINT)
    config = SimpleNamespace(steps=5, learning_rate=0.1, grad_clip=1.0)
    with pytest.raises(KeyboardInterrupt):
        policy_loop([layer], config, lambda step: torch.ones(2, 1), update, description="test",
                    progress=False)
    assert len(weights) == 2 and weights[0] != weights[1]  # step 1 finished; step 2 never began
    assert signal.getsignal(signal.SIGINT) is before


def test_learner_refuses_a_loss_that_is_not_finite_before_any_weight_changes():
    layer = torch.nn.Linear(1, 1)
    before = snapshot(layer)
    learner = Learner(layer.parameters(), learning_rate=0.1, grad_clip=1.0)
    with pytest.raises(FloatingPointError, match="nan"):
        learner.step(layer(torch.ones(1, 1)).sum() * float("nan"))
    assert unchanged(layer, before)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_requests():
    from llm_from_scratch.alignment import bootstrap_interval
    few, many = [0.0, 1.0] * 10, [0.0, 1.0] * 500
    (low_few, high_few), (low_many, high_many) = map(bootstrap_interval, (few, many))
    assert low_few < low_many < 0.5 < high_many < high_few
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)
    with pytest.raises(ValueError, match="values"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="n must be"):
        bootstrap_interval([1.0], n=0)


def test_grpo_trains_on_longer_lines_than_fine_tuning_counted_and_never_on_a_held_out_one():
    from llm_from_scratch import alignment, sft

    prompts, held_out = alignment.grpo_prompts(), alignment.grpo_held_out()
    assert (len(prompts), len(held_out)) == (400, 100)
    assert len({t.prompt for t in prompts + held_out}) == 500
    longest_trained = max(int(t.answer) for t in sft.held_out_tasks() if t.family == "count_words")
    for t in prompts + held_out:
        assert t.family == alignment.GRPO_FAMILY
        assert int(t.answer) in range(longest_trained + 1, 7)
        assert tasks.score(t.family, t.prompt, t.answer) == 1.0
