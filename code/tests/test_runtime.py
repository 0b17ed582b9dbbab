"""Tests for llm_from_scratch.runtime: threads, precision, compilation switches, stop requests.

None of this may change what a model computes, only how fast: each switch is checked to
restore what it changed, and the precision helpers to compute what plain PyTorch does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from llm_from_scratch import distributed, runtime
from llm_from_scratch.model import BigramLanguageModel
from llm_from_scratch.runtime import (
    THREADS_ENV,
    Runtime,
    autocast,
    compiler_available,
    deterministic_kernels,
    fused_attention,
    inputs_checked_once,
    resolve_dtype,
    stop_requests,
    threads_for,
    use_free_cores,
)
from llm_from_scratch.train import TrainConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---- CPU threads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "cores", "threads"),
    [(0.0, 2, 1), (0.5, 2, 1), (1.1, 2, 1), (1.69, 2, 1), (1.7, 2, 2), (1.9, 2, 2),
     (2.0, 2, 2), (7.9, 4, 4), (3.2, 8, 3), (0.0, 1, 1)],
)  # fmt: skip
def test_threads_for_counts_mostly_idle_cores(free, cores, threads):
    assert threads_for(free=free, cores=cores) == threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_use_free_cores_honours_llmfs_threads(monkeypatch, restore_threads):
    monkeypatch.setattr(runtime, "free_cores", lambda: pytest.fail("must not sample the CPUs"))
    monkeypatch.setenv(THREADS_ENV, "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # LLMFS_THREADS wins
    assert use_free_cores() == 3 and torch.get_num_threads() == 3
    monkeypatch.delenv(THREADS_ENV)
    assert use_free_cores() == 2 and torch.get_num_threads() == 2


def test_use_free_cores_counts_the_free_cores(monkeypatch, restore_threads):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(runtime, "free_cores", lambda: 1.8)
    assert use_free_cores() == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(runtime, "free_cores", lambda: None)  # unknown: leave the setting alone
    torch.set_num_threads(1)
    assert use_free_cores() == 1


def test_free_cores_is_a_fraction_of_this_process_cores():
    free = runtime.free_cores(sample_seconds=0.01)
    if free is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= free <= len(os.sched_getaffinity(0)) + 1e-9


class FakeClock:
    """/proc/stat and this process's CPU time, advanced by hand: (idle, total, own) jiffies."""

    def __init__(self, monkeypatch):
        self.idle = self.total = self.own = 0.0
        monkeypatch.setattr(runtime, "_cpu_times", lambda cores: (self.idle, self.total))
        ticks = runtime.os.sysconf("SC_CLK_TCK")
        times = lambda: SimpleNamespace(user=self.own / ticks, system=0.0,  # noqa: E731
                                        children_user=0.0, children_system=0.0)
        monkeypatch.setattr(runtime.os, "times", times)
        monkeypatch.setattr(runtime, "_descendant_times", lambda pid: 0.0)
        monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def advance(self, idle: float, own: float, total: float = 200.0) -> None:
        self.idle, self.own, self.total = self.idle + idle, self.own + own, self.total + total


def test_core_watch_counts_this_process_cpu_as_free(monkeypatch):
    clock = FakeClock(monkeypatch)
    watch = runtime.CoreWatch()
    clock.advance(idle=0, own=100)  # we use one core, another program the other
    assert watch.free() == pytest.approx(1.0)
    clock.advance(idle=100, own=100)  # we use one core, the other is idle
    assert watch.free() == pytest.approx(2.0)


