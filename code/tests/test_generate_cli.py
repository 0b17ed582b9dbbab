"""Tests for llm_from_scratch.generate: ``python -m llm_from_scratch.generate``.

A tiny run trained by the training command line supplies the model (``--checkpoint``); the
book's model is replaced by a tiny one, since training it takes minutes. Mistakes in the
options are usage errors (exit status 2) that name the option, reported before any model is
loaded or trained.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from llm_from_scratch import cli, generate, trained
from llm_from_scratch.model import GPT, GPTConfig
from llm_from_scratch.tokenizer_base import CharTokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NEW = 20  # tokens per test: with the character tokenizer, 20 characters


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, torch_one_thread):
    out = tmp_path_factory.mktemp("generate") / "tiny"
    cli.train_main(["--preset", "tiny", "--no-progress", "--max-steps", "20",
                    "--eval-interval", "10", "--out-dir", str(out)])
    return out


def run(capsys, *argv: str) -> str:
    """What ``generate.main(argv)`` prints; it must succeed."""
    capsys.readouterr()
    assert generate.main(list(argv)) == 0
    return capsys.readouterr().out


def usage_error(capsys, *argv: str) -> str:
    """The message of the usage error that ``generate.main(argv)`` must end with."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        generate.main(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_prints_the_prompt_then_new_text(run_dir, capsys):
    out = run(capsys, "--checkpoint", str(run_dir), "--prompt", "ROMEO:",
              "--max-new-tokens", str(NEW), "--temperature", "0.8", "--top-p", "0.95",
              "--seed", "1")
    assert out.startswith("ROMEO:") and out.endswith("\n")
    assert len(out) == len("ROMEO:") + NEW + 1


def test_a_seed_makes_the_text_reproducible(run_dir, capsys):
    args = ["--checkpoint", str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", str(NEW)]
    first = run(capsys, *args, "--seed", "1")
    assert run(capsys, *args, "--seed", "1") == first
    assert run(capsys, *args, "--seed", "2") != first


def test_temperature_zero_is_greedy_and_deterministic(run_dir, capsys):
    args = ["--checkpoint", str(run_dir), "--max-new-tokens", str(NEW), "--temperature", "0"]
    assert run(capsys, *args, "--seed", "1") == run(capsys, *args, "--seed", "2")
    # one beam is greedy decoding too
    assert run(capsys, *args[:-2], "--beams", "1") == run(capsys, *args)


def test_beam_search(run_dir, capsys):
    out = run(capsys, "--checkpoint", str(run_dir), "--prompt", "ROMEO:", "--beams", "2",
              "--max-new-tokens", str(NEW))
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + NEW + 1


def test_interactive_continues_each_line_until_an_empty_one(run_dir, capsys, monkeypatch):
    args = ["--checkpoint", str(run_dir), "--max-new-tokens", str(NEW), "--temperature", "0"]
    alone = [run(capsys, *args, "--prompt", prompt) for prompt in ("ROMEO:", "JULIET:")]
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\nJULIET:\n\nnever read\n"))
    out = run(capsys, *args, "--interactive")
    # each turn continues that line alone, as a one-off run does (which prints the prompt too)
    assert out == alone[0].removeprefix("ROMEO:") + alone[1].removeprefix("JULIET:")


def test_interactive_skips_a_line_it_cannot_encode_and_stops_at_quit(run_dir, capsys,
                                                                     monkeypatch):
    args = ["--checkpoint", str(run_dir), "--max-new-tokens", str(NEW), "--temperature", "0"]
    alone = run(capsys, *args, "--prompt", "ROMEO:")
    monkeypatch.setattr(sys, "stdin", io.StringIO("café\nROMEO:\nquit\nJULIET:\n"))
    assert generate.main([*args, "--interactive"]) == 0
    printed = capsys.readouterr()
    assert "cannot encode this line: characters not in the vocabulary: 'é'" in printed.err
    assert printed.out == alone.removeprefix("ROMEO:")  # quit ends it before JULIET:


def test_interactive_ends_at_end_of_input(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:"))
    out = run(capsys, "--checkpoint", str(run_dir), "--max-new-tokens", str(NEW),
              "--interactive")
    assert len(out) == NEW + 1


@pytest.mark.parametrize("argv, flag", [
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--top-p", "0"], "--top-p"),
    (["--top-k", "0"], "--top-k"),
    (["--min-p", "2"], "--min-p"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--max-new-tokens", "ten"], "--max-new-tokens"),
    (["--beams", "0"], "--beams"),
    (["--beams", "2", "--temperature", "0.5"], "--beams"),
    (["--prompt", ""], "--prompt"),
])
def test_bad_options_are_usage_errors_before_any_model_is_made(argv, flag, capsys,
                                                               monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a usage error must come before the book's model is trained")

    monkeypatch.setattr(trained, "book_model", no_training)
    err = usage_error(capsys, *argv)
    assert f"argument {flag}:" in err


def test_a_prompt_the_tokenizer_cannot_encode_is_a_usage_error(run_dir, capsys):
    err = usage_error(capsys, "--checkpoint", str(run_dir), "--prompt", "café")
    assert "argument --prompt:" in err and "characters not in the vocabulary: 'é'" in err


def test_a_directory_without_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    err = usage_error(capsys, "--checkpoint", str(tmp_path))
    assert f"{tmp_path} holds no checkpoint.pt" in err and "train --out-dir" in err
    err = usage_error(capsys, "--checkpoint", str(tmp_path / "missing"))
    assert f"{tmp_path / 'missing'} does not exist" in err


def test_an_unreadable_checkpoint_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    err = usage_error(capsys, "--checkpoint", str(tmp_path))
    assert f"argument --checkpoint: {tmp_path / 'checkpoint.pt'} is not a readable" in err


def test_an_unfinished_run_rebuilds_its_tokenizer_from_the_model(run_dir, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "checkpoint.pt", unfinished)  # no result.json yet
    args = ["--max-new-tokens", str(NEW), "--temperature", "0"]
    assert (run(capsys, "--checkpoint", str(unfinished), *args)
            == run(capsys, "--checkpoint", str(run_dir), *args))


def test_without_a_checkpoint_it_uses_the_book_model(capsys, monkeypatch):
    tok = CharTokenizer.from_text("ROMEO: abc\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2,
                          n_embd=16))
    calls = []

    def book_model(progress: bool = True, preset: str = "book"):
        calls.append(progress)
        return SimpleNamespace(model=model, tokenizer=tok)

    monkeypatch.setattr(trained, "book_model", book_model)
    out = run(capsys, "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "0")
    assert calls == [True]  # a progress bar, should it have to train
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 12 + 1
    assert set(out) <= set(tok.chars)


def test_help_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "llm_from_scratch.generate", "--help"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LLMFS_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--checkpoint DIR" in proc.stdout and "--interactive" in proc.stdout


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["--top-p", "2"], 2)])
def test_the_package_command_line_runs_it_too(args, code):
    """``python -m llm_from_scratch generate`` passes its exit status on."""
    proc = subprocess.run(
        [sys.executable, "-m", "llm_from_scratch", "generate", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LLMFS_THREADS": "1"},
    )
    assert proc.returncode == code, proc.stderr
    assert "--checkpoint DIR" in proc.stdout + proc.stderr
