"""Tests for the seed switch (llm_from_scratch.seeding) and the claims tool (code/benchmarks)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "code" / "benchmarks"))
import claims  # noqa: E402
import claims_probe  # noqa: E402


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


SEEDS = """
import random, torch
import llm_from_scratch  # installs the offset, if any
g = torch.Generator().manual_seed(5)
torch.manual_seed(7)
print([torch.rand(1, generator=g).item(), torch.rand(1).item(), random.Random(9).random()])
"""


def test_an_offset_shifts_every_seed_by_that_much():
    plain = json.loads(python(SEEDS).stdout)
    shifted = json.loads(python(SEEDS, LLMFS_SEED_OFFSET="3").stdout)
    expected = json.loads(python(SEEDS.replace("(5)", "(8)").replace("(7)", "(10)")
                                 .replace("(9)", "(12)")).stdout)
    assert shifted == expected and shifted != plain
    assert json.loads(python(SEEDS, LLMFS_SEED_OFFSET="0").stdout) == plain


def test_a_malformed_offset_is_a_clear_error():
    result = python("import llm_from_scratch", LLMFS_SEED_OFFSET="two")
    assert result.returncode != 0
    assert "LLMFS_SEED_OFFSET must be an integer" in result.stderr
    assert "Traceback" in result.stderr and "int()" not in result.stderr.splitlines()[-1]


def test_the_model_cache_keys_on_the_seed_offset_and_the_cpu_path():
    key = ("from llm_from_scratch.artifacts import artifact_key; "
           "print(artifact_key('m', {'a': 1}, 'src'))")
    keys = {python(key).stdout, python(key, LLMFS_SEED_OFFSET="1").stdout,
            python(key, LLMFS_NO_BF16="1").stdout}
    assert len(keys) == 3


def run_cell(source: str, recorder: claims_probe.Recorder) -> dict:
    tree = claims_probe.AssertRewriter().visit(ast.parse(source))
    namespace = {claims_probe.HOOK: recorder}
    exec(compile(ast.fix_missing_locations(tree), "<cell>", "exec"), namespace)
    return namespace


def test_the_probe_records_each_clause_and_does_not_stop_at_a_failure(tmp_path):
    recorder = claims_probe.Recorder(str(tmp_path / "log.json"))
    namespace = run_cell("loss = 2.5\nassert loss < 3 and loss > 2.6\nafter = True\n"
                         "for x in (1, 4):\n    assert 0 <= x < 5\n", recorder)
    assert namespace["after"]  # the failing assert did not raise
    first, loop = recorder.asserts[":2"], recorder.asserts[":5"]
    holds, fails = first["clauses"]["loss < 3"], first["clauses"]["loss > 2.6"]
    assert holds["passed"] and holds["margin"] == pytest.approx(0.5)
    assert not fails["passed"] and fails["margin"] == pytest.approx(-0.1)
    assert first["failures"] == 1 and loop["evaluations"] == 2
    assert loop["clauses"]["0 <= x < 5"]["margin"] == pytest.approx(1)  # the tightest of the two


def test_the_tool_measures_a_page_in_a_fresh_kernel(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("---\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n"
                    "```{code-cell} ipython3\nfrom myst_nb import glue\nx = 0.3\n"
                    "assert x < 0.5 and x > 0.4\nglue('x', x, display=False)\n```\n\n"
                    "```{code-cell} ipython3\nraise ValueError('boom')\n```\n")
    result = claims.execute(page, tmp_path / "log.json")
    (entry,) = result["asserts"].values()
    assert entry["file_line"] == 10 and entry["cell_index"] == 1
    assert entry["clauses"]["x > 0.4"]["margin"] == pytest.approx(-0.1)
    assert result["glued"] == {"x": 0.3}
    assert [e["error"] for e in result["errors"]] == ["ValueError: boom"]


def test_lessons_are_named_by_path_stem_or_prefix():
    pages = claims.resolve_pages(["lessons/L09_Inference_and_Sampling.md", "L05", "LA"])
    assert [p.stem for p in pages] == ["L05_Normalization_and_Residuals",
                                       "L09_Inference_and_Sampling", "LA_Before_Attention"]
    assert len(claims.resolve_pages(["L10"])) == 3
    with pytest.raises(SystemExit, match="no page matches 'L99'"):
        claims.resolve_pages(["L99"])
