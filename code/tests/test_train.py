"""Tests for llm_from_scratch.train, llm_from_scratch.artifacts and llm_from_scratch.progression.

Training runs here are a handful of steps on tiny models: they check the loop's contracts
(batches, honest evaluation, reproducibility, caching), not the book's loss numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

import llm_from_scratch
from llm_from_scratch import artifacts, progression
from llm_from_scratch.artifacts import (
    CACHE_DIR_ENV,
    artifact_key,
    cache_root,
    cached,
    package_fingerprint,
)
from llm_from_scratch.model import GPT, BigramLanguageModel, GPTConfig
from llm_from_scratch.progression import (
    BASE,
    PROGRESSION_TRAIN,
    ROWS,
    build_model,
    markdown_table,
    progression_table,
    row,
    run_experiment,
)
from llm_from_scratch.train import (
    PRESETS,
    TrainConfig,
    TrainResult,
    evaluate,
    get_batch,
    train,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    return tmp_path / "artifacts"


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


# ---- get_batch --------------------------------------------------------------------------


def test_get_batch_targets_are_inputs_shifted_by_one():
    data = torch.arange(100) * 7 % 101  # distinct values, not simply position + 1
    x, y = get_batch(data, block_size=6, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 6)
    assert x.dtype == data.dtype
    for row_x, row_y in zip(x, y, strict=True):
        start = int((data == row_x[0]).nonzero())
        assert torch.equal(row_x, data[start : start + 6])
        assert torch.equal(row_y, data[start + 1 : start + 7])


def test_get_batch_reaches_every_window_and_no_further():
    data = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        x, _ = get_batch(data, block_size=3, batch_size=8, generator=g)
        starts |= set(x[:, 0].tolist())
    assert starts == set(range(7))  # the last window's target is the last token


def test_get_batch_is_reproducible_with_a_generator():
    data = torch.arange(50)
    a = get_batch(data, 4, 5, torch.Generator().manual_seed(3))
    b = get_batch(data, 4, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def test_get_batch_errors():
    with pytest.raises(ValueError, match="data has 8 tokens; need more than block_size=8"):
        get_batch(torch.arange(8), block_size=8, batch_size=2)
    get_batch(torch.arange(9), block_size=8, batch_size=2)  # one window fits
    with pytest.raises(ValueError, match=r"1-D tensor of token ids, got shape \(2, 10\)"):
        get_batch(torch.zeros(2, 10, dtype=torch.long), block_size=3, batch_size=2)


# ---- evaluate ---------------------------------------------------------------------------


def test_evaluate_equals_hand_computed_mean_loss():
    torch.manual_seed(0)
    model = BigramLanguageModel(5)
    data = cycle_data(23)
    # (23 - 1) // 4 = 5 windows: inputs data[0:20], targets data[1:21]; the rest is dropped.
    table = model.token_embedding.weight.detach()
    expected = F.cross_entropy(table[data[:20]], data[1:21]).item()
    for batch_size in (1, 2, 5, 256):  # uneven last batches weigh by their token count
        assert evaluate(model, data, block_size=4, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-6
        )
    # max_batches: only the first windows
    first = F.cross_entropy(table[data[:8]], data[1:9]).item()
    assert evaluate(model, data, 4, batch_size=2, max_batches=1) == pytest.approx(first, rel=1e-6)


def test_evaluate_is_deterministic_and_restores_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    data = cycle_data(200)
    model.train()
    a = evaluate(model, data, 8, batch_size=4)
    b = evaluate(model, data, 8, batch_size=7)
    assert a == pytest.approx(b, rel=1e-6)  # dropout off, every token once
    assert model.training
    model.eval()
    evaluate(model, data, 8)
    assert not model.training


def test_evaluate_needs_one_full_window():
    with pytest.raises(ValueError, match="need more than block_size=8"):
        evaluate(BigramLanguageModel(5), torch.arange(8) % 5, block_size=8)


# ---- train ------------------------------------------------------------------------------


TINY = TrainConfig(block_size=8, batch_size=16, max_steps=30, learning_rate=0.1, eval_interval=10)


def test_train_reduces_the_loss_on_a_bigram_task():
    data = cycle_data(2000)
    train_data, val_data = data[:1800], data[1800:]
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
    assert result.steps == 30 and result.n_params == 25 and result.seconds > 0
    assert result.train_loss == result.history[-1]["train_loss"]
    assert all(h["grad_norm"] > 0 for h in result.history)


def test_train_is_reproducible():
    data = cycle_data(1000)
    config = dataclasses.replace(TINY, max_steps=6, eval_interval=3, learning_rate=1e-2)
    gpt_config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.2)

    def run(seed, global_seed):
        torch.manual_seed(0)
        model = GPT(gpt_config)
        torch.manual_seed(global_seed)  # train must not depend on the global RNG's state
        result = train(model, data[:900], data[900:], dataclasses.replace(config, seed=seed), False)
        return result, model.state_dict()

    (r1, s1), (r2, s2), (r3, _) = run(1, 111), run(1, 222), run(2, 111)
    timeless = [{k: v for k, v in h.items() if k not in ("elapsed", "tokens_per_second")}
                for h in r1.history]
    assert timeless == [{k: h[k] for k in timeless[0]} for h in r2.history]  # floats: identical
    assert r1.val_loss == r2.val_loss and r1.train_loss == r2.train_loss
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.val_loss != r3.val_loss


def test_train_history_at_max_steps_and_no_clipping():
    data = cycle_data(500)
    config = TrainConfig(max_steps=7, eval_interval=5, batch_size=4, grad_clip=None)
    result = train(BigramLanguageModel(5), data, data, config, progress=False)
    assert [h["step"] for h in result.history] == [5, 7]
    assert math.isnan(result.history[0]["grad_norm"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("block_size", 0), ("batch_size", -1), ("max_steps", 0), ("eval_interval", 0),
     ("eval_batches", 0), ("learning_rate", 0.0)],
)  # fmt: skip
def test_train_config_validation(field, value):
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        TrainConfig(**{field: value})


def test_results_round_trip_through_dicts():
    config = TrainConfig(max_steps=5)
    assert TrainConfig(**config.to_dict()) == config
    result = TrainResult(1.0, 2.0, 3.0, 4, 5, [{"step": 4}])
    assert TrainResult(**json.loads(json.dumps(result.to_dict()))) == result


# ---- artifacts --------------------------------------------------------------------------


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert cache_root() == tmp_path / "artifacts"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache_root().name == "artifacts"
    assert "llm_from_scratch" in str(cache_root())


def test_package_fingerprint_is_a_sha256_hex():
    fp = package_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert package_fingerprint() == fp


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """The package's fingerprint computed over a copy of its sources that a test may edit."""
    root = tmp_path / "pkg" / "llm_from_scratch"
    shutil.copytree(
        artifacts.Path(llm_from_scratch.__file__).parent,
        root,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setattr(llm_from_scratch, "__file__", str(root / "__init__.py"))
    package_fingerprint.cache_clear()
    yield root
    package_fingerprint.cache_clear()


def test_package_fingerprint_changes_when_a_source_file_changes(package_copy):
    original = package_fingerprint()
    package_fingerprint.cache_clear()
    assert package_fingerprint() == original  # same files, same fingerprint
    (package_copy / "norm.py").write_text((package_copy / "norm.py").read_text() + "\n# edit\n")
    package_fingerprint.cache_clear()
    edited = package_fingerprint()
    assert edited != original
    (package_copy / "norm.py").rename(package_copy / "norms.py")  # names count too
    package_fingerprint.cache_clear()
    assert package_fingerprint() not in (original, edited)


def test_artifact_key_depends_on_name_and_spec_not_key_order():
    a = artifact_key("run", {"lr": 0.1, "steps": 5})
    assert re.fullmatch(r"run-[0-9a-f]{16}", a)
    assert artifact_key("run", {"steps": 5, "lr": 0.1}) == a
    assert artifact_key("run", {"lr": 0.1, "steps": 6}) != a
    assert artifact_key("other", {"lr": 0.1, "steps": 5}) != a[len("run") :]
    assert artifact_key("run", {"lr": 0.1, "steps": 5, "extra": None}) != a


def test_cached_computes_once_then_loads(cache_dir):
    calls = []
    state = {"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2])}

    def compute():
        calls.append(1)
        return {"loss": 1.25, "history": [{"step": 1, "loss": float("nan")}]}, state

    first = cached("demo", {"seed": 1}, compute)
    assert not first.from_cache and calls == [1]
    assert first.path.parent == cache_dir
    assert json.loads((first.path / "spec.json").read_text()) == {"seed": 1}
    second = cached("demo", {"seed": 1}, compute)
    assert second.from_cache and calls == [1]
    assert second.path == first.path
    assert second.info["loss"] == 1.25 and math.isnan(second.info["history"][0]["loss"])
    assert set(second.state_dict) == {"w", "b"}
    for key, value in state.items():
        assert torch.equal(second.state_dict[key], value)
        assert second.state_dict[key].dtype == value.dtype
    reloaded = torch.load(first.path / "model.pt", weights_only=True)
    assert all(torch.equal(reloaded[k], state[k]) for k in state)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]
    # a different spec is a different artifact
    third = cached("demo", {"seed": 2}, compute)
    assert not third.from_cache and calls == [1, 1] and third.path != first.path


def test_cached_without_weights_and_failed_computations(cache_dir):
    art = cached("info-only", {}, lambda: ({"x": 1}, None))
    assert art.state_dict is None and not (art.path / "model.pt").exists()
    again = cached("info-only", {}, lambda: pytest.fail("should be cached"))
    assert again.from_cache and again.info == {"x": 1} and again.state_dict is None

    def boom():
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        cached("broken", {}, boom)
    assert not list(cache_dir.glob("broken-*"))
    assert cached("broken", {}, lambda: ({"ok": True}, None)).info == {"ok": True}


def test_cached_key_includes_the_package_fingerprint(cache_dir, package_copy):
    cached("fp", {"a": 1}, lambda: ({"v": 1}, None))
    (package_copy / "train.py").write_text("# a different training routine\n")
    package_fingerprint.cache_clear()
    art = cached("fp", {"a": 1}, lambda: ({"v": 2}, None))
    assert not art.from_cache and art.info == {"v": 2}


# ---- the loss progression ---------------------------------------------------------------


def test_progression_rows():
    assert [r.key for r in ROWS] == [
        "bigram",
        "self_attention",
        "multi_head",
        "feed_forward",
        "residual_layernorm",
        "scaled_up",
        "gpt",
    ]
    assert len({r.key for r in ROWS}) == len(ROWS)
    assert ROWS[0].config is None
    anchors = [r.anchor for r in ROWS]
    assert anchors == sorted(anchors, reverse=True)  # each idea should help
    for r in ROWS[1:]:
        assert GPTConfig(**r.config.to_dict()) == r.config  # passes validation
        assert r.config.block_size >= (r.train or PROGRESSION_TRAIN).block_size
        assert r.config.vocab_size == BASE.vocab_size
    # rows up to Lesson 5 share one training setup; Lesson 7's scale it up
    assert all(r.train is None for r in ROWS if r.lesson != "L07")
    assert row("gpt").train == PRESETS["nanogpt-cpu"].train
    assert row("gpt").config == PRESETS["nanogpt-cpu"].model
    assert row("multi_head").config.n_head == 4 and row("self_attention").config.n_head == 1
    assert row("residual_layernorm").config.residual and not row("feed_forward").config.residual


def test_row_unknown_key_lists_the_rows():
    with pytest.raises(KeyError, match=r"no progression row 'gpt5'; rows are \['bigram'"):
        row("gpt5")


@pytest.mark.parametrize("key", [r.key for r in ROWS])
def test_every_row_builds_and_runs(key):
    config = row(key).config
    a, b = build_model(config, 65, seed=3), build_model(config, 65, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    x = torch.randint(0, 65, (2, 8))
    logits, loss = a(x, x)
    assert logits.shape == (2, 8, 65) and torch.isfinite(loss)
    assert isinstance(a, BigramLanguageModel if config is None else GPT)


def test_markdown_table():
    table = [
        {"model": "Bigram", "lesson": "L03", "parameters": 4225, "train_loss": 2.4567,
         "val_loss": 2.4912, "anchor": 2.5},
    ]  # fmt: skip
    lines = markdown_table(table).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("| Model | Lesson | Parameters")
    assert lines[2] == "| Bigram | L03 | 4,225 | 2.457 | **2.491** | 2.50 |"


QUICK = TrainConfig(block_size=8, batch_size=8, max_steps=5, eval_interval=5, eval_batches=2)


def test_run_experiment_trains_then_loads_from_cache(cache_dir):
    config = row("multi_head").config
    first = run_experiment("quick", config, QUICK, progress=False)
    assert not first.from_cache
    assert first.result.steps == 5 and len(first.result.history) == 1
    assert 2.0 < first.result.val_loss < math.log(65) + 0.5
    assert not first.model.training
    second = run_experiment("quick", config, QUICK, progress=False)
    assert second.from_cache
    assert second.result == first.result  # identical val_loss, history, timing
    s1, s2 = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # the loaded model is the trained one: its loss is the recorded validation loss
    _, _, val_ids = progression.char_data()
    assert evaluate(second.model, val_ids, 8) == pytest.approx(second.result.val_loss, rel=1e-6)
    # another training configuration is another experiment
    other = run_experiment("quick", config, dataclasses.replace(QUICK, seed=1), progress=False)
    assert not other.from_cache and other.result.val_loss != first.result.val_loss


def test_run_experiment_rejects_windows_longer_than_the_model():
    with pytest.raises(ValueError, match="block_size=8 is shorter than the training windows"):
        run_experiment("x", BASE, dataclasses.replace(QUICK, block_size=16), progress=False)


def test_progression_table_uses_the_shared_training_config(cache_dir, monkeypatch):
    monkeypatch.setattr(progression, "PROGRESSION_TRAIN", QUICK)
    table = progression_table(["bigram"], progress=False)
    assert len(table) == 1
    entry = table[0]
    assert entry["key"] == "bigram" and entry["lesson"] == "L03" and entry["anchor"] == 2.5
    assert entry["parameters"] == 65 * 65
    assert (
        entry["val_loss"] == run_experiment("bigram", None, QUICK, progress=False).result.val_loss
    )
    assert "**" in markdown_table(table)
