"""Sphinx extension: never serve lesson outputs computed with an older version of the package,
and never re-execute a lesson that a change cannot affect.

myst-nb's cache mode keys each executed notebook on the text of its own code cells. That is not
enough here: a lesson that calls ``BPETokenizer.train`` must be re-executed when the *package*
changes, even if the lesson's cells did not. And re-executing every lesson for any change is
wasteful: a change to ``generation.py`` cannot alter Lesson 1's outputs. So:

1. Each lesson depends on the package modules it imports, found two ways and joined: statically
   (its code cells' imports, closed over the package's own import graph, imports inside
   functions included) and at run time (the modules in ``sys.modules`` when it finished, which
   the last executed cell writes to ``_build/.jupyter_cache/llmfs-deps/``). A hash of those
   modules' source and of ``requirements.txt`` is written into a hidden last cell of the
   lesson as it is read, so it is part of the notebook's cache key: a lesson re-executes when
   one of *its* modules changes, and only then. Pages outside ``lessons/`` (the book's map
   reads the whole package and every lesson) depend on all of the package and the lessons.
2. A hash of the whole package is also a Sphinx config value that invalidates the environment,
   so Sphinx re-reads every page when the package changes (re-reading is what asks the cache);
   a lesson whose key is unchanged is then served from the cache without executing.

The trained models a lesson loads are keyed on the source of the package module that trains
them and of everything it imports (:func:`llm_from_scratch.artifacts.module_fingerprint`). A
lesson imports that module, so those modules are among the lesson's own: whenever a model's key
changes the lesson re-executes, and a lesson that re-executes never loads a model trained by
older code.

A cell error does not stop the build (``raise_on_error: false`` in ``_config.yml``): myst-nb
reports it as a warning, which ``--warningiserror`` turns into a failed build once every other
page has executed. At the end the extension lists each page whose execution failed, with its
failing cell and exception, and makes Sphinx read such a page again at the next build: myst-nb
caches only notebooks that executed without error, so the page executes again.

The extension also serves the math renderer from the site itself: MathJax 3, pinned in
``requirements.txt`` as a registry package (``django-static-mathjax`` ships its built files and
nothing else), is copied into ``_static/mathjax`` and the pages load it from there, so a learner
reading the local build offline sees typeset math instead of raw TeX.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import textwrap
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

from llm_from_scratch.artifacts import source_fingerprint
from llm_from_scratch.source import dependencies, import_graph, lesson_modules, module_file

logger = logging.getLogger(__name__)

MATHJAX_ENTRY = "tex-mml-chtml.js"  # the bundle Sphinx loads from a CDN by default


def _key_cache_on_package(app: Sphinx, config: Config) -> None:
    confdir = Path(app.confdir)
    roots = [(confdir / d).resolve() for d in config.llmfs_package_dirs]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"llmfs_package_dirs: {root} does not exist")
    # Every file counts but build by-products, so generated artifacts (trained models) must
    # live outside these folders.
    source_hash = source_fingerprint(*roots)
    config.llmfs_package_hash = source_hash

    base = config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache"
    base = Path(base)
    if not base.is_absolute():
        base = confdir / base
    base.mkdir(parents=True, exist_ok=True)
    config.nb_execution_cache_path = str(base)
    packages = [r for r in roots if r.is_dir()]
    app.llmfs = {  # what the source-read handler needs
        "confdir": confdir,
        "packages": {root: import_graph(root) for root in packages},
        "tools": source_fingerprint(*[r for r in roots if r.is_file()]) if any(
            r.is_file() for r in roots) else "",
        "whole": source_hash,
        "records": base / "llmfs-deps",
    }
    logger.info(f"llmfs: package source hash {source_hash[:16]}, jupyter-cache at {base}")


def lesson_key(app: Sphinx, docname: str, text: str) -> tuple[str, list[str]]:
    """The hash a lesson's outputs depend on, and the modules it counts (see the module doc)."""
    info = app.llmfs
    if not docname.startswith("lessons/"):
        lessons = sorted((info["confdir"] / "lessons").glob("*.md"))
        digest = hashlib.sha256(info["whole"].encode())
        for lesson in lessons:
            digest.update(lesson.name.encode() + hashlib.sha256(lesson.read_bytes()).digest())
        return digest.hexdigest(), ["(the whole package and every lesson)"]
    record = info["records"] / f"{docname.replace('/', '__')}.json"
    recorded = set(json.loads(record.read_text())) if record.is_file() else set()
    digest = hashlib.sha256(info["tools"].encode())
    counted = []
    for root, graph in info["packages"].items():
        modules = dependencies(lesson_modules(text, root) | (recorded & set(graph)), graph)
        for module in sorted(modules):
            path = module_file(module, root)
            digest.update(module.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
            counted.append(module)
    return digest.hexdigest(), counted


def _is_notebook(app: Sphinx, docname: str) -> bool:
    path = Path(app.srcdir) / f"{docname}.md"
    return path.is_file() and path.read_text(encoding="utf-8").startswith("---\njupytext:")


def _pages_that_read_the_lessons(app: Sphinx, env, added, changed, removed) -> list[str]:
    """When a lesson changes, re-read the executed pages outside lessons/ (they read every lesson;
    the book's map lists what each imports), so their cache keys are checked again."""
    if not any(d.startswith("lessons/") for d in (*added, *changed, *removed)):
        return []
    return [d for d in env.found_docs if not d.startswith("lessons/") and _is_notebook(app, d)]


def _failed_pages(env) -> dict[str, str]:
    """``{docname: traceback}`` of the pages whose execution failed, from myst-nb's records."""
    return {
        docname: data["exec_data"].get("traceback") or ""
        for docname, data in sorted(getattr(env, "nb_metadata", {}).items())
        if data.get("exec_data") and not data["exec_data"].get("succeeded", True)
    }


def _pages_that_failed(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Read again the pages whose execution failed in an earlier build.

    Sphinx keeps a page it has read until its source changes, so without this a page that
    failed would be skipped by the next build, which would then pass.
    """
    return [d for d in _failed_pages(env) if d in env.found_docs]


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def describe_failure(traceback: str) -> str:
    """One line from a failed execution's traceback: the cell, its first line, the exception.

    For example ``cell In[3] `x = 1 ...`: KeyError: 'k'`` (``In[3]``: the third code cell run).
    """
    text = ANSI_ESCAPE.sub("", traceback)
    where = "a cell"
    if number := re.search(r"Cell In\[(\d+)\]", text):
        where = f"cell In[{number.group(1)}]"
    # nbclient quotes the cell between dashed lines, after one of these two phrases.
    quoted = re.search(r"(?:following cell|preview of the cell contents):\n-+\n(.*?)\n-+\n",
                       text, re.S)
    if quoted and (lines := quoted.group(1).strip().splitlines()):
        more = len(lines) > 1 or len(lines[0]) > 72
        where += f" `{lines[0][:72]}{' ...' if more else ''}`"
    if timeout := re.search(r"CellTimeoutError: (.*)", text):
        error = f"CellTimeoutError: {timeout.group(1).strip()}"  # not the preview after it
    else:  # IPython's traceback ends with the exception line
        error = next((line.strip() for line in reversed(text.splitlines()) if line.strip()),
                     "unknown error")
    return f"{where}: {error}"


def _list_failed_pages(app: Sphinx, exception: Exception | None) -> None:
    """End the build's output with every page whose execution failed, so one build names all."""
    failed = _failed_pages(app.env)
    if not failed:
        return
    reports = Path(app.outdir) / "reports"
    lines = [f"Pages whose execution failed ({len(failed)}; full tracebacks in {reports}):"]
    lines += [f"  {docname}: {describe_failure(tb)}" for docname, tb in failed.items()]
    logger.info("\n".join(lines), color="red")


def _keep_outputs_in_the_download(app: Sphinx, doctree) -> None:
    """Give the downloadable notebook of a page served from the cache its outputs.

    When myst-nb finds a page in its execution cache it renders the cached outputs but writes
    ``jupyter_execute/<page>.ipynb`` (which the theme copies to ``_sources/`` as the download)
    from the notebook it read, without them. Merge them in again from the same cache.
    """
    docname = app.env.docname
    if not _is_notebook(app, docname) or not app.config.nb_execution_cache_path:
        return
    path = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.ipynb"
    if not path.is_file():
        return
    notebook = nbformat.read(path, as_version=4)
    if any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
        return  # executed in this build: the notebook was written with its outputs
    try:
        _, merged = get_cache(app.config.nb_execution_cache_path).merge_match_into_notebook(
            notebook)
    except KeyError:  # not in the cache (a page that is not executed)
        return
    nbformat.write(merged, path)


def _add_dependency_cell(app: Sphinx, docname: str, source: list[str]) -> None:
    """Append the hidden cell that keys the lesson's cache and records what it imported."""
    if not hasattr(app, "llmfs") or not source[0].startswith("---\njupytext:"):
        return
    key, modules = lesson_key(app, docname, source[0])
    record = app.llmfs["records"] / f"{docname.replace('/', '__')}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    page_dir = (app.llmfs["confdir"] / docname).parent
    relative = os.path.relpath(record, page_dir)  # the same in every clone of the repository
    names = sorted(root.name for root in app.llmfs["packages"])
    source[0] += textwrap.dedent(f"""

        ```{{code-cell}} ipython3
        :tags: [remove-cell]

        # Build bookkeeping, not part of the lesson. Outputs cached under key {key[:16]}
        # ({len(modules)} package modules); record what this run imported for the next build.
        import json as _json, sys as _sys, pathlib as _pathlib
        _pathlib.Path({relative!r}).write_text(_json.dumps(sorted(
            _m for _m in _sys.modules if _m.split(".")[0] in {names!r})))
        ```
        """)


def mathjax_dir() -> Path:
    """The folder that holds MathJax's ``es5`` build, from the pinned registry package."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "MathJax is not installed: pip install -r requirements.txt (django-static-mathjax)")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"


def _serve_mathjax_locally(app: Sphinx, config: Config) -> None:
    source = mathjax_dir()
    if not (source / "es5" / MATHJAX_ENTRY).is_file():
        raise FileNotFoundError(f"{source / 'es5' / MATHJAX_ENTRY} is missing")
    # Relative to the site's _static folder, where html_static_path copies the files.
    config.mathjax_path = f"mathjax/es5/{MATHJAX_ENTRY}"
    config.html_static_path = [*config.html_static_path, str(source.parent)]
    logger.info(f"llmfs: MathJax served from _static/mathjax ({source})")
    # One search box: the sidebar's. The theme also pins one in the top bar.
    config.html_theme_options = {**config.html_theme_options, "navbar_persistent": []}


def _fix_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Two defects the browser tests found in the theme's pages, mended per page.

    - The theme's light/dark switch reads ``default_mode``, which Jupyter Book leaves empty, so
      every page logged "invalid theme mode" before resetting it: start from "auto".
    - sphinx-thebe adds its inline setup script twice, and the second ``const`` declaration is a
      JavaScript error on every page: keep each script once.
    """
    context.setdefault("default_mode", "auto")
    if not context["default_mode"]:
        context["default_mode"] = "auto"
    seen, scripts = set(), []
    for script in context.get("script_files", []):
        # the same file or the same inline code, whatever priority each copy was given
        key = (getattr(script, "filename", str(script)) or "",  # inline: None or ""
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            scripts.append(script)
    context["script_files"] = scripts


def setup(app: Sphinx) -> dict:
    app.add_config_value("llmfs_package_dirs", ["code/llm_from_scratch"], "env", [list])
    # rebuild="env": when the hash changes, Sphinx re-reads (and so re-executes) every page.
    app.add_config_value("llmfs_package_hash", "", "env", [str])
    # Run before myst-nb turns the Sphinx config into its own (at builder-inited).
    app.connect("config-inited", _key_cache_on_package, priority=100)
    app.connect("config-inited", _serve_mathjax_locally, priority=900)
    app.connect("source-read", _add_dependency_cell)
    app.connect("env-get-outdated", _pages_that_read_the_lessons)
    app.connect("env-get-outdated", _pages_that_failed)
    app.connect("doctree-read", _keep_outputs_in_the_download)
    app.connect("html-page-context", _fix_page, priority=900)
    app.connect("build-finished", _list_failed_pages)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
