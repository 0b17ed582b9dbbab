"""llm_from_scratch.sft: fine-tuning through the training loop, caching, and task accuracy."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llm_from_scratch import sft, tasks, trained
from llm_from_scratch.chat_template import END, add_chat_tokens, encode_chat
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.tokenizer import BPETokenizer
from llm_from_scratch.trained import TrainedModel

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RECIPE = dataclasses.replace(sft.SFT_RECIPE, batch_size=16, max_steps=30, learning_rate=3e-3,
                             warmup_steps=2, eval_interval=10, eval_batches=1)


@pytest.fixture(scope="module")
def base() -> TrainedModel:
    """A small BPE tokenizer trained on task text, and a small GPT on its vocabulary."""
    text = " ".join(t.prompt + " " + t.answer for t in tasks.make_tasks(600, seed=1))
    tokenizer = BPETokenizer().train(text, vocab_size=400)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=128, n_layer=2, n_head=2,
                          n_embd=32))
    return TrainedModel("tiny-base", model.eval(), tokenizer, None, 0.0, True)


def test_fine_tuning_learns_the_answers_and_leaves_the_base_alone(base):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    model, tokenizer, result, trainable = sft.fine_tune(base, RECIPE, n_train=400,
                                                        progress=False)
    assert tokenizer.vocab_size == base.tokenizer.vocab_size + 3
    assert model.config.vocab_size == tokenizer.vocab_size
    assert trainable == model.num_parameters()
    history = result.history
    assert history[-1]["val_loss"] < 0.95 * history[0]["val_loss"]
    for name, tensor in base.model.state_dict().items():  # the base model is copied, not tuned
        assert torch.equal(tensor, before[name]), name


def test_lora_fine_tuning_trains_only_the_adapters_and_merges_them(base):
    model, _, result, trainable = sft.fine_tune(base, RECIPE, lora_rank=2, n_train=400,
                                                progress=False)
    per_block = 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))  # r * (in + out) per layer
    assert trainable == 2 * per_block + 3 * 32  # and the three chat tokens' embedding rows
    assert not any("lora" in name for name in model.state_dict())  # merged back
    old_rows = base.model.wte.weight
    assert torch.equal(model.wte.weight[: len(old_rows)], old_rows)  # only the new rows moved
    mean_row = old_rows.mean(dim=0)
    assert not torch.allclose(model.wte.weight[-3:], mean_row.expand(3, -1))
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_replies_stop_at_the_end_token_and_score_per_family(base):
    tokenizer = add_chat_tokens(base.tokenizer)
    end = tokenizer.special_tokens[END]

    class Answers(torch.nn.Module):
        """Replies with the right answer, token by token, then the end token."""

        vocab_size, block_size, check_inputs = tokenizer.vocab_size, 64, True

        def __init__(self, pairs):
            super().__init__()
            self.script = {}
            for prompt, answer in pairs:
                prompt_ids = encode_chat(tokenizer, [{"role": "user", "content": prompt}],
                                         add_generation_prompt=True)[0]
                self.script[tuple(prompt_ids)] = tokenizer.encode(" " + answer) + [end]

        def forward(self, idx):
            logits = torch.zeros(idx.size(0), idx.size(1), self.vocab_size)
            for row, ids in enumerate(idx.tolist()):
                for prompt, answer in self.script.items():
                    if tuple(ids[: len(prompt)]) == prompt:
                        done = len(ids) - len(prompt)
                        logits[row, -1, answer[min(done, len(answer) - 1)]] = 10.0
            return logits, None

    held_out = tasks.make_tasks(24, seed=5)
    prompts, right = [t.prompt for t in held_out], [t.answer for t in held_out]
    scripted = Answers(zip(prompts, right, strict=True))
    accuracy, answers = sft.task_accuracy(scripted, tokenizer, held_out)
    assert answers == [t.answer for t in held_out]
    assert accuracy["all"] == 1.0 and set(accuracy) == {*tasks.FAMILIES, "all"}
    shifted = right[1:] + right[:1]  # each prompt gets its neighbour's answer
    wrong, _ = sft.task_accuracy(Answers(zip(prompts, shifted, strict=True)), tokenizer,
                                 held_out)
    assert wrong["all"] < 0.5


def test_the_fine_tuned_model_is_cached(base, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sft, "SFT_RECIPE", dataclasses.replace(RECIPE, max_steps=3))
    monkeypatch.setattr(sft, "N_TRAIN", 200)
    monkeypatch.setattr(sft, "book_model", lambda progress=True: base)
    first = sft.sft_model(progress=False)
    second = sft.sft_model(progress=False)
    assert not first.from_cache and second.from_cache
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(first.model(ids)[0], second.model(ids)[0])
    assert second.tokenizer.special_tokens == first.tokenizer.special_tokens
    assert trained.tokenizer_to_text(second.tokenizer) == trained.tokenizer_to_text(
        first.tokenizer)
