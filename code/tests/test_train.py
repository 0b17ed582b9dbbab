"""Tests for llm_from_scratch.train: evaluation, the training step, the loop and its seams.

Training runs here are a handful of steps on tiny models: they check the loop's contracts
(honest evaluation, reproducibility, accumulation, any dataset and loss), not the book's loss
numbers. Checkpoints and run directories are tested in test_checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from training_helpers import RUN, data, fresh_model, losses

import llm_from_scratch.train as train_module
from llm_from_scratch import runtime
from llm_from_scratch.data import TokenWindows
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig
from llm_from_scratch.train import (
    IGNORE_INDEX,
    TrainConfig,
    TrainResult,
    as_dataset,
    count_targets,
    evaluate,
    make_optimizer,
    micro_batch_weights,
    next_token_loss,
    train,
    train_step,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")



def cycle_data(n: int, vocab: int = 5, seed: int = 0) -> torch.Tensor:
    """A nearly deterministic chain: the next token is (token + 1) % vocab, 90 % of the time."""
    g = torch.Generator().manual_seed(seed)
    data = torch.empty(n, dtype=torch.long)
    data[0] = 0
    noise = torch.rand(n, generator=g) < 0.1
    random = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, n):
        data[i] = random[i] if noise[i] else (data[i - 1] + 1) % vocab
    return data


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


# ---- a masked objective: supervised fine-tuning's shape ------------------------------------


class PromptResponse:
    """Sequences of a random prompt, then a response that counts up by one (mod ``vocab``).

    Like supervised fine-tuning's examples, the targets inside the prompt are ``-100``: only
    the response is learned. Prompts differ in length, so batches count different numbers of
    targets. ``pad`` appends padding of that value after the response, with masked targets.
    """

    def __init__(self, n: int, vocab: int = 11, block_size: int = 8, seed: int = 0,
                 pad: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        seq = torch.empty(n, block_size + 1, dtype=torch.long)
        y_mask = torch.zeros(n, block_size, dtype=torch.bool)
        for i in range(n):
            prompt = int(torch.randint(1, block_size - 2, (), generator=g))
            seq[i, :prompt] = torch.randint(0, vocab, (prompt,), generator=g)
            for j in range(prompt, block_size + 1):
                seq[i, j] = (seq[i, j - 1] + 1) % vocab
            y_mask[i, : prompt - 1] = True  # targets that are prompt tokens
            if pad is not None:
                end = int(torch.randint(prompt + 1, block_size + 1, (), generator=g))
                seq[i, end:] = pad
                y_mask[i, end - 1 :] = True  # targets that are padding
        self.x = seq[:, :-1]
        self.y = seq[:, 1:].masked_fill(y_mask, IGNORE_INDEX)

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        rows = torch.randint(len(self.x), (batch_size,), generator=generator)
        return self.x[rows], self.y[rows]

    def batches(self, batch_size: int):
        for start in range(0, len(self.x), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


def masked_loss(model, batch):
    """Cross-entropy over the targets that are not ``-100``, computed outside the model."""
    x, y = batch
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)


MASKED_RUN = dataclasses.replace(RUN, max_steps=60, eval_interval=20, learning_rate=1e-2,
                                 weight_decay=0.0)


def test_a_masked_objective_trains_through_the_loop():
    train_data, val_data = PromptResponse(400), PromptResponse(100, seed=1)
    assert (train_data.y == IGNORE_INDEX).any() and (train_data.y != IGNORE_INDEX).any()
    model = fresh_model()
    before = evaluate(model, val_data, loss_fn=masked_loss)
    result = train(model, train_data, val_data, MASKED_RUN, loss_fn=masked_loss, progress=False)
    assert result.val_loss == pytest.approx(evaluate(model, val_data, loss_fn=masked_loss))
    assert result.val_loss < 0.5 * before
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert [h["step"] for h in result.history] == [20, 40, 60]


def test_masked_positions_contribute_no_gradient():
    # Padding values sit at masked positions only (inputs after the response, and the targets
    # that would predict them); a causal model's real positions never see them.
    config = dataclasses.replace(MASKED_RUN, max_steps=10, eval_interval=10)
    trained = []
    for pad in (0, 7):
        model = fresh_model()
        dataset = PromptResponse(200, pad=pad)
        train(model, dataset, dataset, config, loss_fn=masked_loss, progress=False)
        trained.append(model.state_dict())
    first, second = trained
    assert all(torch.equal(first[k], second[k]) for k in first)
    # ...and the comparison is sensitive: counting the padding targets changes the weights.
    counted = PromptResponse(200, pad=7)
    counted.y = torch.where(counted.y == IGNORE_INDEX, torch.tensor(7), counted.y)
    model = fresh_model()
    train(model, counted, counted, config, loss_fn=masked_loss, progress=False)
    assert any(not torch.equal(first[k], model.state_dict()[k]) for k in first)


def test_accumulation_with_unequal_masked_counts_equals_one_big_batch(monkeypatch):
    dataset = PromptResponse(200)
    config = dataclasses.replace(RUN, max_steps=8, eval_interval=4, weight_decay=0.0)
    counts = [count_targets(b) for b in zip(*(t.chunk(4) for t in dataset.sample(8)),
                                            strict=True)]
    assert len(set(counts)) > 1  # the micro-batches do count different numbers of targets

    def run(accum):
        model = fresh_model()
        result = train(model, dataset, dataset, dataclasses.replace(config, grad_accum_steps=accum),
                       loss_fn=masked_loss, progress=False)
        return result, model

    (r1, m1), (r4, m4) = run(1), run(4)
    assert max_difference(m1, m4) < 1e-5
    assert [h["train_loss"] for h in r1.history] == pytest.approx(
        [h["train_loss"] for h in r4.history], abs=1e-5
    )
    # Weighting every micro-batch 1/k, the common mistake, trains another model.
    monkeypatch.setattr(train_module, "micro_batch_weights",
                        lambda counts, world_size=1: [1 / len(counts)] * len(counts))
    _, naive = run(4)
    assert max_difference(m1, naive) > 1e-4


# ---- evaluate ---------------------------------------------------------------------------


def test_evaluate_equals_hand_computed_mean_loss():
    torch.manual_seed(0)
    model = BigramLanguageModel(5)
    tokens = cycle_data(23)
    # (23 - 1) // 4 = 5 windows: inputs tokens[0:20], targets tokens[1:21]; the rest is dropped.
    table = model.token_embedding.weight.detach()
    expected = F.cross_entropy(table[tokens[:20]], tokens[1:21]).item()
    for batch_size in (1, 2, 5, 256):  # uneven last batches weigh by their token count
        assert evaluate(model, tokens, block_size=4, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-6
        )
    # max_batches: only the first windows
    first = F.cross_entropy(table[tokens[:8]], tokens[1:9]).item()
    assert evaluate(model, tokens, 4, batch_size=2, max_batches=1) == pytest.approx(first, rel=1e-6)
    # a dataset gives the same figure as the tensor it wraps
    assert evaluate(model, TokenWindows(tokens, 4), batch_size=2) == pytest.approx(expected)


def test_evaluate_weighs_batches_by_their_counted_targets():
    torch.manual_seed(0)
    model = BigramLanguageModel(11)
    dataset = PromptResponse(13)
    logits = model.token_embedding.weight.detach()[dataset.x]
    expected = F.cross_entropy(logits.flatten(0, 1), dataset.y.flatten(),
                               ignore_index=IGNORE_INDEX).item()
    for batch_size in (1, 4, 13):  # batches count different numbers of targets
        assert evaluate(model, dataset, batch_size=batch_size, loss_fn=masked_loss) == (
            pytest.approx(expected, rel=1e-6)
        )


def test_evaluate_is_deterministic_and_restores_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    tokens = cycle_data(200)
    model.train()
    a = evaluate(model, tokens, 8, batch_size=4)
    b = evaluate(model, tokens, 8, batch_size=7)
    assert a == pytest.approx(b, rel=1e-6)  # dropout off, every token once
    assert model.training
    model.eval()
    evaluate(model, tokens, 8)
    assert not model.training


def test_evaluate_needs_one_full_window_and_a_block_size():
    with pytest.raises(ValueError, match="need more than block_size=8"):
        evaluate(BigramLanguageModel(5), torch.arange(8) % 5, block_size=8)
    with pytest.raises(ValueError, match="block_size is needed"):
        evaluate(BigramLanguageModel(5), torch.arange(20) % 5)
    dataset = PromptResponse(3)
    assert as_dataset(dataset, None) is dataset


def test_count_targets_skips_ignored_positions():
    y = torch.tensor([[1, IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX, 0]])
    assert count_targets((torch.zeros_like(y), y)) == 3


# ---- train ------------------------------------------------------------------------------


TINY = TrainConfig(block_size=8, batch_size=16, max_steps=30, learning_rate=0.1, eval_interval=10)


def test_train_reduces_the_loss_on_a_bigram_task():
    tokens = cycle_data(2000)
    train_data, val_data = tokens[:1800], tokens[1800:]
    torch.manual_seed(0)
    model = BigramLanguageModel(5)
    before = evaluate(model, val_data, 8)
    result = train(model, train_data, val_data, TINY, progress=False)
    assert isinstance(result, TrainResult)
    assert result.val_loss == pytest.approx(evaluate(model, val_data, 8), rel=1e-6)
    assert result.val_loss < before - 0.5
    # the chain's entropy is about 0.5 nats: 30 steps get well on the way there
    assert result.val_loss < 1.0
    assert [h["step"] for h in result.history] == [10, 20, 30]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.steps == 30 and result.n_params == 25
    # the time is bookkept, not judged (code/benchmarks/timing_checks.py measures it)
    assert result.seconds == result.history[-1]["elapsed"]
    assert result.tokens_per_second == pytest.approx(30 * TINY.tokens_per_step / result.seconds)
    assert result.train_loss == result.history[-1]["train_loss"]
    assert all(h["grad_norm"] > 0 for h in result.history)


def test_train_is_reproducible():
    tokens = cycle_data(1000)
    config = dataclasses.replace(TINY, max_steps=6, eval_interval=3, learning_rate=1e-2)
    gpt_config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.2)

    def run(seed, global_seed):
        torch.manual_seed(0)
        model = GPT(gpt_config)
        torch.manual_seed(global_seed)  # train must not depend on the global RNG's state
        result = train(model, tokens[:900], tokens[900:], dataclasses.replace(config, seed=seed),
                       progress=False)
        return result, model.state_dict()

    (r1, s1), (r2, s2), (r3, _) = run(1, 111), run(1, 222), run(2, 111)
    assert losses(r1) == losses(r2)  # floats: identical
    assert r1.val_loss == r2.val_loss and r1.train_loss == r2.train_loss
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.val_loss != r3.val_loss


def test_train_history_at_max_steps_and_no_clipping():
    tokens = cycle_data(500)
    config = TrainConfig(max_steps=7, eval_interval=5, batch_size=4, grad_clip=None)
    result = train(BigramLanguageModel(5), tokens, tokens, config, progress=False)
    assert [h["step"] for h in result.history] == [5, 7]
    assert math.isnan(result.history[0]["grad_norm"])


def test_stop_after_ends_the_run_early():
    result = train(fresh_model(), data(), data(600), RUN, progress=False, stop_after=7)
    assert result.steps == 7 and [h["step"] for h in result.history] == [5]


def test_results_round_trip_through_dicts():
    config = TrainConfig(max_steps=5)
    assert TrainConfig(**config.to_dict()) == config
    result = TrainResult(1.0, 2.0, 3.0, 4, 5, [{"step": 4}])
    assert TrainResult(**json.loads(json.dumps(result.to_dict()))) == result


# ---- TrainConfig validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("block_size", 0), ("batch_size", -1), ("max_steps", 0), ("eval_interval", 0),
     ("eval_batches", 0), ("grad_accum_steps", 0), ("max_steps", 2.5), ("max_steps", True),
     ("warmup_steps", -1), ("seed", 1.5),
     ("learning_rate", 0.0), ("learning_rate", -1e-3), ("learning_rate", math.nan),
     ("learning_rate", math.inf), ("min_lr", math.nan), ("min_lr", math.inf), ("min_lr", -0.1),
     ("min_lr", 0.1), ("weight_decay", math.nan), ("weight_decay", math.inf),
     ("weight_decay", -0.1), ("grad_clip", -1.0), ("grad_clip", 0.0), ("grad_clip", math.nan),
     ("grad_clip", math.inf), ("learning_rate", "1e-3")],
)  # fmt: skip
def test_train_config_refuses_bad_numbers_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be a finite"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    ("change", "message"),
    [({"betas": (0.9, 1.0)}, r"betas\[1\] must be below 1"),
     ({"betas": (math.nan, 0.9)}, r"betas\[0\] must be a finite"),
     ({"betas": (0.9,)}, "betas must be two numbers"),
     ({"batch_size": 8, "grad_accum_steps": 3}, "divisible by grad_accum_steps=3"),
     ({"schedule": "linear"}, "schedule must be one of"),
     ({"optimizer": "sgd"}, "optimizer must be one of"),
     ({"dtype": "float64"}, "dtype must be one of"),
     ({"device": "tpu"}, "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
     ({"device": "cuda:x"}, "device must be"),
     ({"dtype": "float16"}, "float16 needs a GPU")],
)  # fmt: skip
def test_train_config_refuses_bad_choices(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**change)


def test_train_config_accepts_its_edge_values():
    TrainConfig(grad_clip=None, min_lr=1e-3, learning_rate=1e-3, warmup_steps=0, seed=-1)
    TrainConfig(device="cuda:1", dtype="float16")  # a GPU is only needed to train
    assert TrainConfig(betas=[0.9, 0.95]).betas == (0.9, 0.95)


# ---- one training step ----------------------------------------------------------------------


def test_train_step_returns_the_loss_and_gradient_norm():
    model = fresh_model()
    config = dataclasses.replace(RUN, grad_clip=None)
    x, y = TokenWindows(data(), 8).sample(8, torch.Generator().manual_seed(0))
    expected = next_token_loss(model, (x, y)).item()
    optimizer = make_optimizer(model, config)
    before = [p.detach().clone() for p in model.parameters()]
    loss, grad_norm = train_step(model, optimizer, (x, y), config, lr=1e-3)
    assert loss == pytest.approx(expected) and math.isnan(grad_norm)
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_train_step_refuses_a_non_finite_loss_before_any_weight_changes():
    model = fresh_model()
    optimizer = make_optimizer(model, RUN)
    before = [p.detach().clone() for p in model.parameters()]
    batch = TokenWindows(data(), 8).sample(8)

    def nan_loss(model, batch):
        return next_token_loss(model, batch) * math.nan

    with pytest.raises(FloatingPointError, match="the training loss became nan"):
        train_step(model, optimizer, batch, RUN, 1e-3, loss_fn=nan_loss)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


# ---- gradient accumulation ----------------------------------------------------------------


def gradients(model, xs, ys, weights):
    model.zero_grad()
    for x, y, w in zip(xs, ys, weights, strict=True):
        (model(x, y)[1] * w).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_micro_batch_weights_follow_the_counted_targets():
    assert micro_batch_weights([2, 4]) == pytest.approx([1 / 3, 2 / 3])
    assert micro_batch_weights([5, 5, 5, 5]) == pytest.approx([0.25] * 4)
    # data parallel: gradients are averaged over processes, so the weights carry world_size
    assert micro_batch_weights([2, 4], world_size=2) == pytest.approx([2 / 3, 4 / 3])


def test_accumulated_gradients_equal_one_big_batch_even_with_padding():
    model = fresh_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (8, 8), generator=g)
    y = torch.randint(0, 11, (8, 8), generator=g)
    y[:3, 2:] = IGNORE_INDEX  # padding: the first micro-batches count fewer targets
    full = gradients(model, [x], [y], [1.0])
    xs, ys = list(x.chunk(4)), list(y.chunk(4))
    weights = micro_batch_weights([count_targets((xb, yb)) for xb, yb in zip(xs, ys, strict=True)])
    ours = gradients(model, xs, ys, weights)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(full, ours, strict=True))
    # The common mistake, weighting each micro-batch's mean by 1/k, gives other gradients.
    naive = gradients(model, xs, ys, [0.25] * 4)
    assert max((a - b).abs().max() for a, b in zip(full, naive, strict=True)) > 1e-3


def test_training_with_accumulation_equals_one_big_batch():
    runs = []
    for accum in (1, 4):
        model = fresh_model()
        config = dataclasses.replace(RUN, grad_accum_steps=accum)
        runs.append((train(model, data(), data(600), config, progress=False), model))
    (r1, m1), (r4, m4) = runs
    assert max_difference(m1, m4) < 1e-5
    assert [h["train_loss"] for h in r1.history] == pytest.approx(
        [h["train_loss"] for h in r4.history], abs=1e-5
    )


def test_scratch_optimizer_trains_like_the_fused_one():
    results = []
    for optimizer in ("torch", "scratch"):
        model = fresh_model()
        config = dataclasses.replace(RUN, optimizer=optimizer)
        results.append((train(model, data(), data(600), config, progress=False), model))
    (a, ma), (b, mb) = results
    assert max_difference(ma, mb) < 1e-5
    assert a.val_loss == pytest.approx(b.val_loss, abs=1e-5)


# ---- ids the model cannot read ------------------------------------------------------------


@pytest.mark.parametrize("compile", [False, True])
def test_token_ids_outside_the_vocabulary_are_refused_before_training(compile):
    # The trainer turns off the model's per-call id check, so it checks each split once.
    config = dataclasses.replace(RUN, compile=compile)
    bad = data().clone()
    bad[1234] = 11
    with pytest.raises(ValueError, match=r"train_data holds token ids from 0 to 11.*11 tokens"):
        train(fresh_model(), bad, data(600), config, progress=False)
    with pytest.raises(ValueError, match="val_data holds token ids from -1"):
        train(fresh_model(), data(), torch.cat([data(600), torch.tensor([-1])]), config,
              progress=False)


def test_training_turns_the_per_call_id_check_off_and_back_on():
    model = fresh_model()
    seen = []

    def spy(model, batch):
        seen.append(model.check_inputs)
        return next_token_loss(model, batch)

    train(model, data(), data(600), dataclasses.replace(RUN, max_steps=2), loss_fn=spy,
          progress=False)
    assert seen[:2] == [False, False]  # the two training steps
    assert model.check_inputs


# ---- torch.compile ----------------------------------------------------------------------


@pytest.fixture
def compile_calls(monkeypatch):
    """The models torch.compile was asked to compile."""
    calls, compile = [], torch.compile

    def spy(model, *args, **kwargs):
        calls.append(model)
        return compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    return calls


needs_compiler = pytest.mark.skipif(not runtime.compiler_available(),
                                    reason="torch.compile needs a C++ compiler on a CPU")


@needs_compiler
def test_compiled_training_equals_eager_training(compile_calls):
    eager = train(fresh_model(), data(), data(600), RUN, progress=False)
    assert not compile_calls and eager.compile_seconds == 0
    compiled = train(fresh_model(), data(), data(600), dataclasses.replace(RUN, compile=True),
                     progress=False)
    assert len(compile_calls) == 1
    # Fused kernels add in another order: equal up to float32 rounding, not bit for bit.
    flat = [value for row in losses(eager) for value in row]
    assert [value for row in losses(compiled) for value in row] == pytest.approx(flat, rel=1e-4)
    assert compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-4)


def test_compile_without_a_cpp_compiler_trains_eagerly(monkeypatch, capsys, compile_calls):
    monkeypatch.setattr(runtime, "compiler_available", lambda: False)
    config = dataclasses.replace(RUN, compile=True, max_steps=5)
    result = train(fresh_model(), data(), data(600), config, progress=False)
    assert "no C++ compiler was found" in capsys.readouterr().out
    assert result.compile_seconds == 0 and not compile_calls


class DeterminismSpy:
    """Token windows that record, at each training batch, whether deterministic mode is on."""

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        self.windows, self.seen = TokenWindows(tokens, block_size), []

    def sample(self, batch_size, generator=None):
        self.seen.append(torch.are_deterministic_algorithms_enabled())
        return self.windows.sample(batch_size, generator)

    def batches(self, batch_size):
        return self.windows.batches(batch_size)


@needs_compiler
def test_compiled_cpu_training_runs_in_deterministic_mode_then_restores_it():
    # Compiled kernels may otherwise split sums between threads in a varying order.
    assert not torch.are_deterministic_algorithms_enabled()
    config = dataclasses.replace(RUN, compile=True, max_steps=3, eval_interval=3)
    spy = DeterminismSpy(data(), 8)
    first = train(fresh_model(), spy, data(600), config, progress=False)
    assert spy.seen == [True] * 3
    assert not torch.are_deterministic_algorithms_enabled()
    eager = DeterminismSpy(data(), 8)
    train(fresh_model(), eager, data(600), dataclasses.replace(config, compile=False),
          progress=False)
    assert eager.seen == [False] * 3  # eager training leaves the setting alone
    second = train(fresh_model(), DeterminismSpy(data(), 8), data(600), config, progress=False)
    assert losses(first) == losses(second)


def test_fixed_threads_give_the_same_losses_whatever_the_ambient_count():
    from llm_from_scratch.model import GPT, GPTConfig

    ids = torch.arange(3000) % 61
    config = TrainConfig(block_size=16, batch_size=16, max_steps=30, eval_interval=30,
                         eval_batches=2, learning_rate=3e-3, threads=1)
    results, before = [], torch.get_num_threads()
    try:
        for ambient in (1, 2):
            torch.set_num_threads(ambient)
            torch.manual_seed(0)
            model = GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=64))
            results.append(train(model, ids, ids, config, progress=False))
            assert torch.get_num_threads() == ambient  # restored after training
    finally:
        torch.set_num_threads(before)
    assert results[0].val_loss == results[1].val_loss
    assert [h["train_loss"] for h in results[0].history] == [
        h["train_loss"] for h in results[1].history]


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_threads_must_be_a_positive_integer(threads):
    with pytest.raises(ValueError, match="threads must be"):
        TrainConfig(threads=threads)
