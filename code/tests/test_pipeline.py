"""Lesson 8's training pipeline: accumulation, checkpoints, data parallelism, CLI, FLOPs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llm_from_scratch.flops import (
    flops_per_token,
    matmul_peak_flops,
    matmul_weights,
    mfu,
    parameter_count,
)
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.train import (
    PRESETS,
    TrainConfig,
    evaluate,
    load_checkpoint,
    main,
    micro_batch_weights,
    train,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

GPT_CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
RUN = TrainConfig(
    block_size=8,
    batch_size=8,
    max_steps=20,
    learning_rate=3e-3,
    eval_interval=5,
    eval_batches=2,
    schedule="cosine",
    warmup_steps=3,
    weight_decay=0.1,
)


def data(n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.arange(n) * 3 + torch.randint(0, 2, (n,), generator=g)) % 11


def fresh_model(config: GPTConfig = GPT_CONFIG) -> GPT:
    torch.manual_seed(0)
    return GPT(config)


def losses(result) -> list[tuple]:
    return [
        (h["step"], h["lr"], h["train_loss"], h["val_loss"], h["grad_norm"]) for h in result.history
    ]


# ---- gradient accumulation ----------------------------------------------------------------


def gradients(model, xs, ys, weights):
    model.zero_grad()
    for x, y, w in zip(xs, ys, weights, strict=True):
        (model(x, y)[1] * w).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_accumulated_gradients_equal_one_big_batch_even_with_padding():
    model = fresh_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (8, 8), generator=g)
    y = torch.randint(0, 11, (8, 8), generator=g)
    y[:3, 2:] = -100  # padding: the first micro-batches count fewer targets
    full = gradients(model, [x], [y], [1.0])
    xs, ys = list(x.chunk(4)), list(y.chunk(4))
    ours = gradients(model, xs, ys, micro_batch_weights(ys))
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
    assert (
        max((a - b).abs().max() for a, b in zip(m1.parameters(), m4.parameters(), strict=True))
        < 1e-5
    )
    assert [h["train_loss"] for h in r1.history] == pytest.approx(
        [h["train_loss"] for h in r4.history], abs=1e-5
    )


def test_accumulation_config_errors():
    with pytest.raises(ValueError, match="divisible by grad_accum_steps=3"):
        TrainConfig(batch_size=8, grad_accum_steps=3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")


def test_scratch_optimizer_trains_like_the_fused_one():
    results = []
    for optimizer in ("torch", "scratch"):
        model = fresh_model()
        results.append(
            (
                train(
                    model,
                    data(),
                    data(600),
                    dataclasses.replace(RUN, optimizer=optimizer),
                    progress=False,
                ),
                model,
            )
        )
    (a, ma), (b, mb) = results
    assert (
        max((p - q).abs().max() for p, q in zip(ma.parameters(), mb.parameters(), strict=True))
        < 1e-5
    )
    assert a.val_loss == pytest.approx(b.val_loss, abs=1e-5)


# ---- checkpoints and exact resume ---------------------------------------------------------


def test_resume_continues_with_identical_losses(tmp_path):
    config = dataclasses.replace(GPT_CONFIG, dropout=0.1)  # resume must restore the RNG too
    straight_model = fresh_model(config)
    straight = train(straight_model, data(), data(600), RUN, progress=False)

    ckpt = tmp_path / "run" / "checkpoint.pt"
    first = train(
        fresh_model(config), data(), data(600), RUN, progress=False, checkpoint=ckpt, stop_after=8
    )
    assert first.steps == 8
    state = torch.load(ckpt, weights_only=True)  # loads with the safe unpickler
    assert state["step"] == 8
    resumed_model = GPT(config)  # a new process would start from a new model
    resumed = train(
        resumed_model, data(), data(600), RUN, progress=False, checkpoint=ckpt, resume=True
    )
    assert losses(resumed) == losses(straight)  # identical floats, every logged step
    assert resumed.val_loss == straight.val_loss
    assert all(
        torch.equal(a, b)
        for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True)
    )
    assert load_checkpoint(ckpt)["step"] == RUN.max_steps


def test_resume_without_restoring_rng_would_differ(tmp_path):
    """The resume test is sensitive: a checkpoint without the batch generator's state fails."""
    ckpt = tmp_path / "checkpoint.pt"
    straight = train(fresh_model(), data(), data(600), RUN, progress=False)
    train(fresh_model(), data(), data(600), RUN, progress=False, checkpoint=ckpt, stop_after=8)
    state = load_checkpoint(ckpt)
    state["generator"] = torch.Generator().manual_seed(RUN.seed).get_state()
    torch.save(state, ckpt)
    resumed = train(
        GPT(GPT_CONFIG), data(), data(600), RUN, progress=False, checkpoint=ckpt, resume=True
    )
    assert losses(resumed) != losses(straight)


