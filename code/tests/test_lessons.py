"""Structural checks every lesson meets (see book/contributing.md), before the build runs it.

The build proves a lesson executes; these checks catch what an execution cannot: a lesson left
out of the table of contents (it would silently not be built), missing exercises, figures,
glued numbers or references, and lessons importing from each other.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "code" / "tools"))
import lessons  # noqa: E402  (code/tools/lessons.py: the checker contributors run)

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


@pytest.mark.parametrize("lesson", [*LESSONS, lessons.TEMPLATE], ids=lambda p: p.stem)
def test_lesson_meets_the_checklist(lesson: Path):
    assert lessons.check_lesson(lesson.read_text()) == []


def test_the_checker_finds_what_a_lesson_misses():
    text = lessons.TEMPLATE.read_text()
    assert lessons.check_lesson(text.replace("## Summary", "## In short")) == ["no summary"]
    assert lessons.check_lesson(text.replace("show_source(", "print(")) == [
        "the lesson does not show the package's real source"]
    long = text + "\n" + "word " * lessons.MAX_PROSE_WORDS
    assert lessons.check_lesson(long)[-1].endswith(
        f"words of prose; one sitting is at most {lessons.MAX_PROSE_WORDS}")
    assert "imports another lesson" in lessons.check_lesson(text + "\nfrom L01_x import y\n")


def test_prose_words_skips_code_and_counts_directives():
    text = "\n".join([
        "Intro has three.", "```{code-cell} ipython3", "x = 1  # not prose", "```",
        "```{dropdown} Solution", ":open:", "Hidden prose counts.", "```python",
        "print('code')", "```", "```", "(label)=", "+++", "End.",
    ])  # fmt: skip
    assert lessons.prose_words(text) == 3 + 1 + 3 + 1


def test_new_lesson_starts_a_lesson_that_passes_the_checks(tmp_path):
    for path in ("_toc.yml", "book/intro.md", "lessons"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "_toc.yml").write_text((REPO / "_toc.yml").read_text())
    (tmp_path / "book" / "intro.md").write_text((REPO / "book" / "intro.md").read_text())
    (tmp_path / "lessons").mkdir(exist_ok=True)
    path = lessons.new_lesson("L11_Mixture_of_Experts", "Mixture of experts",
                              "Routing tokens to experts.", repo=tmp_path)
    assert path == tmp_path / "lessons" / "L11_Mixture_of_Experts.md"
    assert lessons.check_lesson(path.read_text()) == []
    assert path.read_text().splitlines()[14] == "# Mixture of experts"
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    lesson_part = next(p for p in toc["parts"] if any(
        c["file"].startswith("lessons/L01") for c in p["chapters"]))
    assert lesson_part["chapters"][-1] == {"file": "lessons/L11_Mixture_of_Experts"}
    assert lesson_part["chapters"][-2]["file"] == "lessons/L10_1_Fine_tuning_and_Chat"
    assert len(lesson_part["chapters"][-2]["sections"]) == 2  # Lesson 10's pages stay its own
    intro = (tmp_path / "book" / "intro.md").read_text()
    assert ":::{grid-item-card} 11 · Mixture of experts\n:link: /lessons/L11_Mixture_of_Experts" \
        in intro
    with pytest.raises(FileExistsError):
        lessons.new_lesson("L11_Mixture_of_Experts", "Again", "", repo=tmp_path)
    with pytest.raises(ValueError, match="name must look like"):
        lessons.new_lesson("moe", "Mixture of experts", "", repo=tmp_path)


def test_check_command_reports_and_fails(tmp_path, capsys):
    bad = tmp_path / "L99_Bad.md"
    bad.write_text("# Nothing here\n")
    assert lessons.main(["check", str(bad)]) == 1
    assert "no learning objectives" in capsys.readouterr().out
    assert lessons.main(["check", str(lessons.TEMPLATE)]) == 0


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_is_one_sitting(lesson: Path):
    words = lessons.prose_words(lesson.read_text())
    assert words <= lessons.MAX_PROSE_WORDS, (
        f"{lesson.name} has {words} words of prose; one sitting is at most "
        f"{lessons.MAX_PROSE_WORDS}")


@pytest.mark.parametrize("lesson", [*LESSONS, lessons.TEMPLATE], ids=lambda p: p.stem)
def test_lesson_is_in_jupytext_format(lesson: Path):
    """A save from JupyterLab (Jupytext with the repository's jupytext.toml) changes nothing."""
    text = lesson.read_text()
    assert lessons.canonical(text) == text, "run: python code/tools/lessons.py format --fix"


def test_a_save_keeps_the_build_settings():
    text = lessons.canonical(lessons.TEMPLATE.read_text())
    assert "mystnb:\n  execution_timeout: 300\n" in text  # the front matter's cell timeout
    assert "jupytext_version" not in text
