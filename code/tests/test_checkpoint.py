"""Tests for llm_from_scratch.checkpoint: checkpoints and run directories that lose nothing.

A run resumed from its checkpoint computes exactly the losses of an uninterrupted run, however
it stopped: at a checkpoint, by Ctrl-C, or by an interruption in the middle of a step. Two
writers never mix their files, two runs never share a directory, and a fresh run never
overwrites an old one by accident.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from training_helpers import GPT_CONFIG, RUN, data, fresh_model, losses

from llm_from_scratch.checkpoint import (
    RunDir,
    config_differences,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from llm_from_scratch.model import GPT, BigramLanguageModel
from llm_from_scratch.train import make_optimizer, next_token_loss, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DROPOUT = dataclasses.replace(GPT_CONFIG, dropout=0.1)  # resuming must restore the RNG too


def run(run_dir=None, config=RUN, model_config=GPT_CONFIG, **kwargs):
    """Train a fresh model: (result, model)."""
    model = fresh_model(model_config)
    result = train(model, data(), data(600), config, run_dir=run_dir, progress=False, **kwargs)
    return result, model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def logged_steps(path) -> list[int]:
    lines = (path / "log.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,train_loss,val_loss")
    return [int(line.split(",")[0]) for line in lines[1:]]


# ---- checkpoint files ---------------------------------------------------------------------


def test_save_and_load_round_trip_without_temporary_files(tmp_path):
    path = tmp_path / "deep" / "er" / "state.pt"  # parents are created
    save_checkpoint(path, {"step": 3, "w": torch.arange(4.0), "history": [{"loss": 1.5}]})
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    assert state["history"] == [{"loss": 1.5}]
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {tmp_path / 'missing.pt'}"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{corrupt} is not a readable checkpoint"):
        load_checkpoint(corrupt)
    code = tmp_path / "code.pt"
    torch.save({"object": Path("x")}, code)  # not tensors and plain data: never unpickled
    with pytest.raises(ValueError, match=f"{code} is not a readable checkpoint"):
        load_checkpoint(code)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails, however it says so
        save_checkpoint(path, {"step": 2, "bad": lambda: None})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_two_writers_never_mix_or_lose_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    errors, seen = [], set()
    done = threading.Event()

    def write(writer: int) -> None:
        try:
            for i in range(30):
                save_checkpoint(path, {"writer": writer, "i": i,
                                       "weights": torch.full((50_000,), float(writer))})
        except BaseException as err:  # noqa: BLE001 - any error is the failure to report
            errors.append(err)

    def read() -> None:
        while not done.is_set():
            if not path.exists():
                continue
            try:
                state = load_checkpoint(path)
            except BaseException as err:  # noqa: BLE001
                errors.append(err)
                return
            if not bool((state["weights"] == state["writer"]).all()):
                errors.append(AssertionError(f"mixed file: writer {state['writer']}"))
            seen.add(state["writer"])

    writers = [threading.Thread(target=write, args=(k,)) for k in (1, 2)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert errors == []
    final = load_checkpoint(path)
    assert final["i"] == 29 and bool((final["weights"] == final["writer"]).all())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_training_state_restores_model_optimizer_and_both_generators():
    model = fresh_model(DROPOUT)
    optimizer = make_optimizer(model, RUN)
    model(*[data()[:64].view(8, 8)] * 2)[1].backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    state = training_state(7, model, optimizer, generator)
    expected_batch = torch.randint(100, (4,), generator=generator)
    expected_noise = torch.rand(3)

    other = GPT(DROPOUT)
    other_optimizer = make_optimizer(other, RUN)
    other_generator = torch.Generator()
    restore_training_state(state, other, other_optimizer, other_generator)
    assert same_weights(model, other)
    assert other_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    assert torch.equal(torch.randint(100, (4,), generator=other_generator), expected_batch)
    assert torch.equal(torch.rand(3), expected_noise)
    assert state["step"] == 7


def test_config_differences_name_each_field():
    saved, current = {"lr": 0.1, "steps": 5, "old": 1}, {"lr": 0.2, "steps": 5, "new": 2}
    assert config_differences(saved, current) == [
        "lr: 0.1 -> 0.2", "new: None -> 2", "old: 1 -> None",
    ]
    assert config_differences(saved, dict(saved)) == []


# ---- run directories --------------------------------------------------------------------


def test_run_dir_options_are_checked():
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        RunDir("runs/x", resume=True, overwrite=True)
    for interval in (0, -5):
        with pytest.raises(ValueError, match="checkpoint_interval must be a positive"):
            RunDir("runs/x", checkpoint_interval=interval)


def test_a_second_open_of_a_run_directory_is_a_clear_error(tmp_path):
    first = RunDir(tmp_path / "run")
    first.open()
    try:
        with pytest.raises(RuntimeError, match=f"another run is using {tmp_path / 'run'}"):
            RunDir(tmp_path / "run", overwrite=True).open()
        # train() into the busy directory fails the same way, before touching anything
        with pytest.raises(RuntimeError, match="another run is using"):
            run(RunDir(tmp_path / "run", overwrite=True))
        # and so does another process: the lock is the operating system's
        code = ("import sys; from llm_from_scratch.checkpoint import RunDir\n"
                "try:\n    RunDir(sys.argv[1]).open()\n"
                "except RuntimeError as err:\n    print(err)")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=120)
        assert "another run is using" in proc.stdout, proc.stderr
    finally:
        first.close()
    second = RunDir(tmp_path / "run")
    second.open()  # free again once the first run closed it
    second.close()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_fresh_run_into_an_occupied_directory_is_refused_unless_overwriting(tmp_path):
    path = tmp_path / "run"
    first, _ = run(RunDir(path), config=dataclasses.replace(RUN, max_steps=10))
    saved = (path / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match=r"already holds a run \(checkpoint.pt, log.csv\)"):
        run(RunDir(path))
    assert (path / "checkpoint.pt").read_bytes() == saved
    assert logged_steps(path) == [5, 10]
    (path / "result.json").write_text("{}")  # a finished run's summary alone counts too
    (path / "checkpoint.pt").unlink()
    (path / "log.csv").unlink()
    with pytest.raises(FileExistsError, match="result.json"):
        RunDir(path).open()
    second, _ = run(RunDir(path, overwrite=True))
    assert not (path / "result.json").exists()
    assert logged_steps(path) == [5, 10, 15, 20]  # the old rows are gone, not appended to
    assert load_checkpoint(path / "checkpoint.pt")["step"] == 20


def test_resume_needs_a_checkpoint_and_releases_the_lock(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume: no checkpoint.pt in"):
        run(RunDir(tmp_path / "run", resume=True))
    directory = RunDir(tmp_path / "run")
    directory.open()  # the failed resume did not keep the directory locked
    directory.close()


# ---- exact resume -------------------------------------------------------------------------


def test_resume_continues_with_identical_losses(tmp_path):
    straight, straight_model = run(model_config=DROPOUT)
    first, _ = run(RunDir(tmp_path / "run"), model_config=DROPOUT, stop_after=8)
    assert first.steps == 8
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)  # loads with the safe unpickler
    assert state["step"] == 8
    resumed_model = GPT(DROPOUT)  # a new process would start from a new model
    resumed = train(resumed_model, data(), data(600), RUN, progress=False,
                    run_dir=RunDir(tmp_path / "run", resume=True))
    assert losses(resumed) == losses(straight)  # identical floats, every logged step
    assert resumed.val_loss == straight.val_loss
    assert same_weights(resumed_model, straight_model)
    assert load_checkpoint(ckpt)["step"] == RUN.max_steps


def test_resume_without_restoring_rng_would_differ(tmp_path):
    """The resume test is sensitive: a checkpoint without the batch generator's state fails."""
    straight, _ = run()
    run(RunDir(tmp_path), stop_after=8)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["generator"] = torch.Generator().manual_seed(RUN.seed).get_state()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    resumed, _ = run(RunDir(tmp_path, resume=True))
    assert losses(resumed) != losses(straight)


