"""Where and how fast the book's code runs: CPU threads, mixed precision, compilation.

None of this changes what a model computes, only how quickly; the lessons teach the models and
this module keeps the speed machinery out of them.

- :func:`use_free_cores` sets PyTorch's thread count to the cores that are actually free. With
  two threads on two cores and another process holding one of them, every parallel operation
  waits for the thread that shares its core, and training runs 10-50 times slower.
- :func:`resolve_dtype` and :func:`autocast` choose bfloat16 matrix multiplies only where the
  hardware has units for them.
- :func:`fused_attention` is PyTorch's fused attention kernel, run in float32 under CPU
  bfloat16 autocast (its bfloat16 backward is several times slower there).
- :func:`compiler_available` and :func:`deterministic_kernels` support ``torch.compile``.

>>> resolve_dtype("float32", "cpu")
'float32'
>>> threads_for(free=1.1, cores=2), threads_for(free=1.9, cores=2)
(1, 2)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from llm_from_scratch.distributed import distributed_context, wrap_ddp

#: Environment variable that fixes the number of CPU threads (overriding :func:`use_free_cores`).
THREADS_ENV = "LLMFS_THREADS"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------- CPU threads


def _cpu_times(cores: set[int]) -> tuple[float, float]:
    """(idle, total) jiffies of ``cores`` since boot, from ``/proc/stat``."""
    idle = total = 0.0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                continue
            values = [float(v) for v in fields[:8]]
            idle += values[3] + values[4]  # idle and iowait
            total += sum(values)
    return idle, total


def _descendant_times(pid: int) -> float:
    """CPU jiffies of ``pid``'s living descendants, each with the children it has reaped.

    ``torch.compile`` runs the C++ compiler in worker processes: their work is this run's too.
    """
    parents: dict[int, list[tuple[int, float]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:  # ended while we looked
            continue
        # Fields after the command name (which may hold spaces) in parentheses: state, ppid,
        # ... utime, stime, cutime, cstime are fields 14-17 of the whole line.
        fields = stat.rsplit(")", 1)[1].split()
        ticks = sum(float(v) for v in fields[11:15])
        parents.setdefault(int(fields[1]), []).append((int(entry.name), ticks))
    total, todo = 0.0, [pid]
    while todo:
        for child, ticks in parents.get(todo.pop(), []):
            total += ticks
            todo.append(child)
    return total


class CoreWatch:
    """Cores that *other* processes leave free, measured between two calls, without waiting.

    This process's own CPU time counts as free, its child processes' included (the compiler
    that ``torch.compile`` runs): the cores they use are the ones it could keep.
    """

    def __init__(self) -> None:
        self.cores = os.sched_getaffinity(0)
        self.last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        idle, total = _cpu_times(self.cores)
        t = os.times()
        own = (t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")
        return idle, total, own + _descendant_times(os.getpid())

    def free(self) -> float | None:
        """Free cores since the last call (``None`` if no time passed)."""
        now = self._sample()
        (idle0, total0, own0), self.last = self.last, now
        if now[1] <= total0:
            return None
        share = (now[0] - idle0 + now[2] - own0) / (now[1] - total0)
        return len(self.cores) * min(1.0, share)


def free_cores(sample_seconds: float = 0.25) -> float | None:
    """How many of this process's cores sat idle over a short sample (``None``: unknown)."""
    try:
        watch = CoreWatch()
        time.sleep(sample_seconds)
        return watch.free()
    except (OSError, AttributeError, ValueError):  # not Linux
        return None


def threads_for(free: float, cores: int) -> int:
    """Threads for ``free`` idle cores out of ``cores``: a core counts once it is mostly idle."""
    return max(1, min(cores, int(free + 0.3)))


def usable_cores() -> int | None:
    """The cores this process may use now: ``$LLMFS_THREADS`` (or ``$OMP_NUM_THREADS``) when set,
    else those other processes leave free (``None``: unknown, not Linux)."""
    fixed = os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")
    if fixed:
        return int(fixed)
    free = free_cores()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if free is None or cores is None:
        return None
    return threads_for(free, cores)


def use_free_cores() -> int:
    """Set PyTorch's CPU threads to the number of free cores; returns the number chosen.

    ``$LLMFS_THREADS`` (or ``$OMP_NUM_THREADS``) fixes the number instead. Called when the
    package is imported; during training, :class:`ThreadGovernor` follows the load as it changes.
    """
    threads = usable_cores()
    if threads is None:
        return torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


class ThreadGovernor:
    """Keeps PyTorch's CPU threads at the cores other processes leave free, during training.

    Called after every step, it looks at the load every ``interval`` seconds (no waiting: it
    compares with the previous look) and changes the thread count only when that changes. A
    fixed ``$LLMFS_THREADS`` or ``$OMP_NUM_THREADS`` turns it off.
    """

    def __init__(self, interval: float = 5.0) -> None:
        self.interval, self.next_look = interval, time.monotonic() + interval
        fixed = os.environ.get(THREADS_ENV) or os.environ.get("OMP_NUM_THREADS")
        try:
            self.watch = None if fixed else CoreWatch()
        except (OSError, AttributeError, ValueError):  # not Linux
            self.watch = None

    def __call__(self) -> None:
        if self.watch is None or time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + self.interval
        free = self.watch.free()
        if free is not None:
            threads = threads_for(free, len(self.watch.cores))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- precision


