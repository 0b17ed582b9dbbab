"""Trained models, cached on disk: one routine that trains a model or loads it.

Lessons never retrain a model another lesson trained: :func:`train_cached` trains on a cache
miss and otherwise loads the weights *and the tokenizer* from disk
(:mod:`llm_from_scratch.artifacts`). The key holds the model and training settings, the
precision the hardware resolved, the tokenizer, the data's hash and the package's source, so a
change to any of them retrains instead of serving a stale model. The loss progression
(:mod:`llm_from_scratch.progression`) and the book's model (:func:`book_model`, trained in
Lesson 8 and used by Lessons 9 and 10) both go through it. :func:`train_cached_all` trains
several at once: the one-thread runs that are missing train side by side, one per free core.

>>> from llm_from_scratch.model import GPTConfig
>>> from llm_from_scratch.train import TrainConfig
>>> tiny = train_cached("doctest-tiny", GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16),
...                     TrainConfig(max_steps=5, eval_interval=5), progress=False)
>>> tiny.tokenizer.vocab_size, tiny.result.steps
(65, 5)
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from llm_from_scratch.artifacts import cached, stored
from llm_from_scratch.baselines import LSTMConfig, LSTMLanguageModel, MLPConfig, MLPLanguageModel
from llm_from_scratch.data import TINY_SHAKESPEARE_SHA256, shakespeare_tokens
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig, LanguageModel
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.runtime import resolve_dtype, usable_cores
from llm_from_scratch.tokenizer import BPETokenizer, CharTokenizer, Tokenizer
from llm_from_scratch.train import TrainConfig, TrainResult, check_number, train


@dataclass
class TrainedModel:
    """A trained model with its tokenizer and training record."""

    name: str
    model: LanguageModel
    tokenizer: Tokenizer
    result: TrainResult
    val_loss_per_char: float  # the validation loss per character of text, whatever the tokens
    from_cache: bool  # loaded from disk rather than trained now


ModelConfig = GPTConfig | MLPConfig | LSTMConfig
MODELS: dict[type, type[LanguageModel]] = {
    GPTConfig: GPT, MLPConfig: MLPLanguageModel, LSTMConfig: LSTMLanguageModel,
}


def build_model(config: ModelConfig | None, vocab_size: int, seed: int) -> LanguageModel:
    """A freshly initialized model (seeded); ``None`` means the bigram model."""
    torch.manual_seed(seed)
    if config is None:
        return BigramLanguageModel(vocab_size)
    return MODELS[type(config)](dataclasses.replace(config, vocab_size=vocab_size))


def _spec(config: ModelConfig | None, train_config: TrainConfig, tokenizer: str,
          vocab_size: int) -> dict:
    """What a trained model's cache key holds (see :func:`train_cached`)."""
    context = getattr(config, "block_size", None)  # the MLP and the LSTM take any length
    if context is not None and context < train_config.block_size:
        raise ValueError(
            f"the model's block_size={context} is shorter than the training windows "
            f"(block_size={train_config.block_size})"
        )
    return {
        "model": None if config is None else config.to_dict(),
        "train": train_config.to_dict(),
        # "auto" trains in bfloat16 on some machines and float32 on others: not one result.
        "dtype": resolve_dtype(train_config.dtype, train_config.device),
        "tokenizer": [tokenizer, vocab_size if tokenizer == "bpe" else None],
        "data": TINY_SHAKESPEARE_SHA256,
    }


def train_cached(
    name: str,
    config: ModelConfig | None,
    train_config: TrainConfig,
    tokenizer: str = "char",
    vocab_size: int = 1024,
    progress: bool = True,
) -> TrainedModel:
    """Train ``config`` (``None``: the bigram model) on Tiny Shakespeare, or load it if trained.

    The model's vocabulary is the tokenizer's; ``vocab_size`` sizes a BPE tokenizer.
    """
    spec = _spec(config, train_config, tokenizer, vocab_size)

    def compute() -> tuple[dict, dict]:
        data = shakespeare_tokens(tokenizer, vocab_size)
        model = build_model(config, data.tokenizer.vocab_size, train_config.seed)
        result = train(model, data.train_ids, data.val_ids, train_config, progress=progress,
                       description=name)
        info = {"result": result.to_dict(), "val_loss_per_char": data.per_char(result.val_loss),
                "tokenizer": tokenizer_to_text(data.tokenizer)}
        return info, model.state_dict()

    artifact = cached(name, spec, compute)
    tok = tokenizer_from_text(artifact.info["tokenizer"])
    model = build_model(config, tok.vocab_size, train_config.seed)
    model.load_state_dict(artifact.state_dict)
    model.eval()
    return TrainedModel(name, model, tok, TrainResult(**artifact.info["result"]),
                        artifact.info["val_loss_per_char"], artifact.from_cache)


