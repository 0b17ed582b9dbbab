"""The lesson checker and the command that starts a new lesson, for contributors.

    python code/tools/lessons.py check                 # every lesson (and the template)
    python code/tools/lessons.py check lessons/L03_The_Attention_Mechanism.md
    python code/tools/lessons.py lint                  # ruff on every lesson's code cells
    python code/tools/lessons.py format [--fix]        # in Jupytext's format, as a save writes
    python code/tools/lessons.py new L11_Mixture_of_Experts --title "Mixture of experts" \\
        --summary "Routing tokens to experts."

``check`` applies the checklist of ``book/contributing.md`` (shape, figures, exercises, glued
numbers, one sitting) and prints what a lesson misses; it exits non-zero if any does. ``new``
copies ``book/templates/lesson.md`` to ``lessons/<name>.md``, lists it in ``_toc.yml`` after the
last lesson, and adds its card to the landing page; the new file passes ``check`` as it stands.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "book" / "templates" / "lesson.md"

#: One sitting: the prose a lesson asks a reader to read (code cells not counted).
MAX_PROSE_WORDS = 2500
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
FENCE = re.compile(r"^\s*(`{3,}|:{3,})\s*(\{[^}]*\})?\s*(\S*)")
NAME = re.compile(r"L\d\d(_\d)?_[A-Za-z0-9_]+")


def prose_words(text: str) -> int:
    """Words of prose: outside the front matter, code cells and code blocks, and option lines.

    Text inside directives (figure captions, admonitions, hidden solutions) is prose and counts.

    >>> prose_words("# Two words\\n```{code-cell} ipython3\\nx = [1, 2, 3]\\n```\\n")
    2
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


def check_lesson(text: str) -> list[str]:
    """What the lesson ``text`` misses of the checklist; an empty list when it meets it all."""
    problems = []
    try:
        front = yaml.safe_load(text.split("---", 2)[1])
        if front["kernelspec"]["name"] != "python3":
            problems.append("the kernelspec is not python3")
        if front["jupytext"]["text_representation"]["format_name"] != "myst":
            problems.append("the jupytext format is not myst")
        if "execution_timeout" not in front.get("mystnb", {}):
            problems.append("no per-lesson cell timeout (mystnb: execution_timeout)")
    except (IndexError, KeyError, TypeError, yaml.YAMLError):
        problems.append("no jupytext front matter (see book/templates/lesson.md)")
    required = [
        ("```{code-cell} ipython3" in text, "no code cells"),
        (re.search(r"^## Learning objectives", text, re.M), "no learning objectives"),
        (re.search(r"^## Summary", text, re.M), "no summary"),
        (re.search(r"^## References", text, re.M), "no references section"),
        ("{cite" in text, "no citation into the book's bibliography"),
        ("{glue:" in text and "glue(" in text, "no numbers glued into the prose"),
        ("show_source(" in text, "the lesson does not show the package's real source"),
        (len(re.findall(r"^```\{glue:figure\}", text, re.M)) >= 2, "fewer than two figures"),
        (len(re.findall(r"^### Exercise", text, re.M)) >= 3, "fewer than three exercises"),
        (len(re.findall(r"\{dropdown\} Solution", text))
         + len(re.findall(r'code_prompt_show: "?Show solution"?$', text, re.M)) >= 3,
         "fewer than three hidden solutions"),
        (not re.search(r"^\s*(from|import)\s+L\d\d", text, re.M), "imports another lesson"),
    ]  # fmt: skip
    problems += [message for ok, message in required if not ok]
    words = prose_words(text)
    if words > MAX_PROSE_WORDS:
        problems.append(f"{words} words of prose; one sitting is at most {MAX_PROSE_WORDS}")
    return problems


