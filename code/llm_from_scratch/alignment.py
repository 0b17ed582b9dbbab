"""Lesson 10's preference-tuned models, trained once and cached, and the table that compares them.

Everything starts from the fine-tuned chat model of :func:`llm_from_scratch.sft.sft_model`:
:func:`preference_data` samples its replies and pairs them by the judge;
:func:`reward_model` learns the judge from the pairs; :func:`ppo_run`, :func:`dpo_run` and
:func:`grpo_run` train a policy each. Every result is cached like the book's model, keyed by its
recipe, so a lesson that needs one loads it. :func:`evaluate_policy` measures a model on the
held-out tasks by the judge itself, and :func:`bootstrap_interval` says how sure a mean over
those tasks is.

>>> PPO_RECIPE.kl_coef > 0 and PPO_NO_KL.kl_coef == 0
True
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import torch

from llm_from_scratch.artifacts import cached
from llm_from_scratch.chat_template import END
from llm_from_scratch.data import TokenizedData, shakespeare_tokens
from llm_from_scratch.dpo import DPOConfig, train_dpo
from llm_from_scratch.grpo import GRPOConfig, train_grpo
from llm_from_scratch.model import GPT
from llm_from_scratch.ppo import PPOConfig, train_ppo
from llm_from_scratch.preference import (
    PreferencePairs,
    courteous,
    judge,
    kl_to_reference,
    preference_pairs,
    responses_from_dict,
    responses_to_dict,
    sample_responses,
)
from llm_from_scratch.reward import REWARD_RECIPE, RewardModel, train_reward_model
from llm_from_scratch.sft import (
    N_TEST,
    N_TRAIN,
    FineTuned,
    sft_model,
    task_accuracy,
)
from llm_from_scratch.tasks import PHRASINGS, WORDS, Task, answer, task_split
from llm_from_scratch.train import TrainResult, evaluate

#: Preference data: this many training prompts, ``PAIR_SAMPLES`` replies each at temperature 1.
PAIR_PROMPTS, PAIR_SAMPLES, PAIR_TEMPERATURE = 1000, 4, 1.0
#: PPO and GRPO draw their prompts from these training tasks (after those the pairs used).
RL_PROMPTS = slice(PAIR_PROMPTS, PAIR_PROMPTS + 3000)
PPO_RECIPE = PPOConfig(steps=40, learning_rate=1e-4, epochs=2, kl_coef=0.5)
#: The same run without the KL penalty: nothing holds the policy near the reference.
PPO_NO_KL = dataclasses.replace(PPO_RECIPE, kl_coef=0.0)
DPO_RECIPE = DPOConfig(steps=100, learning_rate=1e-4, beta=0.1)
#: DPO with the chosen replies' negative log-likelihood added (RPO; TRL's "sft" loss term):
#: the recipe Lesson 10 ends with, since plain DPO can lower the chosen replies' likelihood.
RPO_RECIPE = dataclasses.replace(DPO_RECIPE, nll_coef=1.0)
GRPO_RECIPE = GRPOConfig(steps=40, learning_rate=1e-4, beta=0.04, temperature=1.0)
#: GRPO's target: counting the words of a line of five or six, longer than any line that
#: fine-tuning counted (at most four words), so the fine-tuned model answers "4". No
#: demonstration of a longer count exists; a verifier alone teaches it.
GRPO_FAMILY, GRPO_LINE_WORDS = "count_words", (5, 6)


@dataclass
class PolicyRun:
    """A policy trained from the fine-tuned model, its per-step figures, and its time."""

    name: str
    model: GPT
    history: list[dict[str, float]]
    seconds: float
    from_cache: bool


def train_and_held_out() -> tuple[list[Task], list[Task]]:
    """Fine-tuning's training tasks (prompts for preference data and RL) and held-out tasks."""
    return task_split(N_TRAIN, N_TEST, seed=0)


