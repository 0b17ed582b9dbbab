"""A disk cache for expensive results (trained models, their losses), keyed so it is never stale.

A lesson that trains a model asks :func:`cached` for it. The key combines what the caller says
determines the result (configurations, seed) with a fingerprint of the source that computes it:
the package module that asks and every package module it imports, directly or not
(:func:`module_fingerprint`). Editing that code retrains instead of serving an old model;
editing a module it never imports (``generation.py``, for the book's model) keeps the model.

The cache lives in ``$LLMFS_CACHE_DIR`` when that is set (CI points it at a fresh directory so a
cold build is truly cold), otherwise in the user cache directory. It never loses a result: a
cache that cannot be written, or a corrupt entry, costs a :class:`CacheWarning` and a
recomputation, never an exception, and processes asking for one key at once compute it once.

>>> from llm_from_scratch.artifacts import cache_root
>>> cache_root().name
'artifacts'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import platformdirs
import torch

import llm_from_scratch
from llm_from_scratch.seeding import seed_offset

try:
    import fcntl
except ImportError:  # Windows: no flock; two processes may both compute, which is still correct
    fcntl = None

#: Environment variable naming the directory that holds cached artifacts.
CACHE_DIR_ENV = "LLMFS_CACHE_DIR"
# Build by-products that say nothing about the code. Every other file counts, package data
# included: a changed data file changes results as surely as changed code does.
IGNORED_PARTS = frozenset({"__pycache__", ".ipynb_checkpoints"})
IGNORED_SUFFIXES = frozenset({".pyc", ".pyo"})


class CacheWarning(RuntimeWarning):
    """The cache could not be used (unwritable, corrupt entry); the result is computed anyway."""


def cache_root() -> Path:
    """Directory of cached artifacts: ``$LLMFS_CACHE_DIR`` or the user cache directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser() / "artifacts"
    return Path(platformdirs.user_cache_dir("llm_from_scratch")) / "artifacts"


def source_fingerprint(*roots: Path) -> str:
    """sha256 over the paths (from each root's parent) and contents of every file in ``roots``.

    A root may be a directory or a single file; build by-products (bytecode, notebook
    checkpoints) are skipped. The book's Sphinx extension keys its execution cache on this too.
    """
    digest = hashlib.sha256()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        for file in [root] if root.is_file() else sorted(root.rglob("*")):
            name = file.relative_to(root.parent)
            if IGNORED_PARTS.intersection(name.parts) or file.suffix in IGNORED_SUFFIXES:
                continue
            if file.is_file():
                # Each file's own hash, not its bytes, so no content can mimic a file boundary.
                content = hashlib.sha256(file.read_bytes()).digest()
                digest.update(name.as_posix().encode() + b"\0" + content)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def package_fingerprint() -> str:
    """:func:`source_fingerprint` of the installed package's directory."""
    return source_fingerprint(Path(llm_from_scratch.__file__).resolve().parent)


