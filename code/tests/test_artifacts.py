"""Tests for llm_from_scratch.artifacts: the disk cache of trained models and its keys.

Besides the round trip, they check that the cache never loses a computed result: not to an
unwritable cache, a corrupt entry, or two processes computing the same key at once.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import llm_from_scratch
from llm_from_scratch import artifacts
from llm_from_scratch.artifacts import (
    CACHE_DIR_ENV,
    CacheWarning,
    artifact_key,
    cache_root,
    cached,
    module_fingerprint,
    package_fingerprint,
    source_fingerprint,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    # A warning the test does not expect is a failure: the cache misbehaved somewhere.
    pytest.mark.filterwarnings("error::llm_from_scratch.artifacts.CacheWarning"),
]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    return tmp_path / "artifacts"


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


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- keys -------------------------------------------------------------------------------


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


def test_package_fingerprint_counts_package_data_but_not_bytecode(package_copy):
    original = package_fingerprint()
    (package_copy / "__pycache__").mkdir()
    (package_copy / "__pycache__" / "norm.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (package_copy / "stray.pyc").write_bytes(b"\x00bytecode")
    package_fingerprint.cache_clear()
    assert package_fingerprint() == original
    (package_copy / "vocab.json").write_text('{"a": 0}')  # data shipped with the package
    package_fingerprint.cache_clear()
    assert package_fingerprint() != original


def test_source_fingerprint_cannot_be_fooled_by_contents_that_look_like_a_file_boundary(
    tmp_path,
):
    one, two = tmp_path / "one" / "pkg", tmp_path / "two" / "pkg"
    for root, files in [(one, {"a": b"x\0pkg/b\0y"}), (two, {"a": b"x", "b": b"y"})]:
        root.mkdir(parents=True)
        for name, content in files.items():
            (root / name).write_bytes(content)
    assert source_fingerprint(one) != source_fingerprint(two)


def test_artifact_key_depends_on_name_and_spec_not_key_order():
    def digest(key: str) -> str:
        return key.split("-", 1)[1]

    a = artifact_key("run", {"lr": 0.1, "steps": 5})
    assert re.fullmatch(r"run-[0-9a-f]{16}", a)
    assert artifact_key("run", {"steps": 5, "lr": 0.1}) == a
    assert artifact_key("run", {"lr": 0.1, "steps": 6}) != a
    # The name is hashed, not only used as a prefix.
    assert digest(artifact_key("other", {"lr": 0.1, "steps": 5})) != digest(a)
    assert artifact_key("run", {"lr": 0.1, "steps": 5, "extra": None}) != a


def load_book_extension(monkeypatch):
    pytest.importorskip("sphinx")
    monkeypatch.syspath_prepend(str(REPO / "book" / "_ext"))
    import llmfs_book

    return llmfs_book


def book_hash(llmfs_book, confdir: Path, dirs: list[str]) -> str:
    """The hash the book's Sphinx extension keys lesson outputs on, for ``dirs``."""
    app = SimpleNamespace(confdir=str(confdir), outdir=str(confdir / "_build" / "html"))
    config = SimpleNamespace(llmfs_package_dirs=dirs, nb_execution_cache_path="")
    llmfs_book._key_cache_on_package(app, config)
    return config.llmfs_package_hash


def test_the_book_hashes_the_package_by_the_same_rule(package_copy, tmp_path, monkeypatch):
    llmfs_book = load_book_extension(monkeypatch)
    confdir = tmp_path / "book"
    confdir.mkdir()
    package = str(package_copy)
    assert book_hash(llmfs_book, confdir, [package]) == package_fingerprint()
    (package_copy / "vocab.json").write_text('{"a": 0}')
    package_fingerprint.cache_clear()
    assert book_hash(llmfs_book, confdir, [package]) == package_fingerprint()

    # The book also keys on the pinned tools: a change there re-executes lessons too.
    (confdir / "requirements.txt").write_text("torch==1\n")
    with_tools = book_hash(llmfs_book, confdir, [package, "requirements.txt"])
    assert with_tools != package_fingerprint()
    (confdir / "requirements.txt").write_text("torch==2\n")
    assert book_hash(llmfs_book, confdir, [package, "requirements.txt"]) != with_tools


# ---- the cache --------------------------------------------------------------------------


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


def test_module_fingerprint_counts_what_the_module_imports_and_nothing_else(package_copy):
    trained, sft = module_fingerprint("llm_from_scratch.trained"), module_fingerprint(
        "llm_from_scratch.sft")
    generation = package_copy / "generation.py"  # sft imports it; trained does not
    generation.write_text(generation.read_text() + "\n# an edit\n")
    assert module_fingerprint("llm_from_scratch.trained") == trained
    assert module_fingerprint("llm_from_scratch.sft") != sft
    model = package_copy / "model.py"  # both import it, through others
    model.write_text(model.read_text() + "\n# an edit\n")
    assert module_fingerprint("llm_from_scratch.trained") != trained
    package_fingerprint.cache_clear()
    assert module_fingerprint("tests.not_the_package") == package_fingerprint()


