"""Show the package's real source code inside a lesson.

Lessons never paste the package's code: they render it from the installed package, so what a
reader sees is exactly what runs. The result displays as a highlighted code block in the book
(myst-nb renders the Markdown output with the site's own code style) and in Jupyter alike.

>>> from llm_from_scratch.source import show_source
>>> from llm_from_scratch.data import train_val_split
>>> show_source(train_val_split)  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llm_from_scratch

_PACKAGE_ROOT = Path(llm_from_scratch.__file__).resolve().parent


@dataclass(frozen=True)
class Source:
    """A piece of package source with where it lives; displays itself as highlighted code."""

    qualname: str
    path: str
    first_line: int
    code: str

    @property
    def last_line(self) -> int:
        return self.first_line + self.code.count("\n") - (1 if self.code.endswith("\n") else 0)

    @property
    def caption(self) -> str:
        return f"{self.qualname} — {self.path}, lines {self.first_line}–{self.last_line}"

    def __repr__(self) -> str:  # plain-text fallback, e.g. in a terminal
        return f"# {self.caption}\n{self.code}"

    def _repr_markdown_(self) -> str:
        # A fence longer than any backtick run inside the code keeps the block intact.
        longest = max((len(m) for m in re.findall(r"`+", self.code)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"*{self.caption}*\n\n{fence}python\n{self.code.rstrip()}\n{fence}\n"


def get_source(obj: Any) -> Source:
    """Return the source of a function, class, method or module of the package.

    >>> from llm_from_scratch.data import train_val_split
    >>> get_source(train_val_split).path
    'llm_from_scratch/data.py'
    """
    target = inspect.unwrap(obj)
    if isinstance(target, property):
        target = target.fget
    try:
        lines, first_line = inspect.getsourcelines(target)
        file = Path(inspect.getsourcefile(target) or "").resolve()
    except (TypeError, OSError) as err:
        raise TypeError(f"cannot show the source of {obj!r}: {err}") from err
    try:
        path = file.relative_to(_PACKAGE_ROOT.parent).as_posix()
    except ValueError:
        path = file.name  # not in the package: show the file name only
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    module = getattr(target, "__module__", None)
    if module and not inspect.ismodule(target):
        qualname = f"{module}.{qualname}"
    # Dedent so that a method reads as a block of its own; modules start at line 0.
    return Source(qualname, path, max(first_line, 1), textwrap.dedent("".join(lines)))


def show_source(obj: Any) -> Source:
    """Display the package's source for ``obj`` (the last expression of a cell shows it).

    >>> from llm_from_scratch.data import train_val_split
    >>> show_source(train_val_split)  # doctest: +SKIP
    """
    return get_source(obj)


#: Where the package's source lives, for :func:`import_graph`.
PACKAGE_ROOT = Path(llm_from_scratch.__file__).parent


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """The dotted name of the module at ``path`` in the package rooted at ``root``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join((root.name, *parts)).removesuffix(".__init__")


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path:
    """The source file of ``module`` in the package rooted at ``root`` (the inverse of
    :func:`module_name`)."""
    path = root.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_names(code: str, here: str = "") -> list[str]:
    """Every dotted name that ``code`` imports, anywhere in it (``here``: its package)."""
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            # "from package import module" names a module; "from module import name" does not
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def resolve(names: list[str], modules: set[str], exclude: str = "") -> set[str]:
    """The modules of ``modules`` that hold ``names``: the module itself or the one above it."""
    found = set()
    for target in names:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != exclude:
            found.add(target)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Each module of the package at ``root`` and the package modules it imports.

    Every ``import`` counts, also inside functions and ``if`` blocks.

    >>> "llm_from_scratch.checkpoint" in import_graph()["llm_from_scratch.train"]
    True
    """
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    graph = {}
    for path in files:
        name = module_name(path, root)
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        code = path.read_text(encoding="utf-8")
        graph[name] = resolve(imported_names(code, here), modules, exclude=name)
    return graph


def lesson_modules(text: str, root: Path = PACKAGE_ROOT) -> set[str]:
    """The modules of the package at ``root`` that a lesson's code cells import.

    ``text`` is the lesson's MyST markdown; only its code cells count.

    >>> cell = "```{code-cell} ipython3\\nfrom llm_from_scratch.model import GPT\\n```"
    >>> sorted(lesson_modules(cell))
    ['llm_from_scratch.model']
    """
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, re.M | re.S)
    modules = set(import_graph(root))
    found: set[str] = set()
    for cell in cells:
        body = re.sub(r"^---\n.*?\n---\n", "", cell, flags=re.S)  # a cell's own options
        code = "\n".join(line for line in body.splitlines()
                         if not line.startswith((":", "%", "!")))
        found |= resolve(imported_names(code), modules)
    return found


def dependencies(modules: set[str], graph: dict[str, set[str]]) -> set[str]:
    """``modules`` and everything they import, directly or not, with the package itself.

    >>> graph = {"p": set(), "p.a": {"p.b"}, "p.b": set(), "p.c": set()}
    >>> sorted(dependencies({"p.a"}, graph))
    ['p', 'p.a', 'p.b']
    """
    found: set[str] = set()
    todo = [m for m in modules if m in graph]
    todo += [name for name in graph if "." not in name]  # importing any module runs __init__
    while todo:
        module = todo.pop()
        if module not in found:
            found.add(module)
            todo += graph.get(module, ())
    return found