@dataclass(frozen=True)
class TrainJob:
    """The arguments of one :func:`train_cached` call, for :func:`train_cached_all`."""

    name: str
    config: ModelConfig | None
    train_config: TrainConfig
    tokenizer: str = "char"
    vocab_size: int = 1024

    def run(self, progress: bool = True) -> TrainedModel:
        """:func:`train_cached` with these arguments."""
        return train_cached(self.name, self.config, self.train_config, self.tokenizer,
                            self.vocab_size, progress)


def train_cached_all(jobs: Sequence[TrainJob], progress: bool = True,
                     workers: int | None = None) -> list[TrainedModel]:
    """:func:`train_cached` for every job, the missing one-thread jobs side by side.

    A run fixed to one CPU thread (``threads=1``, as every progression row) computes the same
    bits in any process. So the missing ones train at once, each in a worker process of its
    own, ``workers`` of them (default: one per core other programs leave free); then every job
    loads from the cache. On a busy machine that is one worker: one run after another, as
    :func:`train_cached` alone would. Runs without a fixed thread count use every free core
    themselves and train here, one after another.

    >>> small = GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16)
    >>> quick = TrainConfig(max_steps=5, eval_interval=5, threads=1)
    >>> runs = train_cached_all([TrainJob("doctest-a", small, quick),
    ...                          TrainJob("doctest-b", small, dataclasses.replace(quick, seed=2))],
    ...                         progress=False)
    >>> [run.result.steps for run in runs]
    [5, 5]
    """
    missing = [job for job in jobs
               if job.train_config.threads == 1 and job.train_config.device == "cpu"
               and not stored(job.name, _spec(job.config, job.train_config, job.tokenizer,
                                              job.vocab_size), __name__)]
    if workers is None:
        workers = usable_cores() or 1
    check_number("workers", workers, 0, low_open=True, integer=True)
    workers = min(workers, len(missing))
    if workers > 1:
        _train_in_workers(missing, workers, progress)
    return [job.run(progress) for job in jobs]


#: What a worker process of :func:`train_cached_all` runs.
WORKER = "from llm_from_scratch.trained import _worker; _worker()"


def _train_in_workers(jobs: list[TrainJob], workers: int, progress: bool) -> None:
    """Train ``jobs`` into the cache, each in a fresh Python process, ``workers`` at a time.

    A fresh interpreter that imports only this package, not :mod:`multiprocessing`'s workers:
    those import the caller's ``__main__`` again, and a script that trains at its top level would
    then start workers of its own. Ctrl-C, or any failure, stops every worker after its current
    step; a worker stores its model only once it has trained every step.
    """
    env = dict(os.environ)  # the same package as here, wherever this process found it
    package_dir = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_dir, env.get("PYTHONPATH")]))
    pending, running = list(jobs), {}
    bar = tqdm(total=len(jobs), disable=not progress,
               desc=f"{len(jobs)} runs, {workers} at a time")
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                log = tempfile.TemporaryFile()
                proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                        stdout=log, stderr=log, env=env)
                try:
                    proc.stdin.write(pickle.dumps(job))
                    proc.stdin.close()
                except BrokenPipeError:  # it exited already: its status below says why
                    pass
                running[proc] = (job, log)
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                job, log = running.pop(proc)
                if proc.returncode != 0:
                    log.seek(0)
                    tail = log.read()[-3000:].decode(errors="replace")
                    raise RuntimeError(f"training {job.name!r} in a worker process failed "
                                       f"(exit status {proc.returncode}):\n{tail}")
                log.close()
                bar.update()
    finally:
        bar.close()
        for proc in running:
            proc.terminate()  # SIGTERM: the worker stops after its current step, storing nothing
        for proc, (_, log) in running.items():
            proc.wait()
            log.close()


def _worker() -> None:
    """A worker process of :func:`train_cached_all`: train the job read from stdin."""
    job = pickle.load(sys.stdin.buffer)
    job.run(progress=False)


def book_model(progress: bool = True, preset: str = "book") -> TrainedModel:
    """Train (on a cache miss) or load the book's model: Lesson 1's BPE tokenizer and a GPT."""
    p = PRESETS[preset]
    return train_cached(f"book-model-{preset}", p.model, p.train, p.tokenizer, p.vocab_size,
                        progress)


def tokenizer_to_text(tokenizer: Tokenizer) -> str:
    """The tokenizer's own file format, as text to store beside the weights."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        return path.read_text(encoding="utf-8")


def tokenizer_from_text(text: str) -> Tokenizer:
    """The tokenizer that :func:`tokenizer_to_text` wrote."""
    kind = BPETokenizer if '"type": "bpe"' in text else CharTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return kind.load(path)
