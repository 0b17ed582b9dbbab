"""The book's build configuration, checked by building small books with it.

These tests copy the real ``_config.yml`` and Sphinx extension into a temporary book, so they
prove what the real build does: a lesson with a failing cell (or one that makes Sphinx warn)
fails the build, but only after every other page has executed, and the build lists each failed
page; a failed page executes again at the next build; and a change to the package re-executes
lessons instead of serving stale cached outputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Sphinx colours its output

pytestmark = pytest.mark.slow

LESSON_HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A lesson

"""


def code_cell(source: str) -> str:
    return f"```{{code-cell}} ipython3\n{textwrap.dedent(source).strip()}\n```\n\n"


def make_book(root: Path, lesson: str) -> Path:
    """A one-lesson book with the project's real configuration and a toy package ``toypkg``."""
    return make_book_of(root, {"L01_Test": lesson})


def make_book_of(root: Path, lessons: dict[str, str]) -> Path:
    """A book of these lessons (``{stem: text}``, in this order in the table of contents), with
    the project's real configuration and a toy package ``toypkg``."""
    root.mkdir(parents=True, exist_ok=True)
    config = (REPO / "_config.yml").read_text()
    config = config.replace("- code/llm_from_scratch", "- toypkg")
    assert "- toypkg" in config, "the book config no longer names llmfs_package_dirs"
    (root / "_config.yml").write_text(config)
    for sub in ("_ext", "_static"):
        shutil.copytree(REPO / "book" / sub, root / "book" / sub)
    shutil.copy(REPO / "book" / "references.bib", root / "book" / "references.bib")
    shutil.copy(REPO / "requirements.txt", root / "requirements.txt")
    (root / "book" / "intro.md").write_text("# Intro\n\nA test book.\n")
    (root / "lessons").mkdir()
    for stem, text in lessons.items():
        (root / "lessons" / f"{stem}.md").write_text(text)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n" + "".join(
        f"  - file: lessons/{stem}\n" for stem in lessons))
    (root / "toypkg").mkdir()
    (root / "toypkg" / "__init__.py").write_text("VALUE = 1\n")
    return root


