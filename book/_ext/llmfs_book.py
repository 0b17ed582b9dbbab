"""Sphinx extension: never serve lesson outputs computed with an older version of the package.

myst-nb's cache mode keys each executed notebook on the text of its own code cells. That is not
enough here: a lesson that calls ``BPETokenizer.train`` must be re-executed when the *package*
changes, even if the lesson's cells did not. Two things make that happen:

1. The jupyter-cache lives in a folder named after a hash of the package's source and of
   ``requirements.txt`` (``_build/.jupyter_cache/pkg-<hash>``; the paths hashed are the
   ``llmfs_package_dirs`` setting in ``_config.yml``), so a changed package finds an empty
   cache and every lesson re-executes; an unchanged package finds its cached outputs and
   nothing executes. The hash is :func:`llm_from_scratch.artifacts.source_fingerprint`, the
   rule that also keys the package's cache of trained models, so a change that retrains a
   model always re-executes the lessons that show it.
2. The hash is also a Sphinx config value that invalidates the environment, so Sphinx re-reads
   every page (re-reading is what triggers execution); otherwise Sphinx would see unchanged
   ``.md`` files and reuse the pickled pages with their old outputs.

Only the few most recent caches are kept, so switching between two versions of the package
(say, two branches) stays fast without the build folder growing without bound.

The extension also serves the math renderer from the site itself: MathJax 3, pinned in
``requirements.txt`` as a registry package (``django-static-mathjax`` ships its built files and
nothing else), is copied into ``_static/mathjax`` and the pages load it from there, so a learner
reading the local build offline sees typeset math instead of raw TeX.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

from llm_from_scratch.artifacts import source_fingerprint

logger = logging.getLogger(__name__)

KEEP_CACHES = 3
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
    cache = base / f"pkg-{source_hash[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    cache.touch()  # mark as most recently used
    config.nb_execution_cache_path = str(cache)

    stale = sorted(base.glob("pkg-*"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_CACHES:]
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    logger.info(f"llmfs: package source hash {source_hash[:16]}, jupyter-cache at {cache}")


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


def setup(app: Sphinx) -> dict:
    app.add_config_value("llmfs_package_dirs", ["code/llm_from_scratch"], "env", [list])
    # rebuild="env": when the hash changes, Sphinx re-reads (and so re-executes) every page.
    app.add_config_value("llmfs_package_hash", "", "env", [str])
    # Run before myst-nb turns the Sphinx config into its own (at builder-inited).
    app.connect("config-inited", _key_cache_on_package, priority=100)
    app.connect("config-inited", _serve_mathjax_locally, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
