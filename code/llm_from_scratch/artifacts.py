"""A disk cache for expensive results (trained models, their losses), keyed so it is never stale.

A lesson that trains a model asks :func:`cached` for it. The key combines what the caller says
determines the result (configurations, seed) with a fingerprint of the package's own source and
the data's hash, so editing the package or the data retrains instead of serving an old model.

The cache lives in ``$LLMFS_CACHE_DIR`` when that is set (CI points it at a fresh directory so a
cold build is truly cold), otherwise in the user cache directory.

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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import platformdirs
import torch

import llm_from_scratch

#: Environment variable naming the directory that holds cached artifacts.
CACHE_DIR_ENV = "LLMFS_CACHE_DIR"


def cache_root() -> Path:
    """Directory of cached artifacts: ``$LLMFS_CACHE_DIR`` or the user cache directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser() / "artifacts"
    return Path(platformdirs.user_cache_dir("llm_from_scratch")) / "artifacts"


@lru_cache(maxsize=1)
def package_fingerprint() -> str:
    """sha256 of every Python source file of the installed package (names and contents)."""
    root = Path(llm_from_scratch.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def artifact_key(name: str, spec: dict) -> str:
    """The cache key for ``spec`` (JSON-serialisable) under the current package source."""
    payload = json.dumps(
        {"name": name, "spec": spec, "package": package_fingerprint()}, sort_keys=True, default=str
    )
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
    """
    path = cache_root() / artifact_key(name, spec)
    info_file, weights_file = path / "info.json", path / "model.pt"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        state = torch.load(weights_file, weights_only=True) if weights_file.is_file() else None
        return Artifact(info, state, path, from_cache=True)
    info, state = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
        if state is not None:
            torch.save(state, tmp / "model.pt")
        if path.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(info, state, path, from_cache=False)