def test_resume_refuses_another_config(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    train(fresh_model(), data(), data(600), RUN, progress=False, checkpoint=ckpt, stop_after=5)
    with pytest.raises(ValueError, match="different TrainConfig"):
        train(
            fresh_model(),
            data(),
            data(600),
            dataclasses.replace(RUN, learning_rate=1e-2),
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# ---- the command line and data parallelism ------------------------------------------------


def test_cli_trains_logs_and_prints(tmp_path, capsys):
    out = tmp_path / "run"
    result = main(
        [
            "--preset",
            "tiny",
            "--max-steps",
            "10",
            "--eval-interval",
            "5",
            "--out-dir",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert f"final validation loss: {result.val_loss:.4f} nats/token" in printed
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,train_loss,val_loss") and len(lines) == 3
    summary = json.loads((out / "result.json").read_text())
    assert summary["val_loss"] == result.val_loss and summary["steps"] == 10
    assert summary["model"]["n_layer"] == PRESETS["tiny"].model.n_layer
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 10


def test_cli_overrides_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--preset",
        "tiny",
        "--n-layer",
        "1",
        "--grad-clip",
        "0",
        "--max-steps",
        "12",
        "--eval-interval",
        "4",
        "--out-dir",
        str(out),
        "--no-progress",
    ]
    full = main(args)
    main(
        args[:-3]
        + [
            "--out-dir",
            str(tmp_path / "part"),
            "--checkpoint-interval",
            "4",
            "--no-progress",
            "--max-steps",
            "12",
        ]
    )
    resumed = main(args[:-3] + ["--out-dir", str(tmp_path / "part"), "--resume", "--no-progress"])
    assert resumed.val_loss == full.val_loss
    assert json.loads((out / "result.json").read_text())["train"]["grad_clip"] is None
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-head", "3"], "n_embd=128 is not divisible by n_head=3"),
        (["--batch-size", "12", "--grad-accum-steps", "5"], "divisible by grad_accum_steps=5"),
        (["--resume"], "--resume needs a checkpoint"),
        (["--learning-rate", "0"], "learning_rate must be positive"),
    ],
)
def test_cli_bad_options_are_clear_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "nanogpt-cpu", *args])
    assert exit_info.value.code == 2  # argparse's usage error, no traceback
    assert message in capsys.readouterr().err


def run_cli(tmp_path, name, nproc, *extra):
    out = tmp_path / name
    launcher = [sys.executable, "-m", "llm_from_scratch.train"]
    if nproc > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "llm_from_scratch.train",
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, "--preset", "tiny", "--out-dir", str(out), "--no-progress", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final validation loss" in proc.stdout
    return json.loads((out / "result.json").read_text())


def test_torchrun_two_processes_give_the_same_loss_as_one(tmp_path):
    one = run_cli(tmp_path, "one", 1)
    two = run_cli(tmp_path, "two", 2)
    two_accum = run_cli(tmp_path, "two-accum", 2, "--grad-accum-steps", "2")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    assert two_accum["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)
    # and the comparison can fail: another global batch gives another loss
    other = run_cli(tmp_path, "other", 1, "--batch-size", "4")
    assert abs(other["val_loss"] - one["val_loss"]) > 1e-3


# ---- FLOPs and parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"bias": False},
        {"tie_weights": False},
        {"n_kv_head": 1},
        {"norm": "rmsnorm"},
        {"pos_encoding": "rope"},
        {"pos_encoding": "sinusoidal"},
        {"ffwd": False},
        {"prenorm": False},
        {"norm": None},
    ],
)
def test_parameter_count_formula(change):
    config = GPTConfig(vocab_size=37, block_size=12, n_layer=3, n_head=4, n_embd=24, **change)
    assert parameter_count(config) == GPT(config).num_parameters()


def test_gpt2_small_parameter_count():
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    assert parameter_count(config) == 124_439_808


def test_flops_per_token_matches_pytorchs_flop_counter():
    config = GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config)
    x = torch.randint(0, 37, (3, 16))
    # The math backend computes attention with matmuls, which the counter sees; PyTorch's
    # fused CPU kernel is invisible to it.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    measured = counter.get_total_flops() / x.numel()
    assert measured == flops_per_token(config)  # 6N + 12·n_layer·T·C, exactly
    assert matmul_weights(config) / parameter_count(config) > 0.9
    assert flops_per_token(config, training=False) * 3 == flops_per_token(config)


def test_matmul_peak_and_mfu():
    peak = matmul_peak_flops(size=128, seconds=0.05)
    assert 1e8 < peak < 1e15
    assert mfu(1000.0, GPT_CONFIG, peak) == pytest.approx(1000 * flops_per_token(GPT_CONFIG) / peak)


# ---- the book's data and model --------------------------------------------------------------


