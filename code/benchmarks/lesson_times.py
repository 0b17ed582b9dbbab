"""Each lesson's execution time against its budget: measured and reported, never a CI failure.

Usage:
    python code/benchmarks/lesson_times.py BUILD_LOG      # times from a jupyter-book build log
    python code/benchmarks/lesson_times.py [LESSON ...]   # run lessons now, a fresh kernel each
    python code/benchmarks/lesson_times.py --cold --common-cpu L07 L08   # cold, as on AVX2

``--cold`` gives the run empty caches of trained models and of compiled kernels, as a fresh
clone has; ``--common-cpu`` runs the kernels on the common-CPU path (float32, AVX2 kernels).

The budgets are the book's promise for a 2-core laptop CPU: about a minute a lesson, more for
the two that train (Lesson 7 trains the last rows of the loss progression, Lesson 8 the book's
model, which must train in at most five minutes). A slow or busy machine exceeds them and is
reported, not failed; a hang is caught by the cell timeouts in the lessons' front matter, which
are several times these budgets.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import COMMON_CPU  # noqa: E402

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
        from machine import summary_line

        machine = summary_line()
    rows = [f"Measured on: {machine}", "",
            "| Lesson | Time (s) | Budget (s) | |", "|---|---:|---:|---|"]
    for name, seconds in sorted(times.items()):
        fits = "within budget" if seconds <= budget(name) else "**over budget**"
        rows.append(f"| {name} | {seconds:.1f} | {budget(name):.0f} | {fits} |")
    return "\n".join(rows)


def resolve(name: str) -> list[Path]:
    """The lessons ``name`` means: a path, a stem, or a prefix (``L08``; ``L10``: its parts)."""
    if Path(name).is_file():
        return [Path(name)]
    matches = sorted((REPO / "lessons").glob(f"{Path(name).stem}*.md"))
    if not matches:
        raise SystemExit(f"lesson_times.py: no lesson matches {name!r}")
    return matches


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="a build log, or lessons (default: all)")
    parser.add_argument("--cold", action="store_true",
                        help="empty caches of trained models and compiled kernels")
    parser.add_argument("--common-cpu", action="store_true",
                        help="run on the common-CPU path: float32, AVX2 kernels")
    args = parser.parse_args(argv)
    if args.common_cpu:  # the kernels inherit the environment; they start after this
        os.environ.update(COMMON_CPU)
    if args.cold:
        cold = tempfile.mkdtemp(prefix="lesson-times-")
        os.environ.update(LLMFS_CACHE_DIR=f"{cold}/cache",
                          TORCHINDUCTOR_CACHE_DIR=f"{cold}/kernels")
    names = args.lessons
    if len(names) == 1 and not names[0].endswith(".md") and Path(names[0]).is_file():
        times = times_from_log(Path(names[0]).read_text(errors="replace"))
    else:
        lessons = [p for n in names for p in resolve(n)] or sorted((REPO / "lessons").glob("L*.md"))
        times = {}
        for lesson in lessons:
            times[lesson.stem] = execute(lesson)
            print(f"{lesson.stem}: {times[lesson.stem]:.1f} s", flush=True)
    print(table(times))
    if args.cold:
        shutil.rmtree(cold, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
