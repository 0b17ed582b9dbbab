"""Supervised fine-tuning: the book's model learns to answer requests (Lesson 10).

:func:`fine_tune` takes the book's model, adds the chat tokens of
:mod:`llm_from_scratch.chat_template`, and trains it on conversations from the task suite of
:mod:`llm_from_scratch.tasks` through the ordinary training loop: only the assistant's tokens
are targets. With ``lora_rank`` it trains LoRA adapters instead of every weight, then merges
them. :func:`sft_model` caches the result like the book's model, so later lessons load it.
:func:`task_accuracy` measures a model on held-out tasks, greedily or by sampling.

>>> SFT_RECIPE.max_steps > 0
True
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm_from_scratch.artifacts import cached
from llm_from_scratch.chat_template import (
    END,
    ChatDataset,
    add_chat_tokens,
    chat_example,
    encode_chat,
    resize_vocab,
)
from llm_from_scratch.generation import generate
from llm_from_scratch.lora import add_lora, count_trainable, merge_lora
from llm_from_scratch.model import GPT, LanguageModel
from llm_from_scratch.tasks import FAMILIES, Task, score, task_split
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.train import TrainConfig, TrainResult, train
from llm_from_scratch.trained import (
    TrainedModel,
    book_model,
    tokenizer_from_text,
    tokenizer_to_text,
)

#: Fine-tuning's recipe: short, with a warmup and a cosine decay, on batches of conversations.
SFT_RECIPE = TrainConfig(
    block_size=128, batch_size=64, max_steps=300, learning_rate=3e-3, weight_decay=0.0,
    schedule="cosine", warmup_steps=10, min_lr=3e-4, eval_interval=50, eval_batches=4,
    seed=1337, dtype="auto",
)
#: LoRA's recipe: its updates pass through two small matrices, one starting at zero, so it
#: needs a larger learning rate than full fine-tuning (Hu et al. tune it separately too).
LORA_RECIPE = dataclasses.replace(SFT_RECIPE, learning_rate=6e-3, min_lr=6e-4)
#: The LoRA ranks Lesson 10 compares with full fine-tuning.
LORA_RANKS = (8,)
#: How many tasks train, and how many are held out to measure accuracy.
N_TRAIN, N_TEST = 30000, 300


@dataclass
class FineTuned:
    """A fine-tuned model, its chat tokenizer, and what its training did."""

    name: str
    model: GPT
    tokenizer: BPETokenizer
    result: TrainResult
    trainable_params: int  # the parameters training changed (LoRA: the adapters only)
    from_cache: bool


def conversation(task: Task) -> list[dict[str, str]]:
    """The task as a one-turn conversation: the request, then the answer."""
    return [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": task.answer}]


def chat_dataset(tokenizer: BPETokenizer, tasks: Sequence[Task], block_size: int) -> ChatDataset:
    """The tasks as a dataset of ``(inputs, targets)``, targets only on the assistant's tokens."""
    examples = [chat_example(tokenizer, conversation(t), block_size) for t in tasks]
    return ChatDataset(examples, block_size=block_size, pad_id=tokenizer.special_tokens[END])


def fine_tune(
    base: TrainedModel,
    config: TrainConfig = SFT_RECIPE,
    *,
    lora_rank: int | None = None,
    n_train: int = N_TRAIN,
    progress: bool = True,
) -> tuple[GPT, BPETokenizer, TrainResult, int]:
    """Fine-tune a copy of ``base`` on ``n_train`` tasks: every weight, or LoRA at a rank.

    Returns the model (LoRA merged in), its tokenizer, the training result and the number of
    parameters that trained.
    """
    tokenizer = add_chat_tokens(base.tokenizer)
    torch.manual_seed(config.seed)
    model = resize_vocab(_copy(base.model), tokenizer.vocab_size)
    trainable = model.num_parameters()
    if lora_rank is not None:
        add_lora(model, ("c_attn", "c_proj", "c_fc"), r=lora_rank, alpha=2 * lora_rank)
        new_rows = tokenizer.vocab_size - base.tokenizer.vocab_size
        trainable = count_trainable(model) + new_rows * model.config.n_embd
        unfreeze = _train_new_rows(model, new_rows)
    train_tasks, test_tasks = task_split(n_train, N_TEST, seed=0)
    result = train(
        model, chat_dataset(tokenizer, train_tasks, config.block_size),
        chat_dataset(tokenizer, test_tasks, config.block_size), config, progress=progress,
        description="sft" if lora_rank is None else f"sft-lora-{lora_rank}",
    )
    if lora_rank is not None:
        unfreeze.remove()
        merge_lora(model)
    return model.eval(), tokenizer, result, trainable


