"""Show the package's real source code inside a lesson.

Lessons never paste the package's code: they render it from the installed package, so what a
reader sees is exactly what runs. The result displays as a highlighted code block in the book
(myst-nb renders the Markdown output with the site's own code style) and in Jupyter alike.

>>> from llm_from_scratch.source import show_source
>>> from llm_from_scratch.data import train_val_split
>>> show_source(train_val_split)  # doctest: +SKIP
"""

from __future__ import annotations

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