def resolve_dtype(dtype: str, device: str) -> str:
    """``"auto"``: bfloat16 where the hardware multiplies it fast, else float32.

    GPUs from NVIDIA's Ampere generation on, and CPUs with bfloat16 matrix units (Intel AMX),
    multiply bfloat16 matrices several times faster than float32 ones; elsewhere a CPU
    converts bfloat16 in software and mixed precision would only slow training down.
    ``$LLMFS_NO_BF16=1`` makes ``"auto"`` choose float32 everywhere, as on such a machine.
    """
    if dtype != "auto":
        return dtype
    if os.environ.get("LLMFS_NO_BF16"):
        return "float32"
    if device.startswith("cuda"):
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bfloat16" if fast else "float32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bfloat16" if amx() else "float32"


def autocast(device_type: str, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision: matmuls in ``dtype``, weights and sums in float32 (no-op for float32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[dtype])


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, kept in float32 under CPU bfloat16 autocast.

    PyTorch's CPU flash-attention backward is several times slower in bfloat16 than in
    float32, so only the matmuls around it gain from bfloat16. Autocast would cast float32
    inputs straight back to bfloat16, so it is switched off for the kernel.
    """
    dtype = q.dtype
    if q.device.type != "cpu" or dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
        )
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p,
            is_causal=is_causal,
        )
    return y.to(dtype)


# ----------------------------------------------------------------------------- compilation


def compiler_available() -> bool:
    """Whether ``torch.compile`` can build CPU kernels here: it needs a C++ compiler."""
    names = [os.environ.get("CXX", ""), "g++", "clang++", "c++", "cl"]
    return any(name and shutil.which(name) for name in names)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool = True) -> Iterator[None]:
    """Run the block with ``torch.use_deterministic_algorithms``, then restore the setting.

    Compiled CPU kernels may split a sum between threads in an order that varies from run to
    run; in deterministic mode they do not, so a seed fixes the losses of a compiled run too.
    """
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside the block; the model's own mode again after it, even on error.

    >>> model = torch.nn.Dropout(0.5)
    >>> with evaluating(model):
    ...     model.training
    False
    >>> model.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def inputs_checked_once(model: torch.nn.Module) -> Iterator[None]:
    """Turn off the model's per-call id check while the trainer runs it (restored after).

    The trainer checks its whole dataset once; reading ids on every call would force the CPU
    to wait for the device at each step, and break a compiled graph in two.
    """
    before = getattr(model, "check_inputs", None)
    if before is not None:
        model.check_inputs = False
    try:
        yield
    finally:
        if before is not None:
            model.check_inputs = before


# ----------------------------------------------------------------------------- a training run


@dataclass
class Runtime:
    """Where a run executes: device, resolved precision, process rank, compilation."""

    device: torch.device
    dtype: str
    rank: int = 0
    world_size: int = 1
    compiled: bool = False
    governor: ThreadGovernor = field(default_factory=ThreadGovernor, compare=False, repr=False)

    @classmethod
    def setup(cls, config) -> Runtime:
        """The runtime a :class:`~llm_from_scratch.train.TrainConfig` asks for."""
        rank, world_size = distributed_context()
        if (config.batch_size // config.grad_accum_steps) % world_size:
            raise ValueError(
                f"batch_size={config.batch_size} does not split into {config.grad_accum_steps} "
                f"micro-batches on each of {world_size} processes"
            )
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but PyTorch sees no GPU; use device='cpu'")
        compiled = config.compile and (device.type != "cpu" or compiler_available())
        if config.compile and not compiled:
            tqdm.write("compile=True but no C++ compiler was found: training without compiling")
        dtype = resolve_dtype(config.dtype, device.type)
        return cls(device, dtype, rank, world_size, compiled)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training step calls it: data-parallel, and compiled if asked."""
        model = wrap_ddp(model, self.world_size)
        if self.compiled:
            # torch.compile traces the step once and fuses its element-wise work into a few
            # generated kernels; the first step pays for the compilation. Evaluation stays eager.
            model = torch.compile(model, dynamic=False)
        return model

    def fit_threads(self) -> None:
        """Follow the machine's load on a CPU (see :class:`ThreadGovernor`)."""
        if self.device.type == "cpu":
            self.governor()

    def precision(self) -> contextlib.AbstractContextManager:
        return autocast(self.device.type, self.dtype)

    def kernels(self) -> contextlib.AbstractContextManager:
        """Deterministic kernels for compiled CPU runs, so that a seed fixes their losses."""
        return deterministic_kernels(self.compiled and self.device.type == "cpu")



@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM ends the run after the current step, never in the middle of one (a
    half-applied optimizer step would be saved as if whole). A second Ctrl-C stops at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` CPU threads (``None``: leave the count alone), then restore.

    >>> with fixed_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` timed calls of ``fn``, in seconds.

    The minimum, not the mean: on a shared machine, other work only ever adds time.

    >>> best_time(lambda: sum(range(1000)), repeat=3) > 0
    True
    """
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
