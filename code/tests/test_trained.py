"""Tests for llm_from_scratch.trained: models trained once, then loaded with their tokenizer.

Every test trains for a handful of steps into a temporary cache (``$LLMFS_CACHE_DIR``).
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from llm_from_scratch import trained
from llm_from_scratch.artifacts import CACHE_DIR_ENV
from llm_from_scratch.data import shakespeare_tokens
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig
from llm_from_scratch.presets import PRESETS
from llm_from_scratch.progression import BASE, row
from llm_from_scratch.tokenizer import BPETokenizer, CharTokenizer
from llm_from_scratch.train import TrainConfig, evaluate
from llm_from_scratch.trained import (
    book_model,
    build_model,
    tokenizer_from_text,
    tokenizer_to_text,
    train_cached,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

QUICK = TrainConfig(block_size=8, batch_size=8, max_steps=5, eval_interval=5, eval_batches=2)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    return tmp_path / "artifacts"


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_build_model_is_seeded():
    config = GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16)
    a, b = build_model(config, 11, seed=3), build_model(config, 11, seed=3)
    assert isinstance(a, GPT) and a.vocab_size == 11
    assert same_state(a.state_dict(), b.state_dict())
    assert not same_state(a.state_dict(), build_model(config, 11, seed=4).state_dict())
    assert isinstance(build_model(None, 7, seed=0), BigramLanguageModel)


def test_train_cached_trains_then_loads_from_cache(cache_dir):
    config = row("multi_head").config
    first = train_cached("quick", config, QUICK, progress=False)
    assert not first.from_cache
    assert first.result.steps == 5 and len(first.result.history) == 1
    assert 2.0 < first.result.val_loss < math.log(65) + 0.5
    assert not first.model.training
    assert first.val_loss_per_char == first.result.val_loss  # characters are the tokens
    second = train_cached("quick", config, QUICK, progress=False)
    assert second.from_cache
    assert second.result == first.result  # identical val_loss, history, timing
    assert same_state(first.model.state_dict(), second.model.state_dict())
    # the loaded model is the trained one: its loss is the recorded validation loss
    val_ids = shakespeare_tokens("char").val_ids
    assert evaluate(second.model, val_ids, 8) == pytest.approx(second.result.val_loss, rel=1e-6)
    # another training configuration is another model
    other = train_cached("quick", config, dataclasses.replace(QUICK, seed=1), progress=False)
    assert not other.from_cache and other.result.val_loss != first.result.val_loss


def test_loading_never_retrains_nor_rebuilds_the_tokenizer(cache_dir, monkeypatch):
    first = train_cached("quick", None, QUICK, progress=False)
    monkeypatch.setattr(trained, "train", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(trained, "shakespeare_tokens", lambda *a, **k: pytest.fail("retokenized"))
    second = train_cached("quick", None, QUICK, progress=False)
    assert second.from_cache and isinstance(second.tokenizer, CharTokenizer)
    assert second.tokenizer.chars == first.tokenizer.chars
    assert second.result == first.result


def test_the_resolved_precision_is_part_of_the_key(cache_dir, monkeypatch):
    # "auto" trains in bfloat16 on a machine with bfloat16 units, in float32 elsewhere
    config = dataclasses.replace(QUICK, dtype="auto")
    monkeypatch.setattr(trained, "resolve_dtype", lambda dtype, device: "float32")
    assert not train_cached("auto", None, config, progress=False).from_cache
    assert train_cached("auto", None, config, progress=False).from_cache
    monkeypatch.setattr(trained, "resolve_dtype", lambda dtype, device: "bfloat16")
    assert not train_cached("auto", None, config, progress=False).from_cache


def test_train_cached_rejects_windows_longer_than_the_model():
    with pytest.raises(ValueError, match="block_size=8 is shorter than the training windows"):
        train_cached("x", BASE, dataclasses.replace(QUICK, block_size=16), progress=False)


def test_tokenizers_round_trip_through_text():
    char = CharTokenizer.from_text("hello world")
    loaded = tokenizer_from_text(tokenizer_to_text(char))
    assert isinstance(loaded, CharTokenizer) and loaded.encode("world") == char.encode("world")
    bpe = BPETokenizer().train("low lower lowest " * 20, vocab_size=262)
    loaded = tokenizer_from_text(tokenizer_to_text(bpe))
    assert isinstance(loaded, BPETokenizer) and loaded.merges == bpe.merges


def test_book_model_trains_once_then_loads(cache_dir, monkeypatch):
    small = dataclasses.replace(
        PRESETS["tiny"],
        tokenizer="bpe",
        vocab_size=300,
        model=dataclasses.replace(PRESETS["tiny"].model, vocab_size=300),
    )
    monkeypatch.setitem(PRESETS, "test-book", small)
    first = book_model(progress=False, preset="test-book")
    second = book_model(progress=False, preset="test-book")
    assert not first.from_cache and second.from_cache
    assert second.result == first.result
    assert second.val_loss_per_char == first.val_loss_per_char < math.log(300)
    data = shakespeare_tokens("bpe", 300)
    assert isinstance(second.tokenizer, BPETokenizer)
    assert second.tokenizer.merges == data.tokenizer.merges  # stored with the weights
    assert evaluate(second.model, data.val_ids, 16) == pytest.approx(
        first.result.val_loss, rel=1e-6
    )


ONE_THREAD = dataclasses.replace(QUICK, max_steps=20, eval_interval=10, threads=1)


def test_train_cached_all_in_worker_processes_matches_one_process(cache_dir, tmp_path,
                                                                  monkeypatch):
    config = row("multi_head").config
    jobs = [trained.TrainJob("par-a", config, ONE_THREAD),
            trained.TrainJob("par-b", config, dataclasses.replace(ONE_THREAD, seed=7))]
    parallel = trained.train_cached_all(jobs, progress=False, workers=2)
    assert all(run.from_cache for run in parallel)  # trained by the workers, loaded here
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    for job, run in zip(jobs, parallel, strict=True):
        alone = train_cached(job.name, job.config, job.train_config, progress=False)
        assert not alone.from_cache
        assert same_state(run.model.state_dict(), alone.model.state_dict())
        losses = [[h["train_loss"], h["val_loss"]] for h in run.result.history]
        assert losses == [[h["train_loss"], h["val_loss"]] for h in alone.result.history]
    assert not same_state(parallel[0].model.state_dict(), parallel[1].model.state_dict())


def test_train_cached_all_starts_no_worker_for_what_is_cached_or_uses_all_cores(cache_dir,
                                                                                monkeypatch):
    config = row("multi_head").config
    cached_job = trained.TrainJob("par-cached", config, ONE_THREAD)
    cached_job.run(progress=False)
    free_threads = trained.TrainJob("par-free", config, QUICK)  # no fixed thread count

    def no_workers(*args, **kwargs):
        raise AssertionError("started worker processes")

    monkeypatch.setattr(trained, "_train_in_workers", no_workers)
    runs = trained.train_cached_all([cached_job, free_threads], progress=False, workers=2)
    assert [run.from_cache for run in runs] == [True, False]
    assert runs[1].result.steps == QUICK.max_steps


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_train_cached_all_rejects_a_nonsense_worker_count(cache_dir, workers):
    job = trained.TrainJob("par-bad", row("multi_head").config, ONE_THREAD)
    with pytest.raises(ValueError, match="workers must be"):
        trained.train_cached_all([job], progress=False, workers=workers)


def test_a_failing_worker_is_a_clear_error_naming_its_run(cache_dir, monkeypatch):
    monkeypatch.setattr(trained.sys, "executable", "/bin/false")  # every worker exits with 1
    jobs = [trained.TrainJob(f"par-fail-{seed}", row("multi_head").config,
                             dataclasses.replace(ONE_THREAD, seed=seed)) for seed in (1, 2)]
    with pytest.raises(RuntimeError, match=r"training 'par-fail-\d' in a worker process failed"):
        trained.train_cached_all(jobs, progress=False, workers=2)
    assert not list(cache_dir.glob("par-fail-*/info.json"))  # nothing half-trained was stored


def test_a_script_that_trains_at_its_top_level_starts_no_workers_of_its_own(cache_dir, tmp_path):
    # Workers that import the caller's __main__ again (multiprocessing's spawn) would run this
    # script's training once more in each of them.
    script = tmp_path / "train_two.py"
    script.write_text(
        "import dataclasses\n"
        "from llm_from_scratch.progression import row\n"
        "from llm_from_scratch.train import TrainConfig\n"
        "from llm_from_scratch.trained import TrainJob, train_cached_all\n"
        "quick = TrainConfig(block_size=8, batch_size=8, max_steps=5, eval_interval=5,\n"
        "                    eval_batches=2, threads=1)\n"
        "runs = train_cached_all([TrainJob(f'script-{s}', row('multi_head').config,\n"
        "                                  dataclasses.replace(quick, seed=s)) for s in (1, 2)],\n"
        "                        progress=False, workers=2)\n"
        "print('trained', len(runs))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained") == 1
