"""The package's modules import each other without cycles.

Every ``import`` statement counts, including those inside functions and ``if`` blocks: a cycle
hidden in a function still breaks when that function first runs in a fresh process, and it
means two modules cannot be read or tested apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llm_from_scratch

PACKAGE = llm_from_scratch.__name__
ROOT = Path(llm_from_scratch.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the file at ``path`` imports, anywhere in its code."""
    name = module_name(path)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            # "from package import module" names a module; "from module import name" does not
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # the module itself, or the module that holds the imported name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in files}
    return {module_name(path): imported_modules(path, modules) for path in files}


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


def test_the_graph_sees_every_kind_of_import(tmp_path, monkeypatch):
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
    monkeypatch.setattr(f"{__name__}.ROOT", pkg)
    fake = import_graph()
    assert fake[f"{PACKAGE}.a"] == {f"{PACKAGE}.b"}
    assert fake[f"{PACKAGE}.b"] == {f"{PACKAGE}.c"}
    assert fake[f"{PACKAGE}.c"] == {PACKAGE, f"{PACKAGE}.a"}
    assert find_cycle(fake) == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c", f"{PACKAGE}.a"]


def test_no_import_cycles_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