def test_shakespeare_tokens_bpe_is_trained_on_the_train_split_only():
    from llm_from_scratch.book import END_OF_TEXT, shakespeare_tokens
    from llm_from_scratch.data import tiny_shakespeare, train_val_split

    data = shakespeare_tokens("bpe", 300)
    train_text, val_text = train_val_split(tiny_shakespeare())
    assert data.tokenizer.vocab_size == 300 and END_OF_TEXT in data.tokenizer.special_tokens
    assert data.tokenizer.decode(data.val_ids.tolist()) == val_text
    assert (data.train_chars, data.val_chars) == (len(train_text), len(val_text))
    # losses per token convert to per character by the tokens-per-character ratio
    assert data.per_char(2.0) == pytest.approx(2.0 * len(data.val_ids) / len(val_text))
    retrained = type(data.tokenizer)().train(
        train_text, vocab_size=300, special_tokens=[END_OF_TEXT]
    )
    assert retrained.merges == data.tokenizer.merges
    char = shakespeare_tokens("char")
    assert char.per_char(1.5) == 1.5
    with pytest.raises(ValueError, match="tokenizer must be 'char' or 'bpe'"):
        shakespeare_tokens("words")


def test_book_model_trains_once_then_loads(tmp_path, monkeypatch):
    from llm_from_scratch import book
    from llm_from_scratch.artifacts import CACHE_DIR_ENV

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    small = dataclasses.replace(
        PRESETS["tiny"],
        tokenizer="bpe",
        vocab_size=300,
        model=dataclasses.replace(PRESETS["tiny"].model, vocab_size=300),
    )
    monkeypatch.setitem(PRESETS, "test-book", small)
    first = book.book_model(progress=False, preset="test-book")
    second = book.book_model(progress=False, preset="test-book")
    assert not first.from_cache and second.from_cache
    assert second.result == first.result
    assert second.val_loss_per_char == first.val_loss_per_char < math.log(300)
    data = book.shakespeare_tokens("bpe", 300)
    assert evaluate(second.model, data.val_ids, 16) == pytest.approx(
        first.result.val_loss, rel=1e-6
    )


def test_cpu_float16_is_refused():
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        train(fresh_model(), data(), data(600), dataclasses.replace(RUN, dtype="float16"), False)


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="PyTorch sees no GPU"):
        train(fresh_model(), data(), data(600), dataclasses.replace(RUN, device="cuda"), False)


# ---- torch.compile ----------------------------------------------------------------------


def test_compiled_training_equals_eager_training():
    eager = train(fresh_model(), data(), data(600), RUN, False)
    config = dataclasses.replace(RUN, compile=True)
    compiled = train(fresh_model(), data(), data(600), config, False)
    assert compiled.compile_seconds > 0 and eager.compile_seconds == 0
    # Fused kernels add in another order: equal up to float32 rounding, not bit for bit.
    flat = [value for row in losses(eager) for value in row]
    assert [value for row in losses(compiled) for value in row] == pytest.approx(flat, rel=1e-4)
    assert compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-4)


def test_compile_without_a_cpp_compiler_trains_eagerly(monkeypatch, capsys):
    monkeypatch.setattr("llm_from_scratch.train.compiler_available", lambda: False)
    config = dataclasses.replace(RUN, compile=True, max_steps=5)
    result = train(fresh_model(), data(), data(600), config, False)
    assert "no C++ compiler was found" in capsys.readouterr().out
    assert result.compile_seconds == 0


@pytest.mark.parametrize("compile", [False, True])
def test_token_ids_outside_the_vocabulary_are_refused_before_training(compile):
    # A compiled model skips the per-batch id check, so train() checks each split once.
    config = dataclasses.replace(RUN, compile=compile)
    bad = data().clone()
    bad[1234] = 11
    with pytest.raises(ValueError, match=r"train_data holds token ids from 0 to 11.*11 tokens"):
        train(fresh_model(), bad, data(600), config, False)
    with pytest.raises(ValueError, match="val_data holds token ids from -1"):
        train(fresh_model(), data(), torch.cat([data(600), torch.tensor([-1])]), config, False)


def test_compiled_cpu_training_runs_in_deterministic_mode_then_restores_it(monkeypatch):
    # Compiled kernels may otherwise split sums between threads in a varying order.
    import llm_from_scratch.train as train_module

    seen, get_batch = [], train_module.get_batch

    def spy(*args, **kwargs):  # called once per training step
        seen.append(torch.are_deterministic_algorithms_enabled())
        return get_batch(*args, **kwargs)

    monkeypatch.setattr(train_module, "get_batch", spy)
    assert not torch.are_deterministic_algorithms_enabled()
    config = dataclasses.replace(RUN, compile=True, max_steps=3, eval_interval=3)
    first = train(fresh_model(), data(), data(600), config, False)
    assert seen == [True] * 3
    assert not torch.are_deterministic_algorithms_enabled()
    train(fresh_model(), data(), data(600), dataclasses.replace(config, compile=False), False)
    assert seen[3:] == [False] * 3  # eager training leaves the setting alone
    second = train(fresh_model(), data(), data(600), config, False)
    assert losses(first) == losses(second)
