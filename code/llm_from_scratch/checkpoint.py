"""Checkpoints and run directories that lose nothing (Lesson 8).

A checkpoint holds everything the next step depends on, so a resumed run computes exactly the
losses an uninterrupted one would. Files are written under a unique temporary name and renamed
into place, so a crash mid-write never corrupts the previous checkpoint, and two writers never
mix their files. A :class:`RunDir` is locked while a run uses it, refuses to start a fresh run
over an old one (unless told to overwrite), and checks on resume that the checkpoint was
written by the same model and training settings.

>>> import tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "state.pt"
>>> save_checkpoint(path, {"step": 3})
>>> load_checkpoint(path)["step"]
3
"""

from __future__ import annotations

import csv
import fcntl
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
from torch import nn
from tqdm import tqdm

#: The files a run writes into its directory.
RUN_FILES = ("checkpoint.pt", "log.csv", "result.json")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` atomically: a unique temporary file, then a rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable checkpoint ({err})") from err


def training_state(
    step: int, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict:
    """Everything the next step depends on, as tensors and plain data (``weights_only``-safe).

    The optimizer's moments and step count, and both random generators (the one that draws
    batches and the global one that drives dropout): without any of them, a resumed run
    silently becomes a different run.
    """
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }


def restore_training_state(
    state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    """Put a model, its optimizer and the random generators back where ``state`` left them."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])


def config_differences(saved: dict, current: dict) -> list[str]:
    """The fields on which two configurations (as dicts) differ, as ``name: saved -> current``."""
    return [
        f"{name}: {saved.get(name)!r} -> {current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]


@dataclass
class RunDir:
    """A directory that one run owns: ``checkpoint.pt``, ``log.csv`` and ``result.json``.

    - ``resume=True`` continues from its checkpoint; without it, a directory that already
      holds a run is refused, unless ``overwrite=True``, which deletes the old files first.
    - While a run uses the directory it holds a lock on it: a second run gets a clear error
      instead of overwriting the first one's files.
    - ``checkpoint_interval``: also save every that many steps (always: at the end, and
      when the run is interrupted).
    """

    path: Path
    resume: bool = False
    overwrite: bool = False
    checkpoint_interval: int | None = None
    _lock: IO | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.checkpoint_interval is not None and self.checkpoint_interval <= 0:
            raise ValueError(
                f"checkpoint_interval must be a positive number of steps, "
                f"got {self.checkpoint_interval}"
            )

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def log_csv(self) -> Path:
        return self.path / "log.csv"

    @property
    def result_json(self) -> Path:
        return self.path / "result.json"

    def open(self) -> None:
        """Lock the directory and check it suits a fresh run or a resume."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (self.path / ".lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(
                f"another run is using {self.path}; wait for it or choose another directory"
            ) from None
        self._lock = lock
        old = [name for name in RUN_FILES if (self.path / name).exists()]
        if self.resume and not self.checkpoint.is_file():
            self.close()
            raise FileNotFoundError(f"cannot resume: no checkpoint.pt in {self.path}")
        if not self.resume and old:
            if not self.overwrite:
                self.close()
                raise FileExistsError(
                    f"{self.path} already holds a run ({', '.join(old)}): resume it, "
                    "or overwrite it explicitly, or choose another directory"
                )
            for name in old:
                (self.path / name).unlink()

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def resume_into(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        configs: dict[str, dict | None],
    ) -> dict:
        """Restore the checkpoint into ``model``, ``optimizer`` and ``generator``; return it.

        ``configs`` (``{"model_config": ..., "train_config": ...}``) must equal the ones the
        checkpoint was written with; the error names every field that differs.
        """
        state = load_checkpoint(self.checkpoint)
        for key, current in configs.items():
            saved = state.get(key)
            if saved is not None and current is not None and saved != current:
                raise ValueError(
                    f"{self.checkpoint} was written with a different {key.replace('_', ' ')} ("
                    + "; ".join(config_differences(saved, current))
                    + "): resume with the same settings, or start a fresh run"
                )
        try:
            restore_training_state(state, model, optimizer, generator)
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{self.checkpoint} does not fit this model: {err}") from err
        # Rows logged after the checkpoint was written would be logged twice: keep its rows.
        self.log_csv.unlink(missing_ok=True)
        for row in state.get("history", []):
            self.log(row)
        return state

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        extra: dict,
    ) -> None:
        """Write the checkpoint of ``step``, with ``extra`` plain data (history, configs)."""
        save_checkpoint(
            self.checkpoint, {**training_state(step, model, optimizer, generator), **extra}
        )

    def log(self, row: dict) -> None:
        """Append one row to ``log.csv`` (with a header if the file is new)."""
        new = not self.log_csv.exists()
        with self.log_csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class TrainingRun:
    """A run directory as the training loop uses it (``run_dir=None``: no files at all).

    Created, it locks the directory and, on resume, restores model, optimizer and ``state``
    (a :class:`~llm_from_scratch.train.TrainState`). Left by an interruption, it saves what the
    run finished; left by a diverged loss, it keeps the last good checkpoint.
    """

    def __init__(self, run_dir, model, optimizer, config, state) -> None:
        self.run_dir, self.model, self.optimizer = run_dir, model, optimizer
        self.config, self.state = config, state
        if run_dir is None:
            return
        run_dir.open()
        if run_dir.resume:
            try:
                saved = run_dir.resume_into(model, optimizer, state.generator, self._configs())
            except BaseException:
                run_dir.close()
                raise
            state.step, state.history = saved["step"], saved["history"]
            state.recent, state.elapsed = saved["recent"], saved["elapsed"]

    def _configs(self) -> dict:
        config = getattr(self.model, "config", None)
        model_config = config.to_dict() if hasattr(config, "to_dict") else None
        return {"model_config": model_config, "train_config": self.config.to_dict()}

    def checkpoint_due(self, step: int) -> bool:
        interval = self.run_dir.checkpoint_interval if self.run_dir else None
        return bool(interval) and step % interval == 0

    def log(self, row: dict) -> None:
        if self.run_dir is not None:
            self.run_dir.log(row)

    def save(self) -> None:
        if self.run_dir is not None:
            s = self.state
            extra = {"history": s.history, "recent": s.recent, "elapsed": s.elapsed,
                     **self._configs()}
            self.run_dir.save(s.step, self.model, self.optimizer, s.generator, extra)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, kind, err, traceback) -> None:
        where = f"{self.run_dir.path}" if self.run_dir else None
        if kind is KeyboardInterrupt:
            self.state.rewind_unfinished_step()
            self.save()
            tqdm.write(f"interrupted after step {self.state.step}"
                       + (f"; its checkpoint in {where} resumes it" if where else ""))
        elif kind is FloatingPointError:
            kept = f"; {where}/checkpoint.pt keeps the last good state" if where else ""
            err.args = (f"step {self.state.step + 1}: {err}: try a lower learning rate{kept}",)
        if self.run_dir is not None:
            self.run_dir.close()