def new_lesson(name: str, title: str, summary: str, repo: Path = REPO) -> Path:
    """Start lesson ``name`` from the template: the file, its table-of-contents entry, its card."""
    if not NAME.fullmatch(name):
        raise ValueError(f"name must look like L11_Mixture_of_Experts (L, two digits, words), "
                         f"got {name!r}")
    if not title.strip():
        raise ValueError("title must not be empty")
    path = repo / "lessons" / f"{name}.md"
    if path.exists():
        raise FileExistsError(f"{path} exists; pick another name")
    toc_path, intro_path = repo / "_toc.yml", repo / "book" / "intro.md"
    toc, intro = toc_path.read_text(), intro_path.read_text()
    lines = toc.splitlines(keepends=True)
    chapter = re.compile(r"^( *)- file: lessons/L\d\d")
    indent = next(m.group(1) for m in map(chapter.match, lines) if m)  # Lesson 1's indent
    last = max(i for i, line in enumerate(lines)
               if (m := chapter.match(line)) and m.group(1) == indent)
    end = last + 1  # past the chapter's own sections, which are indented deeper
    while end < len(lines) and len(lines[end]) - len(lines[end].lstrip()) > len(indent):
        end += 1
    lines.insert(end, f"{indent}- file: lessons/{name}\n")
    toc = "".join(lines)
    number = int(name[1:3])
    card = (f":::{{grid-item-card}} {number} · {title}\n:link: /lessons/{name}\n"
            f":link-type: doc\n:footer: **Read the lesson →**\n\n{summary.strip()}\n:::\n\n")
    lesson_card = r"^:::\{grid-item-card\} .*\n:link: /lessons/L\d\d.*\n(?:.*\n)*?:::\n\n?"
    cards = list(re.finditer(lesson_card, intro, re.M))
    if not cards:
        raise ValueError(f"{intro_path} has no lesson cards to add this one after")
    at = cards[-1].end()
    intro = intro[:at] + ("\n" if not intro[:at].endswith("\n\n") else "") + card + intro[at:]
    path.write_text(TEMPLATE.read_text().replace("# The lesson's title", f"# {title}", 1))
    toc_path.write_text(toc)
    intro_path.write_text(intro)
    return path


#: Lesson cells are checked for real errors only (pyflakes: undefined or unused names, syntax);
#: notebook style (imports mid-lesson, long plotting lines) is the lesson's own business.
LINT_RULES = "F,E9"


def lint(paths: list[Path]) -> subprocess.CompletedProcess:
    """Run ruff on the code cells of ``paths``, each converted to a notebook as Jupyter runs it."""
    import jupytext  # the book's tool chain; imported here so ``check`` needs only PyYAML

    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            jupytext.write(jupytext.read(path), Path(tmp) / f"{Path(path).stem}.ipynb")
        ruff = Path(sys.executable).with_name("ruff")
        result = subprocess.run(
            [str(ruff), "check", "--no-cache", "--select", LINT_RULES, "--output-format",
             "concise", tmp], capture_output=True, text=True)
    result.stdout = result.stdout.replace(tmp + "/", "lessons/")
    return result


def jupytext_config():
    """The repository's ``jupytext.toml``, as JupyterLab applies it when it saves a lesson."""
    from jupytext.config import load_jupytext_configuration_file

    return load_jupytext_configuration_file(str(REPO / "jupytext.toml"))


def canonical(text: str) -> str:
    """``text`` as Jupytext writes it back after opening it as a notebook (what a save gives)."""
    import jupytext

    config = jupytext_config()
    return jupytext.writes(jupytext.reads(text, fmt="md:myst", config=config), fmt="md:myst",
                           config=config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check lessons against the checklist")
    check.add_argument("paths", nargs="*", type=Path)
    fmt = commands.add_parser("format", help="check (or --fix) that lessons are in Jupytext's "
                              "own MyST format, as a save from JupyterLab writes them")
    fmt.add_argument("paths", nargs="*", type=Path)
    fmt.add_argument("--fix", action="store_true", help="rewrite the files in that format")
    lint_command = commands.add_parser("lint", help="ruff on the lessons' code cells")
    lint_command.add_argument("paths", nargs="*", type=Path)
    new = commands.add_parser("new", help="start a new lesson from the template")
    new.add_argument("name", help="file name without .md, e.g. L11_Mixture_of_Experts")
    new.add_argument("--title", required=True)
    new.add_argument("--summary", default="What the reader builds in this lesson.")
    args = parser.parse_args(argv)
    if args.command == "new":
        try:
            path = new_lesson(args.name, args.title, args.summary)
        except (ValueError, FileExistsError) as error:
            parser.error(str(error))
        print(f"created {path.relative_to(REPO)}; listed in _toc.yml and on the landing page")
        return 0
    paths = args.paths or [*sorted((REPO / "lessons").glob("L*.md")), TEMPLATE]
    if args.command == "format":
        changed = [p for p in paths if canonical(Path(p).read_text()) != Path(p).read_text()]
        for path in changed:
            if args.fix:
                Path(path).write_text(canonical(Path(path).read_text()))
            print(f"{path}: " + ("rewritten" if args.fix else "not in Jupytext's format (--fix)"))
        return 1 if changed and not args.fix else 0
    if args.command == "lint":
        result = lint(paths)
        print(result.stdout + result.stderr, end="")
        return result.returncode
    failed = 0
    for path in paths:
        for problem in check_lesson(Path(path).read_text()):
            print(f"{path}: {problem}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
