"""The examples in the package's docstrings run and print what they claim.

The tokenizer's doctests run in test_tokenizer.py. The data module's examples read Tiny
Shakespeare, found through ``$LLMFS_DATA_DIR`` like the rest of the suite (see test_data.py).
"""

from __future__ import annotations

import doctest
import importlib

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODULES = [
    "embeddings",
    "attention",
    "norm",
    "blocks",
    "model",
    "train",
    "artifacts",
    "progression",
    "data",
    "source",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"llm_from_scratch.{name}")
    finder = doctest.DocTestFinder()
    if not any(test.examples for test in finder.find(module)):
        pytest.skip(f"llm_from_scratch.{name} has no docstring examples")
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} doctest(s) of llm_from_scratch.{name} failed"