def preference_data(progress: bool = True) -> tuple[PreferencePairs, PreferencePairs]:
    """Judged pairs of the fine-tuned model's own replies: training prompts, held-out prompts."""
    chat = sft_model(progress=progress)
    spec = {"sft": chat.name, "prompts": PAIR_PROMPTS, "samples": PAIR_SAMPLES,
            "temperature": PAIR_TEMPERATURE}

    def compute() -> tuple[dict, None]:
        train_tasks, test_tasks = train_and_held_out()
        info = {}
        for split, chosen_tasks, seed in (("train", train_tasks[:PAIR_PROMPTS], 0),
                                          ("held_out", test_tasks, 1)):
            pairs = preference_pairs(chat.model, chat.tokenizer, chosen_tasks,
                                     samples=PAIR_SAMPLES, temperature=PAIR_TEMPERATURE,
                                     seed=seed)
            info[split] = {"chosen": responses_to_dict(pairs.chosen),
                           "rejected": responses_to_dict(pairs.rejected),
                           "chosen_grades": pairs.chosen_grades,
                           "rejected_grades": pairs.rejected_grades}
        return info, None

    info = cached("preference-pairs", spec, compute).info
    pad = chat.tokenizer.special_tokens[END]

    def load(split: dict) -> PreferencePairs:
        return PreferencePairs(responses_from_dict(split["chosen"], pad),
                               responses_from_dict(split["rejected"], pad),
                               split["chosen_grades"], split["rejected_grades"])

    return load(info["train"]), load(info["held_out"])


def reward_model(progress: bool = True) -> tuple[RewardModel, TrainResult, bool]:
    """The reward model trained on :func:`preference_data` (cached): model, result, from cache."""
    chat = sft_model(progress=progress)
    spec = {"sft": chat.name, "train": REWARD_RECIPE.to_dict(), "pairs": [PAIR_PROMPTS,
                                                                          PAIR_SAMPLES]}

    def compute() -> tuple[dict, dict]:
        train_pairs, val_pairs = preference_data(progress)
        model, result = train_reward_model(chat.model, train_pairs, val_pairs, progress=progress)
        return {"result": result.to_dict()}, model.state_dict()

    artifact = cached("reward-model", spec, compute)
    model = RewardModel(_blank(chat))
    model.load_state_dict(artifact.state_dict)
    return model.eval(), TrainResult(**artifact.info["result"]), artifact.from_cache


def _run(name: str, spec: dict, chat: FineTuned, train_fn) -> PolicyRun:
    def compute() -> tuple[dict, dict]:
        policy, history, seconds = train_fn()
        return {"history": history, "seconds": seconds}, policy.state_dict()

    artifact = cached(name, {"sft": chat.name, **spec}, compute)
    policy = _blank(chat)
    policy.load_state_dict(artifact.state_dict)
    return PolicyRun(name, policy.eval(), artifact.info["history"], artifact.info["seconds"],
                     artifact.from_cache)


def ppo_run(config: PPOConfig = PPO_RECIPE, progress: bool = True) -> PolicyRun:
    """PPO against :func:`reward_model`, from the fine-tuned model (cached)."""
    chat = sft_model(progress=progress)
    rm, _, _ = reward_model(progress)
    prompts = train_and_held_out()[0][RL_PROMPTS]
    return _run("ppo", {"ppo": config.to_dict(), "reward": REWARD_RECIPE.to_dict()}, chat,
                lambda: train_ppo(chat.model, rm, chat.tokenizer, prompts, config,
                                  progress=progress))


def dpo_run(config: DPOConfig = DPO_RECIPE, progress: bool = True) -> PolicyRun:
    """DPO on :func:`preference_data`'s training pairs, from the fine-tuned model (cached)."""
    chat = sft_model(progress=progress)
    pairs = preference_data(progress)[0]
    return _run("dpo", {"dpo": config.to_dict(), "pairs": [PAIR_PROMPTS, PAIR_SAMPLES]}, chat,
                lambda: train_dpo(chat.model, pairs, config, progress=progress))