def sft_model(lora_rank: int | None = None, progress: bool = True) -> FineTuned:
    """Fine-tune the book's model (on a cache miss) or load it: the chat model of Lesson 10."""
    base = book_model(progress=progress)
    name = "sft" if lora_rank is None else f"sft-lora-{lora_rank}"
    recipe = SFT_RECIPE if lora_rank is None else LORA_RECIPE
    spec = {"base": base.name, "train": recipe.to_dict(), "lora_rank": lora_rank,
            "tasks": [N_TRAIN, N_TEST]}

    def compute() -> tuple[dict, dict]:
        model, tokenizer, result, trainable = fine_tune(base, recipe, lora_rank=lora_rank,
                                                        n_train=N_TRAIN, progress=progress)
        info = {"result": result.to_dict(), "tokenizer": tokenizer_to_text(tokenizer),
                "trainable_params": trainable}
        return info, model.state_dict()

    artifact = cached(name, spec, compute)
    tokenizer = tokenizer_from_text(artifact.info["tokenizer"])
    model = GPT(dataclasses.replace(base.model.config, vocab_size=tokenizer.vocab_size))
    model.load_state_dict(artifact.state_dict)
    return FineTuned(name, model.eval(), tokenizer, TrainResult(**artifact.info["result"]),
                     artifact.info["trainable_params"], artifact.from_cache)


def held_out_tasks() -> list[Task]:
    """The held-out tasks that :func:`task_accuracy` is reported on."""
    return task_split(N_TRAIN, N_TEST, seed=0)[1]


def prompt_ids(tokenizer: BPETokenizer, prompt: str) -> list[int]:
    """The chat encoding of a one-turn request, ready for the assistant's reply."""
    return encode_chat(tokenizer, [{"role": "user", "content": prompt}],
                       add_generation_prompt=True)[0]


def reply_tokens(
    model: LanguageModel, tokenizer: BPETokenizer, prompts: Sequence[str], *,
    temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 16,
) -> tuple[list[list[int]], list[list[int]]]:
    """Each prompt's chat encoding, and the model's reply to it up to its end token (excluded).

    Prompts whose chat encodings have the same length are generated as one batch.
    """
    end = tokenizer.special_tokens[END]
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    generator = torch.Generator().manual_seed(seed)
    for length, rows in sorted(by_length.items()):
        idx = torch.tensor([encoded[i] for i in rows])
        new = generate(model, idx, max_new_tokens, temperature=temperature, eos_id=end,
                       generator=generator)[:, length:]
        for i, tokens in zip(rows, new.tolist(), strict=True):
            out[i] = tokens[: tokens.index(end)] if end in tokens else tokens
    return encoded, out


def replies(
    model: LanguageModel, tokenizer: BPETokenizer, prompts: Sequence[str], *,
    temperature: float = 0.0, seed: int = 0, max_new_tokens: int = 16,
) -> list[str]:
    """The model's reply to each prompt, up to its end token (or ``max_new_tokens``)."""
    _, tokens = reply_tokens(model, tokenizer, prompts, temperature=temperature, seed=seed,
                             max_new_tokens=max_new_tokens)
    return [tokenizer.decode(t).strip() for t in tokens]  # the template's space, and any other


def task_accuracy(
    model: LanguageModel, tokenizer: BPETokenizer, tasks: Sequence[Task], *,
    temperature: float = 0.0, seed: int = 0,
) -> tuple[dict[str, float], list[str]]:
    """Accuracy per task family (and ``"all"``) on ``tasks``, and the replies it scored."""
    answers = replies(model, tokenizer, [t.prompt for t in tasks], temperature=temperature,
                      seed=seed)
    scores: dict[str, list[float]] = defaultdict(list)
    for task, answer in zip(tasks, answers, strict=True):
        scores[task.family].append(score(task.family, task.prompt, answer))
    accuracy = {f: sum(scores[f]) / len(scores[f]) for f in FAMILIES if scores[f]}
    accuracy["all"] = sum(map(sum, scores.values())) / len(tasks)
    return accuracy, answers


def _train_new_rows(model: GPT, rows: int) -> torch.utils.hooks.RemovableHandle:
    """Let training change the last ``rows`` rows of the (tied) embedding, and no other.

    LoRA freezes the embedding, but the chat tokens' rows start as the mean row: frozen, the
    model could never single out ``<|end|>`` to stop. A gradient mask keeps the old rows exactly
    as they are (fine-tuning uses no weight decay, so a zero gradient means no change), as
    ``peft``'s ``trainable_token_indices`` does. Returns the hook's handle, to remove it after.
    """
    weight = model.wte.weight
    keep = torch.zeros_like(weight)
    keep[-rows:] = 1.0
    weight.requires_grad_(True)
    return weight.register_hook(lambda grad: grad * keep)


def _copy(model: GPT) -> GPT:
    clone = GPT(model.config)
    clone.load_state_dict(model.state_dict())
    return clone

