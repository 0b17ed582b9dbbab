"""Run the book as another, equally valid draw: one switch shifts every seed.

A claim about what training produced (a loss, the order of two rows, a collapse) must hold for
any seed, not only for the one it was written with. ``LLMFS_SEED_OFFSET=k`` adds ``k`` to every
seed the package and the lessons set — ``torch.manual_seed``, ``torch.Generator().manual_seed``,
``random.Random(seed)`` and ``random.seed`` — so a whole lesson runs as a different draw without
editing a line of it. Unset or ``0``, nothing is touched.

The shift is installed when the package is imported (a lesson imports it before it seeds
anything), and the disk cache of trained models keys on it, so a shifted run never loads a model
trained under another draw. ``code/benchmarks/claims.py`` uses it to measure every lesson's
asserted results under other seeds.

>>> import torch
>>> shift_seeds(0)  # no offset: torch and random are left exactly as they are
>>> torch.manual_seed(3).initial_seed()
3
"""

from __future__ import annotations

import os
import random

import torch

#: Environment variable holding the offset added to every seed.
SEED_OFFSET_ENV = "LLMFS_SEED_OFFSET"

_installed: int = 0


def seed_offset() -> int:
    """The offset ``$LLMFS_SEED_OFFSET`` asks for (``0`` when unset); a clear error if malformed."""
    raw = os.environ.get(SEED_OFFSET_ENV, "").strip()
    if not raw:
        return 0
    try:
        offset = int(raw)
    except ValueError:
        raise ValueError(
            f"{SEED_OFFSET_ENV} must be an integer (any value; 0 or unset means no shift), "
            f"got {raw!r}"
        ) from None
    if abs(offset) >= 2**31:
        raise ValueError(f"{SEED_OFFSET_ENV} must lie in (-2**31, 2**31), got {offset}")
    return offset


def _shifted(seed: object, offset: int) -> object:
    # Only integer seeds shift: a string or bytes seed of random.Random is left as given.
    if isinstance(seed, int) and not isinstance(seed, bool):
        return (seed + offset) % 2**64 if seed >= 0 else seed + offset
    return seed


def shift_seeds(offset: int) -> None:
    """Add ``offset`` to every seed set from now on in this process (idempotent; 0: no-op)."""
    global _installed
    if offset == 0 or offset == _installed:
        return
    if _installed:
        raise RuntimeError(f"seeds are already shifted by {_installed}; cannot shift by {offset}")
    _installed = offset
    torch_manual_seed = torch.random.manual_seed
    base_generator = torch.Generator
    random_seed = random.seed

    def manual_seed(seed):  # noqa: ANN001, ANN202 - torch's own signature
        return torch_manual_seed(_shifted(int(seed), offset))

    class Generator(base_generator):
        """``torch.Generator`` whose ``manual_seed`` adds the offset."""

        def manual_seed(self, seed):  # noqa: ANN001, ANN202
            return super().manual_seed(_shifted(int(seed), offset))

    class Random(random.Random):
        """``random.Random`` whose integer seeds are shifted."""

        def seed(self, a=None, version=2):  # noqa: ANN001, ANN202
            super().seed(_shifted(a, offset), version)

    torch.manual_seed = torch.random.manual_seed = manual_seed
    torch.Generator = Generator
    random.Random = Random
    random.seed = lambda a=None, version=2: random_seed(_shifted(a, offset), version)


def install_from_environment() -> int:
    """Apply ``$LLMFS_SEED_OFFSET``; returns the offset (called when the package is imported)."""
    offset = seed_offset()
    shift_seeds(offset)
    return offset
