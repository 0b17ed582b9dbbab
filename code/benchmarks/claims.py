"""Does every claim of a lesson hold on another CPU and under other seeds? Measure its margin.

Usage:
    python code/benchmarks/claims.py [LESSON ...] [--seeds N] [--common-cpu] [--all]

Runs each lesson (a path, a file stem or a prefix such as ``L05``; by default every page of the
book that executes, in reading order) top to bottom in a fresh kernel, once per seed offset
0..N (``LLMFS_SEED_OFFSET``, :mod:`llm_from_scratch.seeding`), and with ``--common-cpu`` on the
floating-point path of GitHub's runners and most laptops: float32 instead of bfloat16 and AVX2
kernels instead of AVX-512 (the switches are in :data:`COMMON_CPU`; the run checks that torch
took them). Each run (one numerics path and one offset) trains everything afresh in a scratch
model cache of its own under ``_build/claims/``, which later invocations of the same run reuse
(``--fresh`` empties it), so that Lesson 9 alone can be measured again with the model Lesson 8
trained under the same perturbation.

Inside the kernel (``claims_probe.py``) every assert records the values it compares and then
goes on, so one run measures every claim of the lesson, failing or not. The report prints, for
each assert clause whose values differ between runs (``--all``: every clause), the values in
each run and the margin left (positive: the claim holds); then the glued numbers that differ;
then every failing clause and cell error. Exit status 1 when any claim or cell failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import COMMON_CPU  # noqa: E402
from machine import summary_line as machine_line  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "_build" / "claims"
PROBE = Path(__file__).resolve().parent / "claims_probe.py"

DEFAULT_CELL_TIMEOUT = 300  # _config.yml's execute.timeout
TIMEOUT_FACTOR = 4  # the common-CPU path is slower; timeouts here only guard against hangs


# ----------------------------------------------------------------------------- pages and runs


def book_pages() -> list[Path]:
    """The executed pages in reading order: the lessons, then the pages under results/."""
    toc = (REPO / "_toc.yml").read_text()
    files = re.findall(r"file:\s*((?:lessons|results)/\S+)", toc)
    return [REPO / f"{f}.md" for f in files]


def resolve_pages(names: list[str]) -> list[Path]:
    """Paths for ``names`` (paths, stems or prefixes such as ``L05``), in reading order."""
    pages = book_pages()
    if not names:
        return pages
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in pages if p.stem == stem] or [
            p for p in pages if p.stem.startswith(stem)]
        if not matches:
            known = ", ".join(p.stem for p in pages)
            raise SystemExit(f"claims.py: no page matches {name!r}; pages: {known}")
        chosen += [m for m in matches if m not in chosen]
    return [p for p in pages if p in chosen]


def run_name(offset: int, common_cpu: bool) -> str:
    return f"{'common-cpu' if common_cpu else 'native'}-seed{offset}"


def run_environment(run_dir: Path, offset: int, common_cpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    for name in COMMON_CPU:
        env.pop(name, None)
    env.update(LLMFS_CACHE_DIR=str(run_dir / "cache"), LLMFS_SEED_OFFSET=str(offset),
               TORCHINDUCTOR_CACHE_DIR=str(run_dir / "inductor"), PYTHONHASHSEED="0")
    if common_cpu:
        env.update(COMMON_CPU)
    return env


# ----------------------------------------------------------------------------- one run


def cell_timeout(page: Path) -> int:
    found = re.search(r"execution_timeout:\s*(\d+)", page.read_text().split("\n---", 1)[0])
    return TIMEOUT_FACTOR * (int(found.group(1)) if found else DEFAULT_CELL_TIMEOUT)


def execute(page: Path, log: Path) -> dict:
    """Run ``page`` in a fresh kernel with the probe installed; what it recorded and raised."""
    import jupytext
    import nbclient
    import nbformat

    notebook = jupytext.read(page)
    probe = (f"import sys; sys.path.insert(0, {str(PROBE.parent)!r})\n"
             "import claims_probe; claims_probe.install(get_ipython()); del claims_probe")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(probe))
    os.environ["LLMFS_CLAIMS_LOG"] = str(log)
    log.unlink(missing_ok=True)
    client = nbclient.NotebookClient(notebook, timeout=cell_timeout(page), kernel_name="python3",
                                     allow_errors=True,
                                     resources={"metadata": {"path": str(page.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
        stopped = None
    except Exception as error:  # noqa: BLE001 - a timeout or dead kernel: report it, go on
        stopped = f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:200]}"
    seconds = time.perf_counter() - start
    recorded = json.loads(log.read_text()) if log.exists() else {"asserts": {}, "glued": {}}

    text = page.read_text()
    code_cells = [c for c in notebook.cells[1:] if c.cell_type == "code"]
    where = {}
    for index, cell in enumerate(code_cells, start=1):
        digest = hashlib.sha256(cell.source.encode()).hexdigest()[:16]
        offset = text.find(cell.source)
        where[digest] = (index, text.count("\n", 0, offset) + 1 if offset >= 0 else None)
    for entry in recorded["asserts"].values():
        index, first_line = where.get(entry["cell"], (None, None))
        entry["cell_index"] = index
        entry["file_line"] = first_line + entry["line"] - 1 if first_line else None
    errors = []
    for index, cell in enumerate(code_cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                digest = hashlib.sha256(cell.source.encode()).hexdigest()[:16]
                errors.append({"cell_index": index, "file_line": where[digest][1],
                               "error": f"{output['ename']}: {output['evalue']}"[:300]})
    if stopped:
        errors.append({"cell_index": None, "file_line": None, "error": stopped})
    return {"page": page.stem, "seconds": round(seconds, 1), "machine": machine_line(),
            "asserts": recorded["asserts"], "glued": recorded["glued"], "errors": errors}


def run(pages: list[Path], offset: int, common_cpu: bool) -> None:
    """One run, in this process (its environment already set): every page in order."""
    import torch

    name = run_name(offset, common_cpu)
    if common_cpu and torch.backends.cpu.get_cpu_capability() not in ("AVX2", "DEFAULT"):
        raise SystemExit(f"claims.py: ATEN_CPU_CAPABILITY=avx2 did not take effect (torch says "
                         f"{torch.backends.cpu.get_cpu_capability()}); the run would not be "
                         "on the common-CPU path")
    run_dir = OUT / name
    print(f"[{name}] {machine_line()}", flush=True)
    for page in pages:
        print(f"[{name}] {page.stem} ...", flush=True)
        result = execute(page, run_dir / f"{page.stem}.log.json")
        result["run"] = name
        (run_dir / f"{page.stem}.json").write_text(json.dumps(result, indent=1))
        failed = sum(1 for a in result["asserts"].values() for c in a["clauses"].values()
                     if not c["passed"])
        print(f"[{name}] {page.stem}: {result['seconds']:.0f} s, {len(result['asserts'])} asserts, "
              f"{failed} failing clauses, {len(result['errors'])} cell errors", flush=True)


# ----------------------------------------------------------------------------- the report


def fmt(value: object) -> str:
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def clause_cell(clause: dict | None) -> str:
    if clause is None:
        return "—"
    values = [fmt(v) for v in clause["values"] or []]
    if clause["op"] and len(values) == len(clause["op"]) + 1:
        pairs = zip(clause["op"], values[1:], strict=True)
        text = values[0] + "".join(f" {op} {v}" for op, v in pairs)
    else:  # a truth value, or the error a clause raised
        text = " ".join(values) or "?"
    if clause["margin"] is not None:
        text += f" (margin {clause['margin']:+.4g})"
    return text + ("" if clause["passed"] else " FAIL")


def report(pages: list[Path], runs: list[str], show_all: bool) -> int:
    """Print the table for ``pages`` over ``runs``; the number of failures found."""
    failures = 0
    for page in pages:
        results = {}
        for name in runs:
            path = OUT / name / f"{page.stem}.json"
            if path.exists():
                results[name] = json.loads(path.read_text())
        if not results:
            continue
        times = " | ".join(f"{n} {r['seconds']:.0f} s" for n, r in results.items())
        print(f"\n## {page.stem}  ({times})")
        keys = []
        for result in results.values():
            keys += [k for k in result["asserts"] if k not in keys]
        shown = stable = 0
        for key in sorted(keys, key=lambda k: next(
                (r["asserts"][k].get("file_line") or 0) for r in results.values()
                if k in r["asserts"])):
            entry = next(r["asserts"][key] for r in results.values() if key in r["asserts"])
            texts = list(entry["clauses"])
            for text in texts:
                clauses = {n: r["asserts"].get(key, {}).get("clauses", {}).get(text)
                           for n, r in results.items()}
                values = {json.dumps(c["values"]) if c else None for c in clauses.values()}
                failing = any(c is not None and not c["passed"] for c in clauses.values())
                missing = any(c is None for c in clauses.values())
                failures += failing
                if not (show_all or failing or missing or len(values) > 1):
                    stable += 1
                    continue
                shown += 1
                margins = [c["margin"] for c in clauses.values() if c and c["margin"] is not None]
                least = f"; least margin {min(margins):+.4g}" if margins else ""
                line = entry.get("file_line")
                print(f"- line {line}: `{text}`{least}")
                for name, clause in clauses.items():
                    print(f"    {name}: {clause_cell(clause)}")
        print(f"  ({shown} clauses shown; {stable} give the same values in every run)")
        names = []
        for result in results.values():
            names += [k for k in result["glued"] if k not in names]
        varying = []
        for name in names:
            values = [r["glued"].get(name) for r in results.values()]
            if len({json.dumps(v) for v in values}) > 1:
                varying.append(f"{name}: " + " | ".join(fmt(v) for v in values))
        if varying:
            print(f"  glued values that differ between runs ({len(varying)} of {len(names)}):")
            for line in varying:
                print(f"    {line}")
        for name, result in results.items():
            for error in result["errors"]:
                failures += 1
                print(f"  CELL ERROR in {name}, line {error['file_line']}: {error['error']}")
    return failures


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", metavar="LESSON",
                        help="lesson paths, stems or prefixes (default: every executed page)")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="also run with seed offsets 1..N (default 0: only the book's seeds)")
    parser.add_argument("--common-cpu", action="store_true",
                        help="run on the common-CPU path: float32, AVX2 kernels")
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="runs to execute at once (each is one process; default 1)")
    parser.add_argument("--report-only", action="store_true",
                        help="print the report from the runs already recorded; run nothing")
    parser.add_argument("--fresh", action="store_true",
                        help="empty each run's scratch model cache first (retrain everything)")
    parser.add_argument("--all", action="store_true",
                        help="show every assert clause, not only those whose values differ")
    parser.add_argument("--run-one", nargs=2, metavar=("OFFSET", "COMMON_CPU"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seeds < 0:
        parser.error(f"--seeds must be 0 or more, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    pages = resolve_pages(args.lessons)

    if args.run_one:
        run(pages, int(args.run_one[0]), args.run_one[1] == "1")
        return 0

    offsets = range(args.seeds + 1)
    runs = [run_name(k, args.common_cpu) for k in offsets]
    if not args.report_only:
        print(f"# claims: {len(pages)} page(s) x {len(runs)} run(s) on {machine_line()}")
        pending = []
        for offset in offsets:
            run_dir = OUT / run_name(offset, args.common_cpu)
            if args.fresh:
                shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, *map(str, pages), "--run-one", str(offset),
                       "1" if args.common_cpu else "0"]
            pending.append((command, run_environment(run_dir, offset, args.common_cpu)))
        active: list[subprocess.Popen] = []
        while pending or active:
            while pending and len(active) < args.jobs:
                command, env = pending.pop(0)
                active.append(subprocess.Popen(command, env=env, cwd=REPO))
            time.sleep(1)
            for process in [p for p in active if p.poll() is not None]:
                active.remove(process)
                if process.returncode:
                    print(f"claims.py: a run exited with status {process.returncode}")
    print(f"\n# Claims: every assert clause and glued value, per run ({', '.join(runs)})")
    failures = report(pages, runs, args.all)
    print(f"\n{failures} failing clause(s) or cell error(s)" if failures
          else "\nevery claim held in every run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