def _long_count_tasks(n: int, seed: int, avoid: set[str] | None = None) -> list[Task]:
    """``n`` distinct :data:`GRPO_FAMILY` requests in training phrasings, each a line of
    :data:`GRPO_LINE_WORDS` words, none of them in ``avoid``."""
    rng, seen, out = random.Random(seed), set(avoid or ()), []
    while len(out) < n:
        words = " ".join(rng.sample(WORDS, rng.randint(*GRPO_LINE_WORDS)))
        prompt = rng.choice(PHRASINGS[GRPO_FAMILY][:-1]).format(words=words)
        if prompt not in seen:
            seen.add(prompt)
            out.append(Task(GRPO_FAMILY, prompt, answer(GRPO_FAMILY, prompt)))
    return out


def grpo_held_out() -> list[Task]:
    """GRPO's target, held out: 100 requests to count the words of a line of five or six.

    >>> sorted({t.answer for t in grpo_held_out()})
    ['5', '6']
    """
    return _long_count_tasks(100, seed=1)


def grpo_prompts() -> list[Task]:
    """GRPO's training requests: 400 more like :func:`grpo_held_out`'s, none of them one."""
    return _long_count_tasks(400, seed=2, avoid={t.prompt for t in grpo_held_out()})


def grpo_run(config: GRPOConfig = GRPO_RECIPE, progress: bool = True) -> PolicyRun:
    """GRPO on :func:`grpo_prompts`, rewarded by exact-match score, from the fine-tuned model
    (cached)."""
    chat = sft_model(progress=progress)
    prompts = grpo_prompts()
    return _run("grpo", {"grpo": config.to_dict(), "target": [GRPO_FAMILY, GRPO_LINE_WORDS]}, chat,
                lambda: train_grpo(chat.model, chat.tokenizer, prompts, config,
                                   progress=progress))


def evaluate_policy(model: GPT, tokenizer, reference: GPT, tasks: list[Task],
                    shakespeare: TokenizedData | None = None, seed: int = 0) -> dict:
    """A model on held-out ``tasks``: the judge's grade of each greedy reply (``"grades"``) and
    their mean (``"judge"``), the share of courteous replies, exact-match accuracy per family,
    KL to ``reference`` per reply (sampled at temperature 1), and the loss on Tiny Shakespeare's
    validation text in nats per character."""
    accuracy, replies = task_accuracy(model, tokenizer, tasks)
    grades = [judge(t.family, t.prompt, r) for t, r in zip(tasks, replies, strict=True)]
    samples = sample_responses(model, tokenizer, tasks, temperature=1.0, seed=seed)
    return {"judge": sum(grades) / len(grades), "grades": grades,
            "courteous": sum(map(courteous, replies)) / len(replies), **accuracy,
            "kl": kl_to_reference(model, reference, samples),
            "shakespeare": shakespeare_loss(model, shakespeare)}


def bootstrap_interval(values: list[float], n: int = 2000, seed: int = 0
                       ) -> tuple[float, float]:
    """The 95 % interval of the mean of ``values``, by resampling them with replacement ``n``
    times (the percentile bootstrap): how far the mean could move with other held-out requests.

    >>> low, high = bootstrap_interval([0.0, 1.0] * 50)
    >>> 0.38 < low < 0.5 < high < 0.62
    True
    """
    if len(values) == 0:
        raise ValueError("values must hold at least one number, got none")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.tensor(values, dtype=torch.float64)
    means = x[torch.randint(len(x), (n, len(x)), generator=generator)].mean(dim=1)
    return means.quantile(0.025).item(), means.quantile(0.975).item()


def shakespeare_loss(model: GPT, shakespeare: TokenizedData | None = None) -> float:
    """The loss on Tiny Shakespeare's validation text, nats per character (8 batches of 64)."""
    data = shakespeare or shakespeare_tokens("bpe", 1024)
    return data.per_char(evaluate(model, data.val_ids, 128, batch_size=64, max_batches=8))


def _blank(chat: FineTuned) -> GPT:
    with torch.random.fork_rng():
        return GPT(chat.model.config).eval()
