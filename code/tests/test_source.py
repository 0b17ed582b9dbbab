"""show_source renders the package's real code, so lessons never paste it."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from llm_from_scratch import data, source
from llm_from_scratch.source import Source, get_source, show_source


def test_source_is_the_real_code_with_its_location():
    src = get_source(data.train_val_split)
    assert src.code == inspect.getsource(data.train_val_split)
    assert src.path == "llm_from_scratch/data.py"
    assert src.qualname == "llm_from_scratch.data.train_val_split"
    lines = inspect.getsourcelines(data.train_val_split)
    assert (src.first_line, src.last_line) == (lines[1], lines[1] + len(lines[0]) - 1)


def test_methods_are_dedented_and_modules_work():
    src = get_source(Source._repr_markdown_)
    assert src.code.startswith("def _repr_markdown_")
    assert src.code == textwrap.dedent(inspect.getsource(Source._repr_markdown_))
    assert get_source(source).code == inspect.getsource(source)


def test_markdown_is_a_python_code_block():
    markdown = show_source(Source._repr_markdown_)._repr_markdown_()
    caption, _, body = markdown.split("\n", 2)
    assert "llm_from_scratch/source.py" in caption
    assert body.startswith("```python\n") and body.rstrip().endswith("\n```")
    assert "def _repr_markdown_" in body


def test_fence_is_longer_than_any_backtick_run_in_the_code():
    src = Source("demo", "demo.py", 1, 'doc = """````python\nx = 1\n````"""\n')
    body = src._repr_markdown_().split("\n", 2)[2]
    assert body.startswith("`````python\n") and body.rstrip().endswith("\n`````")


def test_objects_without_python_source_give_a_clear_error():
    with pytest.raises(TypeError, match="cannot show the source"):
        get_source(len)