def test_resume_refuses_another_train_config_naming_the_field(tmp_path):
    run(RunDir(tmp_path), stop_after=5)
    other = dataclasses.replace(RUN, learning_rate=1e-2)
    message = r"different train config \(learning_rate: 0.003 -> 0.01\)"
    with pytest.raises(ValueError, match=message):
        run(RunDir(tmp_path, resume=True), config=other)


def test_resume_refuses_another_model_config_naming_the_field(tmp_path):
    run(RunDir(tmp_path), stop_after=5, model_config=DROPOUT)
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    other = dataclasses.replace(DROPOUT, dropout=0.2)
    with pytest.raises(ValueError, match=r"different model config \(dropout: 0.1 -> 0.2\)") as err:
        run(RunDir(tmp_path, resume=True), model_config=other)
    assert str(tmp_path / "checkpoint.pt") in str(err.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved


def test_a_checkpoint_of_another_shape_is_a_clear_error(tmp_path):
    config = dataclasses.replace(RUN, max_steps=4, eval_interval=2)
    train(BigramLanguageModel(11), data(), data(600), config, run_dir=RunDir(tmp_path),
          progress=False)
    with pytest.raises(ValueError, match=f"{tmp_path / 'checkpoint.pt'} does not fit this model"):
        train(BigramLanguageModel(12), data(), data(600), config,
              run_dir=RunDir(tmp_path, resume=True), progress=False)


# ---- interruptions ----------------------------------------------------------------------


class FailAt:
    """The next-token loss, except in training step ``step`` (1-based), which ``fail`` ends."""

    def __init__(self, step: int, fail) -> None:
        self.step, self.fail, self.calls = step, fail, 0

    def __call__(self, model, batch):
        loss = next_token_loss(model, batch)
        if model.training:  # training steps only, not evaluation
            self.calls += 1
            if self.calls == self.step:
                return self.fail(loss)
        return loss


def ctrl_c(loss):
    """What Ctrl-C does: SIGINT to this process."""
    signal.raise_signal(signal.SIGINT)
    return loss


def interrupt(loss):
    """An interruption in the middle of a step, after its forward pass (a second Ctrl-C)."""
    raise KeyboardInterrupt


def diverge(loss):
    return loss * math.nan


def crash(loss):
    raise RuntimeError("the machine went away")


@pytest.mark.parametrize(("fail", "saved_step"), [(ctrl_c, 7), (interrupt, 6)])
def test_an_interrupted_run_saves_and_resumes_with_identical_losses(tmp_path, fail, saved_step):
    straight, straight_model = run(model_config=DROPOUT)
    with pytest.raises(KeyboardInterrupt):
        run(RunDir(tmp_path), model_config=DROPOUT, loss_fn=FailAt(7, fail))
    # Ctrl-C finishes the current step; an interruption inside a step drops it whole.
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == saved_step
    resumed, resumed_model = run(RunDir(tmp_path, resume=True), model_config=DROPOUT)
    assert losses(resumed) == losses(straight)
    assert resumed.val_loss == straight.val_loss
    assert same_weights(resumed_model, straight_model)
    assert logged_steps(tmp_path) == [5, 10, 15, 20]


def test_without_a_run_directory_ctrl_c_still_stops_the_run_and_restores_the_handler():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run(loss_fn=FailAt(3, ctrl_c))
    assert signal.getsignal(signal.SIGINT) is before


def test_a_diverged_run_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"step 7: the training loss became nan") as err:
        run(RunDir(tmp_path, checkpoint_interval=4), loss_fn=FailAt(7, diverge))
    assert "checkpoint.pt keeps the last good state" in str(err.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert logged_steps(tmp_path) == [5]
    # and the run continues from there: the log keeps each step once
    straight, _ = run()
    resumed, _ = run(RunDir(tmp_path, resume=True))
    assert losses(resumed) == losses(straight)
    assert logged_steps(tmp_path) == [5, 10, 15, 20]


def test_the_log_has_no_duplicate_step_after_a_resume(tmp_path):
    config = dataclasses.replace(RUN, eval_interval=2)
    with pytest.raises(RuntimeError, match="went away"):
        run(RunDir(tmp_path, checkpoint_interval=8), config=config, loss_fn=FailAt(13, crash))
    assert logged_steps(tmp_path) == [2, 4, 6, 8, 10, 12]  # logged after the checkpoint of 8
    straight, _ = run(config=config)
    resumed, _ = run(RunDir(tmp_path, resume=True), config=config)
    assert logged_steps(tmp_path) == list(range(2, 21, 2))
    assert losses(resumed) == losses(straight)
