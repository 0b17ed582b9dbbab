"""Tests for llm_from_scratch.cli: ``python -m llm_from_scratch train``, alone and under torchrun.

Mistakes in the options are usage errors (exit status 2) reported before any data is
prepared; a run directory in use or holding another run is an error, not an overwrite; Ctrl-C
saves a checkpoint that ``--resume`` continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from llm_from_scratch import cli
from llm_from_scratch.checkpoint import RunDir, load_checkpoint
from llm_from_scratch.presets import PRESETS, Preset
from llm_from_scratch.train import next_token_loss

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["--preset", "tiny", "--no-progress"]


def test_cli_trains_logs_and_prints(tmp_path, capsys):
    out = tmp_path / "run"
    result = cli.main(["train", *TINY, "--max-steps", "10", "--eval-interval", "5",
                       "--out-dir", str(out)])
    printed = capsys.readouterr().out
    assert f"final validation loss: {result.val_loss:.4f} nats/token" in printed
    assert "tiny: " in printed and f"run in {out}" in printed
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,train_loss,val_loss") and len(lines) == 3
    summary = json.loads((out / "result.json").read_text())
    assert summary["val_loss"] == result.val_loss and summary["steps"] == 10
    assert summary["model"]["n_layer"] == PRESETS["tiny"].model.n_layer
    assert summary["preset"] == "tiny" and summary["world_size"] == 1
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 10


def test_the_default_run_directory_is_runs_slash_the_preset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli.train_main([*TINY, "--max-steps", "2", "--eval-interval", "2"])
    assert (tmp_path / "runs" / "tiny" / "result.json").is_file()
    capsys.readouterr()


def test_cli_overrides_and_resume(tmp_path, capsys):
    args = [*TINY, "--n-layer", "1", "--grad-clip", "0", "--max-steps", "12",
            "--eval-interval", "4"]
    full = cli.train_main([*args, "--out-dir", str(tmp_path / "full")])
    summary = json.loads((tmp_path / "full" / "result.json").read_text())
    assert summary["train"]["grad_clip"] is None  # --grad-clip 0: no clipping
    assert summary["model"]["n_layer"] == 1
    part = tmp_path / "part"
    cli.train_main([*args, "--checkpoint-interval", "4", "--out-dir", str(part)])
    resumed = cli.train_main([*args, "--out-dir", str(part), "--resume"])
    assert resumed.val_loss == full.val_loss
    # resuming with other settings is refused, and the error names the setting
    other = [*args[:-4], "--max-steps", "24", "--eval-interval", "4"]
    with pytest.raises(SystemExit) as exit_info:
        cli.train_main([*other, "--out-dir", str(part), "--resume"])
    assert exit_info.value.code == 2
    assert "different train config (max_steps: 12 -> 24)" in capsys.readouterr().err


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("elapsed", "tokens_per_second")}
            for row in history]


def ctrl_c_at(step: int):
    """A loss that sends this process SIGINT during training step ``step``, as Ctrl-C does."""
    calls = []

    def loss_fn(model, batch):
        if model.training:
            calls.append(1)
            if len(calls) == step:
                signal.raise_signal(signal.SIGINT)
        return next_token_loss(model, batch)

    return loss_fn


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path, monkeypatch, capsys):
    args = [*TINY, "--max-steps", "12", "--eval-interval", "4"]
    full = cli.train_main([*args, "--out-dir", str(tmp_path / "full")])
    train = cli.train
    monkeypatch.setattr(cli, "train", lambda *a, **k: train(*a, **k, loss_fn=ctrl_c_at(7)))
    with pytest.raises(SystemExit) as exit_info:
        cli.train_main([*args, "--out-dir", str(tmp_path / "part")])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert f"--out-dir {tmp_path / 'part'} --resume" in err
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["step"] == 7
    monkeypatch.setattr(cli, "train", train)
    resumed = cli.train_main([*args, "--out-dir", str(tmp_path / "part"), "--resume"])
    assert resumed.val_loss == full.val_loss
    assert timeless(resumed.history) == timeless(full.history)
    capsys.readouterr()


def test_an_occupied_run_directory_is_an_error_unless_overwriting(tmp_path, capsys):
    out = ["--out-dir", str(tmp_path), "--max-steps", "2", "--eval-interval", "2"]
    cli.train_main([*TINY, *out])
    with pytest.raises(SystemExit) as exit_info:
        cli.train_main([*TINY, *out])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "already holds a run" in err and "--overwrite" in err
    assert "Traceback" not in err
    result = cli.train_main([*TINY, *out, "--overwrite", "--seed", "3"])
    assert json.loads((tmp_path / "result.json").read_text())["val_loss"] == result.val_loss
    capsys.readouterr()


def test_a_busy_run_directory_is_an_error(tmp_path, capsys):
    busy = RunDir(tmp_path)
    busy.open()
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.train_main([*TINY, "--out-dir", str(tmp_path), "--max-steps", "2"])
    finally:
        busy.close()
    assert exit_info.value.code == 2
    assert f"error: another run is using {tmp_path}" in capsys.readouterr().err


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Preparing data fails the test: usage errors must come first."""
    monkeypatch.setenv("LLMFS_DATA_DIR", str(tmp_path / "no-data-here"))

    def prepared(self):
        raise AssertionError("the data was prepared before the options were checked")

    monkeypatch.setattr(Preset, "data", prepared)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-head", "3"], "n_embd=128 is not divisible by n_head=3"),
        (["--batch-size", "12", "--grad-accum-steps", "5"], "divisible by grad_accum_steps=5"),
        (["--resume"], "--resume needs a checkpoint"),
        (["--resume", "--overwrite"], "resume and overwrite exclude each other"),
        (["--learning-rate", "0"], "learning_rate must be a finite number > 0"),
        (["--learning-rate", "nan"], "learning_rate must be a finite number"),
        (["--learning-rate", "inf"], "learning_rate must be a finite number"),
        (["--min-lr", "nan"], "min_lr must be a finite number"),
        (["--min-lr", "1"], "min_lr must be a finite number >= 0 and <= 0.003"),
        (["--weight-decay", "inf"], "weight_decay must be a finite number"),
        (["--weight-decay", "nan"], "weight_decay must be a finite number"),
        (["--grad-clip", "-1"], "grad_clip must be a finite number > 0, got -1.0"),
        (["--grad-clip", "nan"], "grad_clip must be a finite number > 0, got nan"),
        (["--dropout", "1.5"], "dropout must be in [0, 1)"),
        (["--device", "tpu"], "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (["--dtype", "float16"], "float16 needs a GPU"),
        (["--checkpoint-interval", "0"], "checkpoint_interval must be a positive"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--vocab-size", "100"], "vocab_size must be an integer in [257, 100000]"),
    ],
)
def test_bad_options_are_usage_errors_before_any_data(args, message, tmp_path, capsys, no_data):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--preset", "nanogpt-cpu", "--out-dir", str(tmp_path), *args])
    assert exit_info.value.code == 2  # argparse's usage error, no traceback
    err = capsys.readouterr().err
    assert message in err and "usage:" in err


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path, capsys, no_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--preset", "nanogpt-gpu", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "PyTorch sees no GPU" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code"), [([], 2), (["fly"], 2), (["--help"], 0)])
def test_main_lists_the_commands(argv, code, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == code
    assert "commands: train" in capsys.readouterr().err


# ---- as a program, and under torchrun -------------------------------------------------------


def run_cli(tmp_path, name, nproc, *extra):
    out = tmp_path / name
    launcher = [sys.executable, "-m", "llm_from_scratch"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", "-m", "llm_from_scratch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMFS_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, "train", *TINY, "--out-dir", str(out), *extra],
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


def test_the_program_reports_usage_errors_with_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llm_from_scratch", "train", "--preset", "tiny",
         "--out-dir", str(tmp_path), "--grad-clip", "nan"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LLMFS_THREADS": "1"},
    )
    assert proc.returncode == 2 and "grad_clip must be a finite number" in proc.stderr
