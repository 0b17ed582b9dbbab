"""Checks on a finished cold build that Sphinx itself cannot make.

Usage: python .ci/check_build.py BUILD_LOG

Failures (the build is broken):
- a page's execution failed (a cell raised or timed out): listed, each with its failing cell and
  exception, from the list the book's Sphinx extension prints at the end of the build, so a CI
  log ends with every failed page, not only the first;
- a lesson (or a page under results/, which reads what the lessons trained) was not executed
  in this build, or produced no page (a page missing from _toc.yml would silently not);
- a figure a lesson glues is not an image on its page (matplotlib leaves the text
  "<Figure size ...>" when figures cannot be rendered), or a learner running the lesson in
  Jupyter would not see it (glue(..., display=False) alone hides it there);
- a cell printed a warning to stderr, even where the page hides stderr (progress bars);
- the book's model, trained by Lesson 8 in this cold build, missed its loss target (at most 1.60
  nats per character; the lesson asserts it too).

Reported, never failed (a slow or busy machine must not fail CI): each lesson's execution time
against its budget, and the book's model's training time against its five minutes
(code/benchmarks/lesson_times.py holds the budgets), headed by the machine that measured them
(code/benchmarks/machine.py: CPU, AVX2/AVX-512/AMX, torch's CPU capability, training dtype).
The table goes to stdout and, when CI provides one, to the job summary ($GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code" / "benchmarks"))
from lesson_times import BOOK_MODEL_BUDGET_SECONDS, table, times_from_log  # noqa: E402

BOOK_MODEL_LESSON = "L08_Training_the_LLM"
BOOK_MODEL_MAX_LOSS = 1.60  # nats per character on the validation split


def book_model_problems(stdout: str) -> tuple[list[str], str]:
    """Lesson 8 prints "... trained in S s (trained now)" and "... = L nats per character"."""
    trained = re.search(r"trained in (\d+) s \((trained now|loaded from the cache)\)", stdout)
    loss = re.search(r"= ([\d.]+) nats per character", stdout)
    if trained is None or loss is None:
        return ["the book model's training time or loss is missing from the lesson's output"], ""
    problems = []
    if trained.group(2) != "trained now":
        problems.append("the book's model was loaded from a cache, not trained in this build")
    if float(loss.group(1)) > BOOK_MODEL_MAX_LOSS:
        problems.append(f"the book's model reached {loss.group(1)} nats/char > 1.60")
    seconds = float(trained.group(1))
    within = "within" if seconds <= BOOK_MODEL_BUDGET_SECONDS else "OVER"
    line = (f"book model: {loss.group(1)} nats per character in {seconds:.0f} s of training "
            f"({within} its {BOOK_MODEL_BUDGET_SECONDS:.0f} s budget)")
    return problems, line

REPO = Path(__file__).resolve().parents[1]
FAILED_PAGES = "Pages whose execution failed"  # how book/_ext/llmfs_book.py heads its list


def failed_pages(log: str) -> dict[str, str]:
    """``{docname: failing cell and exception}`` from the list the build printed at its end."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log)  # Sphinx colours its output
    failed = {}
    for block in re.finditer(rf"^{FAILED_PAGES} .*\n((?:  \S.*\n?)*)", text, re.M):
        for line in block.group(1).splitlines():
            docname, _, failure = line.strip().partition(": ")
            failed[docname] = failure
    return failed


def main(log_path: str) -> int:
    log = Path(log_path).read_text(errors="replace")
    executed = times_from_log(log)
    failed = failed_pages(log)
    problems, book_line = [], ""
    # Every lesson, and the pages after them that read what the lessons trained.
    pages = [*sorted((REPO / "lessons").glob("L*.md")), *sorted((REPO / "results").glob("*.md"))]
    for lesson in pages:
        name, folder = lesson.stem, lesson.parent.name
        if f"{folder}/{name}" in failed:  # its notebook stops at the failure: nothing to check
            print(f"{name}: execution failed")
            continue
        seconds = executed.get(name)
        if seconds is None:
            problems.append(f"{name}: not executed in this build")
        page = REPO / "_build" / "html" / folder / f"{name}.html"
        if not page.is_file():
            problems.append(f"{name}: page {page} was not built")
            continue
        html = page.read_text()
        figures = len(re.findall(r"^```\{glue:figure\}", lesson.read_text(), re.M))
        images = len(re.findall(r"<img [^>]*src=\"[^\"]+\.png\"", html))
        if "&lt;Figure size" in html:
            problems.append(f"{name}: a figure was rendered as text, not as an image")
        if images < figures:
            problems.append(f"{name}: {figures} glued figures but only {images} images on the page")
        notebook = REPO / "_build" / "jupyter_execute" / folder / f"{name}.ipynb"
        outputs = [
            output
            for cell in json.loads(notebook.read_text())["cells"]
            for output in cell.get("outputs", [])
        ]
        visible = sum("image/png" in output.get("data", {}) for output in outputs)
        # Progress bars go to stderr and a lesson may hide them from the page (remove-stderr),
        # but a warning must not hide there: the executed notebook still has every output.
        for output in outputs:
            text = "".join(output.get("text", "")) if output.get("name") == "stderr" else ""
            if re.search(r"\w*Warning\b|^WARNING", text, re.M):
                problems.append(f"{name}: a warning on stderr: {text.strip()[:200]}")
        if visible < figures:
            problems.append(f"{name}: the notebook shows {visible} images for {figures} figures")
        if name == BOOK_MODEL_LESSON:
            stdout = "".join(
                "".join(o.get("text", "")) for o in outputs if o.get("name") == "stdout"
            )
            book_problems, book_line = book_model_problems(stdout)
            problems += [f"{name}: {p}" for p in book_problems]
        status = f"executed in {seconds:.1f} s" if seconds is not None else "not executed"
        print(f"{name}: {status}, {images} images for {figures} glued figures")
    report = f"## Lesson execution times (reported, not enforced)\n\n{table(executed)}\n"
    report += f"\n{book_line}\n" if book_line else ""
    print(report, flush=True)  # before the failures on stderr, so they end the log
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as summary:
            summary.write(report)
    # The pages that failed to execute last, so that a failed build's log ends with them.
    problems += [f"{docname}: execution failed at {failure}" for docname, failure in failed.items()]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
