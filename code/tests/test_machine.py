"""The machine description CI prints and the lesson-time table is headed by
(code/benchmarks/machine.py)."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import torch

from llm_from_scratch.runtime import resolve_dtype

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "code" / "benchmarks"))

import lesson_times  # noqa: E402
import machine  # noqa: E402

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""


def test_describe_reads_the_cpu_and_its_extensions_from_cpuinfo(monkeypatch):
    for name in machine.COMMON_CPU_ENV:
        monkeypatch.delenv(name, raising=False)
    info = machine.describe(CPUINFO)
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["extensions"] == ["AVX2", "AVX-512F", "AVX-512 BF16", "AVX-512 VNNI", "AMX",
                                  "AMX BF16"]
    assert isinstance(info["cores"], int) and info["cores"] >= 1
    # torch and the package speak for this process, whatever the text says
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["dtype"] == resolve_dtype("auto", "cpu")
    assert info["common_cpu_env"] == {}
    line = machine.summary_line(info)
    assert line.startswith("Intel(R) Xeon(R) Platinum 8480+ (")
    assert "AVX-512 BF16, AVX-512 VNNI, AMX, AMX BF16)" in line and "no AMX" not in line


def test_a_cpu_without_amx_says_so():
    model, extensions = machine.parse_cpuinfo(
        "model name : AMD EPYC\nflags : avx avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert (model, extensions) == ("AMD EPYC", ["AVX2", "AVX-512F", "AVX-512 BF16",
                                                "AVX-512 VNNI"])
    assert machine.parse_cpuinfo("") == ("", [])
    assert machine.summary_line({**machine.describe(""), "extensions": []}).count("no AMX") == 1


def test_the_modules_example_runs():
    assert doctest.testmod(machine).failed == 0


def test_the_summary_names_what_torch_reports_and_the_switches_that_are_set(monkeypatch):
    for name in machine.COMMON_CPU_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMFS_NO_BF16", "1")
    info = machine.describe()
    assert info["dtype"] == "float32"
    assert info["common_cpu_env"] == {"LLMFS_NO_BF16": "1"}
    line = machine.summary_line()
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in line
    assert "training dtype float32" in line and line.endswith("LLMFS_NO_BF16=1")
    assert "\n" not in line


def test_the_lesson_time_table_is_headed_by_the_machine():
    text = lesson_times.table({"L01_Test": 12.0})
    assert text.startswith(f"Measured on: {machine.summary_line()}\n")
    assert "| L01_Test | 12.0 | 60 | within budget |" in text
    assert lesson_times.table({}, machine="a laptop").startswith("Measured on: a laptop\n")