def build(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the lesson's kernel imports toypkg
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(root), "--warningiserror", "--keep-going"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def check_build():
    """``.ci/check_build.py`` as a module."""
    spec = importlib.util.spec_from_file_location("check_build", REPO / ".ci" / "check_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lesson_html(root: Path) -> str:
    return (root / "_build" / "html" / "lessons" / "L01_Test.html").read_text()


def executed(result: subprocess.CompletedProcess) -> set[str]:
    """The pages a successful build executed (not served from the cache), by file stem."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"/(\w+)\.md: Executing notebook", result.stdout))


def test_a_failing_cell_fails_the_build(tmp_path):
    lesson = LESSON_HEADER + code_cell("x = 1") + code_cell("raise RuntimeError('boom-42')")
    result = build(make_book(tmp_path / "book", lesson))
    assert result.returncode != 0
    assert "boom-42" in result.stdout + result.stderr


def test_one_build_runs_every_page_and_lists_every_failed_one(tmp_path):
    # The good page comes after a failing one: the build must go on and execute it.
    first = LESSON_HEADER + code_cell("x = 1") + code_cell("raise RuntimeError('boom-first')")
    good = LESSON_HEADER + code_cell("print('good:', 6 * 7)")
    second = LESSON_HEADER + code_cell("def f():\n    raise ValueError('boom-second')\nf()")
    root = make_book_of(tmp_path / "book",
                        {"L01_First": first, "L02_Good": good, "L03_Second": second})
    result = build(root)
    output = ANSI_ESCAPE.sub("", result.stdout + result.stderr)
    assert result.returncode != 0
    assert "/L02_Good.md: Executed notebook" in output
    assert "good: 42" in (root / "_build" / "html" / "lessons" / "L02_Good.html").read_text()
    # At the end, after every page executed: each failed page, its cell and its exception.
    failed = output[output.index("Pages whose execution failed (2"):]
    assert "lessons/L01_First: cell In[2] `raise RuntimeError('boom-first')`: " \
           "RuntimeError: boom-first" in failed
    assert "lessons/L03_Second: cell In[1] `def f(): ...`: ValueError: boom-second" in failed
    assert "L02_Good" not in failed
    # CI's checks read the same list from the log, to end it with each failed page.
    assert check_build().failed_pages(result.stdout + result.stderr) == {
        "lessons/L01_First": "cell In[2] `raise RuntimeError('boom-first')`: "
                             "RuntimeError: boom-first",
        "lessons/L03_Second": "cell In[1] `def f(): ...`: ValueError: boom-second"}

    # The next build executes the failed pages again (they were not cached) and fails again;
    # the good page is served from the cache.
    again = build(root)
    assert again.returncode != 0
    assert set(re.findall(r"/(\w+)\.md: Executing notebook", again.stdout)) == {
        "L01_First", "L03_Second"}
    assert "boom-first" in again.stdout and "boom-second" in again.stdout

    # Fixed, they pass and show their new outputs.
    (root / "lessons" / "L01_First.md").write_text(LESSON_HEADER + code_cell("print('fixed 1')"))
    (root / "lessons" / "L03_Second.md").write_text(LESSON_HEADER + code_cell("print('fixed 3')"))
    assert executed(build(root)) == {"L01_First", "L03_Second"}
    assert "fixed 3" in (root / "_build" / "html" / "lessons" / "L03_Second.html").read_text()


def test_a_failure_is_described_by_its_cell_and_exception():
    sys.path.insert(0, str(REPO / "book" / "_ext"))
    from llmfs_book import describe_failure

    error = ("nbclient.exceptions.CellExecutionError: An error occurred while executing the "
             "following cell:\n------------------\nx = 1\nraise KeyError('k')\n"
             "------------------\n\n\x1b[31mKeyError\x1b[39m  Traceback (most recent call last)\n"
             "Cell In[3], line 2\n----> 2 raise KeyError('k')\n\n\x1b[31mKeyError\x1b[39m: 'k'\n")
    assert describe_failure(error) == "cell In[3] `x = 1 ...`: KeyError: 'k'"
    timeout = ("nbclient.exceptions.CellTimeoutError: A cell timed out while it was being "
               "executed, after 300 seconds.\nThe message was: Cell execution timed out.\n"
               "Here is a preview of the cell contents:\n-------------------\n"
               "import time\ntime.sleep(999)\n-------------------\n")
    assert describe_failure(timeout) == (
        "a cell `import time ...`: CellTimeoutError: A cell timed out while it was being "
        "executed, after 300 seconds.")


def test_a_warning_fails_the_build(tmp_path):
    # A glue reference to a name no cell defines makes Sphinx warn; the build must not pass.
    lesson = LESSON_HEADER + code_cell("x = 1") + "The answer is {glue:text}`undefined_name`.\n"
    result = build(make_book(tmp_path / "book", lesson))
    assert result.returncode != 0
    assert "undefined_name" in result.stdout + result.stderr


def test_a_good_lesson_builds_and_shows_its_outputs(tmp_path):
    lesson = LESSON_HEADER + code_cell("print('sum =', sum(range(10)))")
    root = make_book(tmp_path / "book", lesson)
    result = build(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sum = 45" in lesson_html(root)


def test_changing_the_package_re_executes_lessons(tmp_path):
    lesson = LESSON_HEADER + code_cell("import toypkg\nprint(f'VALUE={toypkg.VALUE}')")
    root = make_book(tmp_path / "book", lesson)

    first = build(root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Executing notebook" in first.stdout
    assert "VALUE=1" in lesson_html(root)

    # Nothing changed: the cached outputs are used, nothing executes.
    second = build(root)
    assert second.returncode == 0
    assert "Executing notebook" not in second.stdout

    # The package changed but the lesson did not: the lesson must execute again.
    (root / "toypkg" / "__init__.py").write_text("VALUE = 2\n")
    third = build(root)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "Executing notebook" in third.stdout
    html = lesson_html(root)
    assert "VALUE=2" in html and "VALUE=1" not in html

    # Back to the first version: its cache is still there, so nothing executes.
    (root / "toypkg" / "__init__.py").write_text("VALUE = 1\n")
    fourth = build(root)
    assert fourth.returncode == 0
    assert "Executing notebook" not in fourth.stdout
    assert "VALUE=1" in lesson_html(root)
    # The page was served from the cache; its downloadable notebook has the outputs too.
    for folder in ("jupyter_execute", "html/_sources"):
        download = (root / "_build" / folder / "lessons" / "L01_Test.ipynb").read_text()
        assert "VALUE=1" in download, folder
    record = root / "_build" / ".jupyter_cache" / "llmfs-deps" / "lessons__L01_Test.json"
    assert "toypkg" in json.loads(record.read_text())  # what the lesson imported, recorded


def test_a_change_re_executes_the_lessons_that_import_it_and_no_other(tmp_path):
    uses_a = LESSON_HEADER + code_cell("from toypkg import a\nprint(f'A={a.VALUE}')")
    root = make_book(tmp_path / "book", uses_a)
    (root / "toypkg" / "a.py").write_text("VALUE = 1\n")
    # b imports c inside a function: a change to c must still reach the lessons that use b.
    (root / "toypkg" / "b.py").write_text("def value():\n    from toypkg import c\n"
                                          "    return c.VALUE\n")
    (root / "toypkg" / "c.py").write_text("VALUE = 10\n")
    uses_b = LESSON_HEADER + code_cell("import toypkg.b\nprint(f'B={toypkg.b.value()}')")
    (root / "lessons" / "L02_Other.md").write_text(uses_b)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: lessons/L01_Test\n  - file: lessons/L02_Other\n")

    assert executed(build(root)) == {"L01_Test", "L02_Other"}
    assert executed(build(root)) == set()  # nothing changed: both served from the cache
    (root / "toypkg" / "c.py").write_text("VALUE = 20\n")  # only L02 reaches c (through b)
    assert executed(build(root)) == {"L02_Other"}
    assert "B=20" in (root / "_build" / "html" / "lessons" / "L02_Other.html").read_text()
    (root / "toypkg" / "a.py").write_text("VALUE = 2\n")
    assert executed(build(root)) == {"L01_Test"}
    assert "A=2" in lesson_html(root)
    (root / "toypkg" / "__init__.py").write_text("VALUE = 3\n")  # every import runs __init__
    assert executed(build(root)) == {"L01_Test", "L02_Other"}


def test_a_page_that_reads_every_lesson_re_executes_when_a_lesson_changes(tmp_path):
    root = make_book(tmp_path / "book", LESSON_HEADER + code_cell("print('lesson')"))
    page = LESSON_HEADER.replace("# A lesson", "# A map") + code_cell(
        "from pathlib import Path\nprint(len(Path('../lessons/L01_Test.md').read_text()))")
    (root / "book" / "map.md").write_text(page)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   "  - file: book/map\n  - file: lessons/L01_Test\n")

    assert executed(build(root)) == {"map", "L01_Test"}
    assert executed(build(root)) == set()
    lesson = root / "lessons" / "L01_Test.md"
    lesson.write_text(lesson.read_text() + "More prose.\n")  # not its code: the lesson is cached
    assert executed(build(root)) == {"map"}  # but the page that reads it runs again


def test_math_is_rendered_by_a_copy_of_mathjax_served_with_the_site(tmp_path):
    lesson = LESSON_HEADER + "Scaled by $1/\\sqrt{d_h}$.\n\n" + code_cell("x = 1")
    root = make_book(tmp_path / "book", lesson)
    result = build(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = lesson_html(root)
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, re.I)
    assert scripts and all(not s.startswith(("http:", "https:", "//")) for s in scripts), scripts
    entry = root / "_build" / "html" / "lessons" / scripts[0].split("?")[0]
    assert entry.resolve().is_file() and entry.stat().st_size > 500_000  # the real bundle
    fonts = root / "_build" / "html" / "_static" / "mathjax" / "es5" / "output" / "chtml" / "fonts"
    assert any(fonts.rglob("*.woff"))  # the fonts it loads next, also local
    # and the theme's pages start in a valid light/dark mode, with each script once
    assert 'data-theme="auto"' in html
    assert html.count("const THEBE_JS_URL") <= 1