def test_child_processes_cpu_counts_as_this_process():
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc here")
    # A child that works half a second of CPU, then waits to be counted while still alive.
    busy = ("import time\nend = time.process_time() + 0.5\n"
            "while time.process_time() < end: pass\ntime.sleep(60)")
    before = runtime._descendant_times(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        deadline = time.monotonic() + 30
        while runtime._descendant_times(os.getpid()) - before < 0.4 * os.sysconf("SC_CLK_TCK"):
            assert time.monotonic() < deadline, "the child's CPU time was never counted"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()


def test_thread_governor_follows_the_load(monkeypatch, restore_threads):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    clock = FakeClock(monkeypatch)
    torch.set_num_threads(2)
    governor = runtime.ThreadGovernor(interval=0.0)
    clock.advance(idle=0, own=100)  # a busy loop took a core
    governor()
    assert torch.get_num_threads() == 1
    clock.advance(idle=100, own=100)  # it ended
    governor()
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(THREADS_ENV, "2")  # a fixed number is left alone
    fixed = runtime.ThreadGovernor(interval=0.0)
    clock.advance(idle=0, own=100)
    fixed()
    assert torch.get_num_threads() == 2


# ---- precision --------------------------------------------------------------------------


def test_resolve_dtype_keeps_an_explicit_choice():
    for dtype in ("float32", "bfloat16", "float16"):
        assert resolve_dtype(dtype, "cpu") == dtype


def test_resolve_dtype_auto_is_float32_with_llmfs_no_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.delenv("LLMFS_NO_BF16", raising=False)
    assert resolve_dtype("auto", "cpu") == "bfloat16"  # a CPU with bfloat16 matrix units
    monkeypatch.setenv("LLMFS_NO_BF16", "1")
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda") == "float32"
    monkeypatch.delenv("LLMFS_NO_BF16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert resolve_dtype("auto", "cpu") == "float32"


def test_autocast_is_a_no_op_for_float32_and_bfloat16_matmuls_otherwise():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", "float32"):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bfloat16"):
        assert (a @ b).dtype == torch.bfloat16


def test_fused_attention_equals_pytorchs_kernel():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(fused_attention(q, k, v, is_causal=True), expected)
    # bfloat16 inputs on a CPU: computed in float32, returned in bfloat16
    low = fused_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, atol=3e-2, rtol=3e-2)


# ---- compilation switches ---------------------------------------------------------------------


def test_compiler_available_looks_for_a_cpp_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert not compiler_available()
    monkeypatch.setenv("CXX", "my-c++")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/opt/bin/my-c++" if name == "my-c++"
                        else None)
    assert compiler_available()


def test_deterministic_kernels_restore_the_setting_even_after_an_error():
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        with deterministic_kernels():
            assert torch.are_deterministic_algorithms_enabled()
            raise RuntimeError("boom")
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(enabled=False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_inputs_checked_once_switches_the_check_off_and_back_on():
    model = BigramLanguageModel(5)
    with pytest.raises(RuntimeError, match="boom"):
        with inputs_checked_once(model):
            assert model.check_inputs is False
            raise RuntimeError("boom")
    assert model.check_inputs is True
    plain = torch.nn.Linear(2, 2)  # a model without the switch is left alone
    with inputs_checked_once(plain):
        assert not hasattr(plain, "check_inputs")


# ---- Runtime ------------------------------------------------------------------------------


def test_runtime_setup_for_a_cpu_run():
    rt = Runtime.setup(TrainConfig(dtype="bfloat16"))
    assert rt == Runtime(torch.device("cpu"), "bfloat16", 0, 1, False)
    model = BigramLanguageModel(3)
    assert rt.wrap(model) is model  # one process, not compiled: the model itself
    with rt.kernels():
        assert not torch.are_deterministic_algorithms_enabled()


def test_runtime_setup_errors(monkeypatch, capsys):
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="PyTorch sees no GPU"):
            Runtime.setup(TrainConfig(device="cuda"))
    monkeypatch.setattr(runtime, "compiler_available", lambda: False)
    assert not Runtime.setup(TrainConfig(compile=True)).compiled
    assert "no C++ compiler was found" in capsys.readouterr().out
    # three processes cannot split a batch of 8 evenly
    for module in (runtime, distributed):
        monkeypatch.setattr(module, "distributed_context", lambda: (0, 3), raising=False)
    with pytest.raises(ValueError, match="batch_size=8 does not split into 2 micro-batches on "
                                         "each of 3 processes"):
        Runtime.setup(TrainConfig(batch_size=8, grad_accum_steps=2))
    assert Runtime.setup(TrainConfig(batch_size=12, grad_accum_steps=2)).world_size == 3


# ---- stop requests ------------------------------------------------------------------------


def test_ctrl_c_requests_a_stop_and_a_second_one_stops_at_once():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with stop_requests() as stop:
        assert not stop.is_set()
        signal.raise_signal(signal.SIGINT)  # no exception: the run ends after its step
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sigterm_requests_a_stop_too():
    with stop_requests() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()


def test_stop_requests_outside_the_main_thread_installs_no_handler():
    seen = []

    def worker():
        with stop_requests() as stop:
            seen.append((stop.is_set(), signal.getsignal(signal.SIGINT)))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, before)]
