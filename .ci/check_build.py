"""Checks on a finished cold build that Sphinx itself cannot make.

Usage: python .ci/check_build.py BUILD_LOG

- every lesson in lessons/ was executed in this build, within its time budget;
- every lesson produced its page (a lesson missing from _toc.yml would silently not);
- every figure a lesson glues is an image on its page, not the text "<Figure size ...>"
  that matplotlib leaves when figures cannot be rendered;
- a learner running the lesson in Jupyter sees the figures too (glue(..., display=False)
  alone hides them there): the executed notebook has a visible image for each;
- no cell printed a warning to stderr, even where the page hides stderr (progress bars);
- the book's model, trained by Lesson 8 in this cold build, met its target on this machine
  (issue #4: at most 1.60 nats per character in at most 5 minutes of training). The lesson
  itself asserts only the loss: a learner's slower laptop may take longer, and that is fine.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LESSON_BUDGET_SECONDS = 60.0  # per lesson, on the 2-core build machine (issues #2, #3)
# Lessons that train for longer, with the issue that set their budget. L07 trains the last two
# rows of the loss progression; L08 trains the book's model (at most 5 minutes) once per cold
# build, which Lessons 9 and 10 then load from the cache.
LESSON_BUDGETS = {"L07_Assembling_the_GPT": 240.0, "L08_Training_the_LLM": 480.0}  # issue #4
BOOK_MODEL_LESSON = "L08_Training_the_LLM"
BOOK_MODEL_MAX_SECONDS = 300.0
BOOK_MODEL_MAX_LOSS = 1.60  # nats per character on the validation split


def book_model_problems(stdout: str) -> list[str]:
    """Lesson 8 prints "... trained in S s (trained now)" and "... = L nats per character"."""
    trained = re.search(r"trained in (\d+) s \((trained now|loaded from the cache)\)", stdout)
    loss = re.search(r"= ([\d.]+) nats per character", stdout)
    if trained is None or loss is None:
        return ["the book model's training time or loss is missing from the lesson's output"]
    problems = []
    if trained.group(2) != "trained now":
        problems.append("the book's model was loaded from a cache, not trained in this build")
    if float(trained.group(1)) > BOOK_MODEL_MAX_SECONDS:
        problems.append(f"the book's model trained in {trained.group(1)} s > 300 s")
    if float(loss.group(1)) > BOOK_MODEL_MAX_LOSS:
        problems.append(f"the book's model reached {loss.group(1)} nats/char > 1.60")
    print(f"book model: {loss.group(1)} nats per character in {trained.group(1)} s")
    return problems

REPO = Path(__file__).resolve().parents[1]


def main(log_path: str) -> int:
    log = Path(log_path).read_text(errors="replace")
    executed = {
        Path(path).stem: float(seconds)
        for path, seconds in re.findall(r"(\S+\.md): Executed notebook in ([\d.]+) seconds", log)
    }
    problems = []
    for lesson in sorted((REPO / "lessons").glob("L*.md")):
        name = lesson.stem
        seconds = executed.get(name)
        if seconds is None:
            problems.append(f"{name}: not executed in this build")
        elif seconds > (budget := LESSON_BUDGETS.get(name, LESSON_BUDGET_SECONDS)):
            problems.append(f"{name}: executed in {seconds:.1f} s > {budget:.0f} s")
        page = REPO / "_build" / "html" / "lessons" / f"{name}.html"
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
        notebook = REPO / "_build" / "jupyter_execute" / "lessons" / f"{name}.ipynb"
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
            problems += [f"{name}: {p}" for p in book_model_problems(stdout)]
        status = f"executed in {seconds:.1f} s" if seconds is not None else "not executed"
        print(f"{name}: {status}, {images} images for {figures} glued figures")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