def test_a_result_computed_in_the_package_is_kept_until_its_own_source_changes(cache_dir,
                                                                              package_copy):
    def compute(value):
        def f():
            return {"v": value}, None
        f.__module__ = "llm_from_scratch.trained"  # as if defined there, like book_model's
        return f

    cached("kept", {"a": 1}, compute(1))
    generation = package_copy / "generation.py"
    generation.write_text(generation.read_text() + "\n# sampling changed\n")
    package_fingerprint.cache_clear()
    again = cached("kept", {"a": 1}, compute(2))
    assert again.from_cache and again.info == {"v": 1}  # the model never imports generation
    train = package_copy / "train.py"
    train.write_text(train.read_text() + "\n# training changed\n")
    retrained = cached("kept", {"a": 1}, compute(3))
    assert not retrained.from_cache and retrained.info == {"v": 3}


def test_an_uncreatable_cache_returns_the_result_with_a_warning(tmp_path, monkeypatch):
    # A regular file where the cache's parent should be: no one, root included, can create it.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker))
    calls, state = [], {"w": torch.ones(2)}

    def compute():
        calls.append(1)
        return {"loss": 0.5}, state

    with pytest.warns(CacheWarning, match=re.escape(str(cache_root())) + ".*not cached"):
        art = cached("model", {}, compute)
    assert calls == [1] and not art.from_cache
    assert art.info == {"loss": 0.5} and tensors_equal(art.state_dict, state)


@pytest.mark.parametrize("failure", ["unwritable directory", "disk full"])
def test_a_failed_write_returns_the_result_and_leaves_no_partial_entry(
    cache_dir, monkeypatch, failure
):
    if failure == "unwritable directory":
        # What a read-only cache directory does for a non-root user (root ignores chmod).
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(cache_dir))

        monkeypatch.setattr(artifacts.tempfile, "mkdtemp", refuse)
    else:

        def refuse(*args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc] file write failed")

        monkeypatch.setattr(torch, "save", refuse)
    state = {"w": torch.ones(3)}
    with pytest.warns(CacheWarning, match=re.escape(str(cache_dir)) + ".*not cached"):
        art = cached("model", {}, lambda: ({"loss": 0.5}, state))
    assert not art.from_cache and art.info == {"loss": 0.5} and tensors_equal(art.state_dict, state)
    assert not [p for p in cache_dir.iterdir() if not p.name.endswith(".lock")]


def damage(path: Path, how: str) -> Path:
    """Damage one file of the cached artifact at ``path``; return that file."""
    weights, info = path / "model.pt", path / "info.json"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "weights cut short by a few bytes":
        weights.write_bytes(weights.read_bytes()[:-5])
    elif how == "empty weights":
        weights.write_bytes(b"")
    else:
        info.write_text('{"loss": 0.')
    return info if "info" in how else weights


@pytest.mark.parametrize(
    "how",
    ["truncated weights", "weights cut short by a few bytes", "empty weights", "invalid info"],
)
def test_a_corrupt_entry_is_recomputed_with_a_warning(cache_dir, how):
    calls, state = [], {"w": torch.arange(100.0)}

    def compute():
        calls.append(1)
        return {"loss": 0.25}, state

    first = cached("model", {}, compute)
    bad = damage(first.path, how)
    with pytest.warns(CacheWarning, match=re.escape(str(bad))):
        second = cached("model", {}, compute)
    assert calls == [1, 1] and not second.from_cache
    assert second.info == {"loss": 0.25} and tensors_equal(second.state_dict, state)
    third = cached("model", {}, compute)  # the recomputed entry replaced the damaged one
    assert third.from_cache and calls == [1, 1] and tensors_equal(third.state_dict, state)


def test_a_lost_rename_race_keeps_the_other_copy(cache_dir, monkeypatch):
    # Another process, not locked out (say, no flock), stores the same key between our check
    # and our rename: the rename fails on its directory, which must be kept.
    real_rename = Path.rename

    def rename_after_a_rival(self, target):
        if self.name.startswith(".tmp-"):
            Path(target).mkdir()
            (Path(target) / "info.json").write_text('{"by": "rival"}')
        return real_rename(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", rename_after_a_rival)
        art = cached("raced", {}, lambda: ({"by": "us"}, None))
    assert not art.from_cache and art.info == {"by": "us"}
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]
    again = cached("raced", {}, lambda: pytest.fail("should be cached"))
    assert again.from_cache and again.info == {"by": "rival"}


def compute_in_another_process(cache: str, out: Path, barrier) -> None:
    """Ask for one artifact, as a lesson in another process would, and record what came back."""

    def compute():
        with (out.parent / "calls").open("a") as calls:
            calls.write("computed\n")
        time.sleep(0.5)  # long enough that an unlocked rival would compute too
        return {"loss": 0.125}, {"w": torch.arange(4.0)}

    os.environ[CACHE_DIR_ENV] = cache
    barrier.wait(timeout=30)
    art = cached("shared", {"seed": 0}, compute)
    out.write_text(json.dumps([art.info, art.state_dict["w"].tolist(), art.from_cache]))


def test_concurrent_processes_compute_an_artifact_once(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    context = multiprocessing.get_context("fork")  # spawn would import torch again, slowly
    barrier = context.Barrier(3)
    outs = [tmp_path / f"out{i}.json" for i in range(3)]
    workers = [
        context.Process(target=compute_in_another_process, args=(str(tmp_path), out, barrier))
        for out in outs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert (tmp_path / "calls").read_text() == "computed\n"
    results = [json.loads(out.read_text()) for out in outs]
    assert all(r[:2] == [{"loss": 0.125}, [0.0, 1.0, 2.0, 3.0]] for r in results)
    assert sorted(r[2] for r in results) == [False, True, True]
