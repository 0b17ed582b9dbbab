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


def test_markdown_is_a_python_code_block_that_survives_backticks():
    markdown = show_source(Source._repr_markdown_)._repr_markdown_()
    body = markdown.split("\n", 2)[2]
    # the code contains a run of three backticks' worth of regex; the fence must be longer
    fence = body.split("python", 1)[0]
    assert len(fence) >= 3 and set(fence) == {"`"}
    assert body.rstrip().endswith(fence)
    assert "def _repr_markdown_" in markdown
    assert "llm_from_scratch/source.py" in markdown


def test_objects_without_python_source_give_a_clear_error():
    with pytest.raises(TypeError, match="cannot show the source"):
        get_source(len)
