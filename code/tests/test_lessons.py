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
