"""Test settings shared by the whole suite."""

from __future__ import annotations

import os

from hypothesis import settings

# Property tests explore new random inputs on every local run; in CI they replay a fixed
# sequence, so that a red CI always means a change broke something and reruns reproduce it.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
