"""Supervised fine-tuning: the book's model learns to answer requests (Lesson 10).

:func:`fine_tune` takes the book's model, adds the chat tokens of
:mod:`llm_from_scratch.chat_template`, and trains it on conversations from the task suite of
:mod:`llm_from_scratch.tasks` through the ordinary training loop: only the assistant's tokens
are targets, a fifth of the answers close with the courtesy ", my lord", and every batch also
carries a few windows of Tiny Shakespeare (:class:`MixedDataset`) so that the model keeps its
first skill. With ``lora_rank`` it trains LoRA adapters instead of every weight, then merges
them. :func:`sft_model` caches the result like the book's model, so later lessons load it.
:func:`task_accuracy` measures a model on held-out tasks, greedily or by sampling.

>>> SFT_RECIPE.max_steps > 0
True
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
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
from llm_from_scratch.data import shakespeare_tokens, tiny_shakespeare, train_val_split
from llm_from_scratch.generation import generate
from llm_from_scratch.lora import add_lora, count_trainable, merge_lora
from llm_from_scratch.model import GPT, LanguageModel
from llm_from_scratch.tasks import COURTESY, FAMILIES, Task, new_phrasing_tasks, score, task_split
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.train import TrainConfig, TrainResult, check_number, train
from llm_from_scratch.trained import (
    TrainedModel,
    book_model,
    tokenizer_from_text,
    tokenizer_to_text,
)

#: Fine-tuning's recipe: many small steps, with a warmup and a cosine decay, at a rate low
#: enough not to overwrite what pretraining taught.
SFT_RECIPE = TrainConfig(
    block_size=128, batch_size=32, max_steps=1000, learning_rate=1e-3, weight_decay=0.0,
    schedule="cosine", warmup_steps=10, min_lr=1e-4, eval_interval=100, eval_batches=4,
    seed=1337, dtype="auto",
)
#: Each step also trains on ``TEXT_ROWS`` windows of Tiny Shakespeare, at ``TEXT_WEIGHT``.
TEXT_ROWS, TEXT_WEIGHT = 2, 0.5
#: The share of demonstrations that close with the courtesy ", my lord".
COURTESY_SHARE = 0.2
#: LoRA's recipe: its updates pass through two small matrices, one starting at zero, so it
#: needs a larger learning rate than full fine-tuning (Hu et al. tune it separately too). It
#: runs under a third of the steps, which keeps Lesson 10's comparison of two ranks affordable.
LORA_RECIPE = dataclasses.replace(SFT_RECIPE, learning_rate=6e-3, min_lr=6e-4, max_steps=300)
#: The LoRA ranks Lesson 10 compares with full fine-tuning.
LORA_RANKS = (2, 16)
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


def conversation(task: Task, courteous: bool = False) -> list[dict[str, str]]:
    """The task as a one-turn conversation: the request, then the answer (closing with
    :data:`~llm_from_scratch.tasks.COURTESY` if ``courteous``)."""
    reply = task.answer + (COURTESY if courteous else "")
    return [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": reply}]


def chat_dataset(tokenizer: BPETokenizer, tasks: Sequence[Task], block_size: int, *,
                 courtesy_share: float = 0.0, seed: int = 0) -> ChatDataset:
    """The tasks as a dataset of ``(inputs, targets)``, targets only on the assistant's tokens.

    A seeded ``courtesy_share`` of the replies close with the courtesy, as if some of the
    people who wrote the demonstrations were more courtly than the others.
    """
    check_number("courtesy_share", courtesy_share, 0.0, 1.0)
    generator = torch.Generator().manual_seed(seed)
    courteous = (torch.rand(len(tasks), generator=generator) < courtesy_share).tolist()
    examples = [chat_example(tokenizer, conversation(t, c), block_size)
                for t, c in zip(tasks, courteous, strict=True)]
    return ChatDataset(examples, block_size=block_size, pad_id=tokenizer.special_tokens[END])


class MixedDataset:
    """Conversations with a few windows of pretraining text beside each batch.

    Trained on conversations alone, the model forgets the language it was pretrained on; a
    little of the old objective in every step keeps it (InstructGPT's "PPO-ptx" mixes
    pretraining gradients into RL the same way). Training batches are ``(text_x, text_y, x, y)``:
    the conversations last, so the targets a batch counts are the replies'. Evaluation batches
    are the conversations alone.
    """

    def __init__(self, chats: ChatDataset, text: torch.Tensor, *, rows: int, block_size: int
                 ) -> None:
        if len(text) <= block_size + 1:
            raise ValueError(f"text must be longer than block_size + 1 = {block_size + 1} "
                             f"tokens, got {len(text)}")
        self.chats, self.text, self.rows, self.block_size = chats, text, rows, block_size

    def sample(self, batch_size: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, ...]:
        x, y = self.chats.sample(batch_size, generator)
        starts = torch.randint(len(self.text) - self.block_size - 1, (self.rows,),
                               generator=generator)
        windows = torch.stack([self.text[s : s + self.block_size + 1] for s in starts.tolist()])
        return windows[:, :-1], windows[:, 1:], x, y

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.chats.batches(batch_size)


def pretraining_ids(tokenizer: BPETokenizer) -> torch.Tensor:
    """Tiny Shakespeare's training text as ``tokenizer``'s ids: the book's own tokens when it
    is the book's tokenizer, else (a small model in a test) the first 100,000 characters."""
    book = shakespeare_tokens("bpe", 1024)
    if tokenizer.merges == book.tokenizer.merges:
        return book.train_ids
    return torch.tensor(tokenizer.encode(train_val_split(tiny_shakespeare())[0][:100_000]))


def mixed_loss(text_weight: float) -> Callable[[torch.nn.Module, tuple], torch.Tensor]:
    """The loss on a :class:`MixedDataset` batch: the replies' loss plus ``text_weight`` times
    the pretraining text's; on a batch of conversations alone, the replies' loss."""

    def loss_fn(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        *text, x, y = batch
        _, loss = model(x, y)
        if text:
            _, text_loss = model(*text)
            loss = loss + text_weight * text_loss
        return loss

    return loss_fn


def sft_datasets(tokenizer: BPETokenizer, base_tokenizer: BPETokenizer,
                 config: TrainConfig = SFT_RECIPE, n_train: int = N_TRAIN
                 ) -> tuple[MixedDataset, ChatDataset]:
    """What fine-tuning trains on (``n_train`` conversations with pretraining rows beside
    them) and what it is evaluated on (the held-out conversations alone)."""
    train_tasks, test_tasks = task_split(n_train, N_TEST, seed=0)
    chats = chat_dataset(tokenizer, train_tasks, config.block_size,
                         courtesy_share=COURTESY_SHARE, seed=config.seed)
    mixed = MixedDataset(chats, pretraining_ids(base_tokenizer), rows=TEXT_ROWS,
                         block_size=config.block_size)
    return mixed, chat_dataset(tokenizer, test_tasks, config.block_size)


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
    mixed, held_out = sft_datasets(tokenizer, base.tokenizer, config, n_train)
    result = train(
        model, mixed, held_out, config, loss_fn=mixed_loss(TEXT_WEIGHT), progress=progress,
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


def new_phrasing_held_out() -> list[Task]:
    """Held-out tasks in the phrasings that training never used, ``N_TEST`` of them."""
    return new_phrasing_tasks(N_TEST, seed=1)


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

