"""Each lesson's execution time against its budget: measured and reported, never a CI failure.

Usage:
    python code/benchmarks/lesson_times.py BUILD_LOG      # times from a jupyter-book build log
    python code/benchmarks/lesson_times.py [LESSON ...]   # run lessons now, a fresh kernel each

The budgets are the book's promise for a 2-core laptop CPU: about a minute a lesson, more for
the two that train (Lesson 7 trains the last rows of the loss progression, Lesson 8 the book's
model, which must train in at most five minutes). A slow or busy machine exceeds them and is
reported, not failed; a hang is caught by the cell timeouts in the lessons' front matter, which
are several times these budgets.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DEFAULT_BUDGET_SECONDS = 60.0
BUDGETS_SECONDS = {"L07_Assembling_the_GPT": 180.0, "L08_Training_the_LLM": 660.0,
                   "L09_Inference_and_Sampling": 90.0, "L10_1_Fine_tuning_and_Chat": 180.0,
                   "L10_2_RLHF_with_PPO": 180.0, "L10_3_DPO_and_GRPO": 180.0}
BOOK_MODEL_BUDGET_SECONDS = 300.0  # the book's model's training, inside Lesson 8


def budget(lesson: str) -> float:
    return BUDGETS_SECONDS.get(lesson, DEFAULT_BUDGET_SECONDS)


def times_from_log(log: str) -> dict[str, float]:
    """``{lesson: seconds}`` from the lines myst-nb prints as it executes each notebook."""
    return {
        Path(path).stem: float(seconds)
        for path, seconds in re.findall(r"(\S+\.md): Executed notebook in ([\d.]+) seconds", log)
    }


def execute(lesson: Path) -> float:
    """Run a lesson top to bottom in a fresh kernel, as a learner would; its wall time."""
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(lesson)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(lesson.parent)}}).execute()
    return time.perf_counter() - start


def table(times: dict[str, float], machine: str | None = None) -> str:
    """A Markdown table: lesson, time, budget, and whether it fit; headed by the machine that
    measured the times (``machine``, by default this one: :func:`machine.summary_line`)."""
    if machine is None:
        from machine import summary_line  # beside this file, like the scripts that import it

        machine = summary_line()
    rows = [f"Measured on: {machine}", "",
            "| Lesson | Time (s) | Budget (s) | |", "|---|---:|---:|---|"]
    for name, seconds in sorted(times.items()):
        fits = "within budget" if seconds <= budget(name) else "**over budget**"
        rows.append(f"| {name} | {seconds:.1f} | {budget(name):.0f} | {fits} |")
    return "\n".join(rows)


def main(args: list[str]) -> int:
    if len(args) == 1 and not args[0].endswith(".md") and Path(args[0]).is_file():
        times = times_from_log(Path(args[0]).read_text(errors="replace"))
    else:
        lessons = [Path(a) for a in args] or sorted((REPO / "lessons").glob("L*.md"))
        times = {}
        for lesson in lessons:
            times[lesson.stem] = execute(lesson)
            print(f"{lesson.stem}: {times[lesson.stem]:.1f} s", flush=True)
    print(table(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
