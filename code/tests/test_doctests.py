"""The examples in the package's docstrings run and print what they claim.

Every module of the package is found by walking it, so a new module's examples run without
anyone listing it here. The data module's examples read Tiny Shakespeare, found through
``$LLMFS_DATA_DIR`` like the rest of the suite (see test_data.py); examples that train a model
cache it under a temporary ``$LLMFS_CACHE_DIR``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import llm_from_scratch
from llm_from_scratch.artifacts import CACHE_DIR_ENV

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: Modules whose docstring examples do not run here, and why.
SKIPPED = {
    "__main__": "importing it runs the command line",
    "tokenizer": "test_tokenizer.py runs its examples",
    "cli": "no docstring examples",
}

PACKAGE = llm_from_scratch.__name__
MODULES = sorted(
    info.name.removeprefix(f"{PACKAGE}.")
    for info in pkgutil.walk_packages(llm_from_scratch.__path__, prefix=f"{PACKAGE}.")
)


def test_the_walk_finds_the_package_and_the_skips_still_hold():
    assert {"model", "train", "checkpoint", "runtime", "optim", "flops"} <= set(MODULES)
    assert set(SKIPPED) <= set(MODULES)
    cli = importlib.import_module(f"{PACKAGE}.cli")
    assert not any(test.examples for test in doctest.DocTestFinder().find(cli)), (
        "cli has docstring examples now: remove it from SKIPPED"
    )


@pytest.mark.parametrize("name", [name for name in MODULES if name not in SKIPPED])
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    module = importlib.import_module(f"{PACKAGE}.{name}")
    if not any(test.examples for test in doctest.DocTestFinder().find(module)):
        pytest.skip(f"{PACKAGE}.{name} has no docstring examples")
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} doctest(s) of {PACKAGE}.{name} failed"
