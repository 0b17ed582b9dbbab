"""The package, tests and book extension are ruff-clean (so the README's test command lints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "check", "code", "book/_ext", ".ci"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lesson_code_cells_are_ruff_clean():
    sys.path.insert(0, str(REPO / "code" / "tools"))
    import lessons

    paths = [*sorted((REPO / "lessons").glob("L*.md")), lessons.TEMPLATE]
    result = lessons.lint(paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lesson_lint_catches_an_undefined_name(tmp_path):
    sys.path.insert(0, str(REPO / "code" / "tools"))
    import lessons

    bad = tmp_path / "L99_Bad.md"
    bad.write_text(lessons.TEMPLATE.read_text().replace("vocab_size = 8", "vocab_size = eight"))
    result = lessons.lint([bad])
    assert result.returncode == 1 and "F821" in result.stdout and "L99_Bad" in result.stdout
