"""The package's modules import each other without cycles.

Every ``import`` statement counts, including those inside functions and ``if`` blocks: a cycle
hidden in a function still breaks when that function first runs in a fresh process, and it
means two modules cannot be read or tested apart.
"""

from __future__ import annotations

from pathlib import Path

import llm_from_scratch
from llm_from_scratch.source import import_graph, lesson_modules

PACKAGE = llm_from_scratch.__name__
REPO = Path(llm_from_scratch.__file__).resolve().parents[2]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if cycle := visit(successor):
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path):
    graph = import_graph()
    assert f"{PACKAGE}.checkpoint" in graph[f"{PACKAGE}.train"]  # a top-level import
    assert {f"{PACKAGE}.train", f"{PACKAGE}.presets"} <= graph[f"{PACKAGE}.cli"]
    assert f"{PACKAGE}.runtime" in graph[PACKAGE]  # the package's __init__
    assert PACKAGE in graph[f"{PACKAGE}.artifacts"]  # import llm_from_scratch
    # imports inside functions and if blocks, relative ones, and "from package import module"
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VERSION = 1\n")
    (pkg / "a.py").write_text("def f():\n    from llm_from_scratch import b\n")
    (pkg / "b.py").write_text("if True:\n    from .c import thing\n")
    (pkg / "c.py").write_text("import llm_from_scratch.a\nfrom . import VERSION\nthing = 1\n")
    fake = import_graph(pkg)
    assert fake[f"{PACKAGE}.a"] == {f"{PACKAGE}.b"}
    assert fake[f"{PACKAGE}.b"] == {f"{PACKAGE}.c"}
    assert fake[f"{PACKAGE}.c"] == {PACKAGE, f"{PACKAGE}.a"}
    assert find_cycle(fake) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c", f"{PACKAGE}.a"]


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_lesson_modules_reads_the_code_cells_only():
    text = "\n".join([
        "Prose: from llm_from_scratch.chat import nothing", "```{code-cell} ipython3",
        ":tags: [hide-input]", "%matplotlib inline", "import llm_from_scratch.train",
        "from llm_from_scratch import tokenizer, progression",
        "from llm_from_scratch.model import GPT", "```", "```python", "import llm_from_scratch.sft",
        "```",
    ])  # fmt: skip
    assert lesson_modules(text) == {f"{PACKAGE}.train", f"{PACKAGE}.tokenizer",
                                    f"{PACKAGE}.progression", f"{PACKAGE}.model"}
    lesson = (REPO / "lessons" / "L09_Inference_and_Sampling.md").read_text()
    assert f"{PACKAGE}.generation" in lesson_modules(lesson)
