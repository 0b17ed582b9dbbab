"""The machine a time or a trained number was measured on: CPU, vector extensions, numerics.

Usage:
    python code/benchmarks/machine.py          # the summary line, then each part of it

A lesson's time, or a model's last digits, depend on the CPU: how many cores, whether PyTorch's
kernels use AVX2, AVX-512 or AMX (which changes speed and the order in which sums are rounded),
and whether the package trains in bfloat16 (only where AMX multiplies it fast). CI prints this
before it builds the book, and the lesson-time table names it, so a number is read against the
machine that produced it.

>>> summary_line({"cpu": "AMD EPYC", "cores": 2, "extensions": ["AVX2", "AVX-512F"],
...               "torch_capability": "AVX512", "dtype": "float32", "common_cpu_env": {}})
'AMD EPYC (2 cores; AVX2, AVX-512F; no AMX) · torch CPU capability AVX512 · training dtype float32'
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

#: /proc/cpuinfo flag -> name, for the extensions that decide PyTorch's CPU kernels and dtype.
EXTENSIONS = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_bf16": "AVX-512 BF16",
              "avx512_vnni": "AVX-512 VNNI", "amx_tile": "AMX", "amx_bf16": "AMX BF16"}
#: The common-CPU path (book/setup.md): float32 training and AVX2 kernels in ATen, oneDNN and
#: MKL, as on GitHub's runners and most laptops.
COMMON_CPU = {"LLMFS_NO_BF16": "1", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
              "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
#: The switches that put a fast CPU on the common path, and the seed offset.
COMMON_CPU_ENV = (*COMMON_CPU, "LLMFS_SEED_OFFSET")


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """The CPU's model name and its relevant extensions, from the text of ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor speaks for all
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    model = fields.get("model name") or fields.get("Model name") or ""
    return model, [name for flag, name in EXTENSIONS.items() if flag in flags]


def cores() -> int:
    """The CPUs this process may run on (a container or ``taskset`` may allow fewer)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe(cpuinfo: str | None = None) -> dict:
    """The machine: ``cpu``, ``cores``, ``extensions``, ``torch_capability``, ``dtype`` (what
    ``--dtype auto`` trains in on the CPU) and ``common_cpu_env`` (those switches that are set).

    ``cpuinfo``: the text of ``/proc/cpuinfo``; read from this machine when not given.
    """
    import torch

    from llm_from_scratch.runtime import resolve_dtype

    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, extensions = parse_cpuinfo(cpuinfo)
    return {
        "cpu": model or platform.processor() or platform.machine() or "unknown CPU",
        "cores": cores(),
        "extensions": extensions,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "dtype": resolve_dtype("auto", "cpu"),
        "common_cpu_env": {k: os.environ[k] for k in COMMON_CPU_ENV if k in os.environ},
    }


def summary_line(info: dict | None = None) -> str:
    """:func:`describe` (or ``info``) in one line, as in the module's example; the common-CPU
    switches that are set, if any, end it."""
    info = describe() if info is None else info
    parts = [f"{info['cores']} cores", ", ".join(info["extensions"]) or "no AVX2"]
    if not any(e.startswith("AMX") for e in info["extensions"]):
        parts.append("no AMX")  # so no fast bfloat16: the reason for the dtype
    line = (f"{info['cpu']} ({'; '.join(parts)}) · torch CPU capability "
            f"{info['torch_capability']} · training dtype {info['dtype']}")
    if info["common_cpu_env"]:
        line += " · " + ", ".join(f"{k}={v}" for k, v in info["common_cpu_env"].items())
    return line


def main() -> int:
    info = describe()
    switches = ", ".join(f"{k}={v}" for k, v in info["common_cpu_env"].items())
    print(f"machine: {summary_line(info)}\n"
          f"  CPU: {info['cpu']}, {info['cores']} cores\n"
          f"  vector extensions: {', '.join(info['extensions']) or 'none'} "
          f"(of {', '.join(EXTENSIONS.values())})\n"
          f"  torch CPU capability: {info['torch_capability']}\n"
          f"  training dtype (--dtype auto on the CPU): {info['dtype']}\n"
          f"  common-CPU switches set: {switches or 'none'} (of {', '.join(COMMON_CPU_ENV)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
