"""Test settings shared by the whole suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests explore new random inputs on every local run; in CI they replay a fixed
# sequence, so that a red CI always means a change broke something and reruns reproduce it.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny-tensor tests on one CPU thread, restoring the setting afterwards.

    Their tensors are far too small to gain from threads, and on a busy machine the threads'
    synchronisation alone makes each operation tens of times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
