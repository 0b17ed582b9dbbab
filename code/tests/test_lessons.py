"""Structural checks every lesson meets (see book/contributing.md), before the build runs it.

The build proves a lesson executes; these checks catch what an execution cannot: a lesson left
out of the table of contents (it would silently not be built), missing exercises, figures,
glued numbers or references, and lessons importing from each other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LESSONS = sorted((REPO / "lessons").glob("L*.md"))


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())

    def pages(entries: list[dict]) -> list[str]:  # a chapter's own pages are its "sections"
        return [f for e in entries for f in [e["file"], *pages(e.get("sections", []))]]

    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += pages(part.get("chapters", []))
    files += pages(toc.get("chapters", []))
    return files


def test_there_are_lessons():
    assert LESSONS, "no lessons found in lessons/"


def test_toc_lists_exactly_the_existing_pages():
    listed = toc_files()
    for file in listed:
        assert (REPO / f"{file}.md").is_file(), f"_toc.yml lists {file}, which does not exist"
    for lesson in LESSONS:
        assert f"lessons/{lesson.stem}" in listed, f"{lesson.name} is missing from _toc.yml"


def test_landing_page_links_every_lesson():
    intro = (REPO / "book" / "intro.md").read_text()
    for lesson in LESSONS:
        assert f":link: /lessons/{lesson.stem}" in intro, f"intro.md has no card for {lesson.name}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_meets_the_checklist(lesson: Path):
    text = lesson.read_text()
    front = yaml.safe_load(text.split("---", 2)[1])
    assert front["kernelspec"]["name"] == "python3"
    assert front["jupytext"]["text_representation"]["format_name"] == "myst"
    assert "execution_timeout" in front.get("mystnb", {}), "set a per-lesson cell timeout"

    assert "```{code-cell} ipython3" in text
    assert re.search(r"^## Learning objectives", text, re.M), "no learning objectives"
    assert re.search(r"^## Summary", text, re.M), "no summary"
    assert re.search(r"^## References", text, re.M), "no references section"
    assert "{cite" in text, "no citation into the book's bibliography"
    assert "{glue:" in text and "glue(" in text, "no numbers glued into the prose"
    assert "show_source(" in text, "the lesson does not show the package's real source"
    assert len(re.findall(r"^```\{glue:figure\}", text, re.M)) >= 2, "fewer than two figures"
    assert len(re.findall(r"^### Exercise", text, re.M)) >= 3, "fewer than three exercises"
    solutions = len(re.findall(r"\{dropdown\} Solution", text))
    solutions += len(re.findall(r'code_prompt_show: "Show solution"', text))
    assert solutions >= 3, "fewer than three hidden solutions"
    assert not re.search(r"^\s*(from|import)\s+L\d\d", text, re.M), "imports another lesson"


#: One sitting: the prose a lesson asks a reader to read (code cells not counted).
MAX_PROSE_WORDS = 2500
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
FENCE = re.compile(r"^\s*(`{3,}|:{3,})\s*(\{[^}]*\})?\s*(\S*)")


def prose_words(text: str) -> int:
    """Words of prose: outside the front matter, code cells and code blocks, and option lines.

    Text inside directives (figure captions, admonitions, hidden solutions) is prose and counts.
    """
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    stack: list[tuple[str, bool]] = []  # open fences: (marker, is code)
    prose = []
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and stack and m.group(1) == stack[-1][0] and not m.group(2) and not m.group(3):
            stack.pop()
            continue
        if m and (m.group(2) or m.group(3) or not stack):
            directive, language = m.group(2) or "", m.group(3)
            is_code = directive.startswith("{code-cell") or directive == "{code-block}" or (
                not directive and bool(language)) or directive.startswith("{glue")
            stack.append((m.group(1), is_code and not directive.startswith("{glue:figure")))
            prose.append(language if directive and not is_code else "")
            continue
        if any(code for _, code in stack):
            continue
        if re.match(r"^\s*:[\w-]+:", line) or re.match(r"^\(.*\)=\s*$", line) or line == "+++":
            continue
        prose.append(line)
    return len(WORD.findall("\n".join(prose)))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_is_one_sitting(lesson: Path):
    words = prose_words(lesson.read_text())
    assert words <= MAX_PROSE_WORDS, (
        f"{lesson.name} has {words} words of prose; one sitting is at most {MAX_PROSE_WORDS}")


def test_prose_words_skips_code_and_counts_directives():
    text = "\n".join([
        "Intro has three.", "```{code-cell} ipython3", "x = 1  # not prose", "```",
        "```{dropdown} Solution", ":open:", "Hidden prose counts.", "```python",
        "print('code')", "```", "```", "(label)=", "+++", "End.",
    ])  # fmt: skip
    assert prose_words(text) == 3 + 1 + 3 + 1