def module_fingerprint(module: str) -> str:
    """sha256 over the source of package ``module`` and of every package module it imports.

    Imports are read from the source (inside functions too) and followed transitively, with the
    package's ``__init__``, as :func:`llm_from_scratch.source.dependencies` does for the book's
    lessons. A name that is not a package module (a test's function, a lesson's) gets the whole
    package's :func:`package_fingerprint`: nothing narrower is known to be safe.

    >>> module_fingerprint("llm_from_scratch.trained") == module_fingerprint("llm_from_scratch.sft")
    False
    """
    from llm_from_scratch.source import dependencies, import_graph, module_file

    root = Path(llm_from_scratch.__file__).resolve().parent
    graph = import_graph(root)
    if module not in graph:
        return package_fingerprint()
    digest = hashlib.sha256()
    for name in sorted(dependencies({module}, graph)):
        content = module_file(name, root).read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def numerics() -> dict:
    """What besides the spec and the code moves a trained result: the seed offset and the CPU path.

    A model trained under ``$LLMFS_SEED_OFFSET`` or the common-CPU switches (float32 instead of
    bfloat16, AVX2 kernels) is another result than the default run's and is cached apart.
    """
    return {"seed_offset": seed_offset(), "no_bf16": bool(os.environ.get("LLMFS_NO_BF16")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def artifact_key(name: str, spec: dict, source: str | None = None) -> str:
    """The cache key for ``spec`` (JSON-serialisable) computed by ``source``'s code.

    ``source``: a fingerprint of that code (:func:`module_fingerprint`); by default the whole
    package's.
    """
    source = source or package_fingerprint()
    payload = json.dumps({"name": name, "spec": spec, "package": source,
                          "numerics": numerics()}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


@dataclass
class Artifact:
    """A cached result: JSON-serialisable ``info`` and, optionally, a model ``state_dict``."""

    info: dict
    state_dict: dict | None
    path: Path
    from_cache: bool


def cached(name: str, spec: dict, compute: Callable[[], tuple[dict, dict | None]]) -> Artifact:
    """Return the artifact for ``(name, spec)``, calling ``compute()`` only on a cache miss.

    ``compute`` returns ``(info, state_dict)``; both are written atomically (a crash never
    leaves half an artifact) and the weights are read back with ``torch.load(weights_only=True)``.
    While one process computes a key, others asking for it wait, then load its result. The key
    counts the source of the module that defines ``compute`` and of all it imports.
    """
    source = module_fingerprint(getattr(compute, "__module__", None) or "")
    path = cache_root() / artifact_key(name, spec, source)
    with _lock(path):
        if (artifact := _load(path)) is not None:
            return artifact
        info, state = compute()
        try:
            _store(path, spec, info, state)
        except (OSError, RuntimeError) as err:  # torch.save reports failed writes as RuntimeError
            warnings.warn(
                f"could not write to the artifact cache {path.parent} ({err}): "
                f"{path.name} was computed but not cached",
                CacheWarning,
                stacklevel=2,
            )
    return Artifact(info, state, path, from_cache=False)


def stored(name: str, spec: dict, module: str) -> bool:
    """Whether the cache holds ``(name, spec)`` as :func:`cached` computes it with the code of
    ``module`` (the module that defines ``compute``), without loading it."""
    path = cache_root() / artifact_key(name, spec, module_fingerprint(module))
    return (path / "info.json").is_file()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the key of ``path`` (a lock file beside it) while in the block.

    Where no lock can be had (an unwritable cache, no flock), the block runs unlocked: it may
    compute what another process is computing, which is slower but still correct.
    """
    fd = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.parent / f".{path.name}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock; the file stays, as deleting it would race


def _load(path: Path) -> Artifact | None:
    """The artifact stored at ``path``, or None if there is none; a corrupt one is removed."""
    info_file, weights_file = path / "info.json", path / "model.pt"
    if not info_file.is_file():
        return None
    file = info_file
    try:
        info = json.loads(info_file.read_text())
        file = weights_file
        state = torch.load(weights_file, weights_only=True) if weights_file.is_file() else None
    except Exception as err:  # a damaged file fails torch.load in many ways: EOF, KeyError, ...
        warnings.warn(
            f"corrupt cached artifact file {file} ({err!r}); "
            f"removing {path} and computing it again",
            CacheWarning,
            stacklevel=3,  # the caller of cached()
        )
        shutil.rmtree(path, ignore_errors=True)
        return None
    return Artifact(info, state, path, from_cache=True)


def _store(path: Path, spec: dict, info: dict, state: dict | None) -> None:
    """Write the artifact into a temporary directory, then rename that to ``path`` in one step.

    If ``path`` appeared meanwhile (another process that could not be locked out finished
    first), the rename fails and its copy is kept: it holds the same result.
    """
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
        if state is not None:
            torch.save(state, tmp / "model.pt")
        try:
            tmp.rename(path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
