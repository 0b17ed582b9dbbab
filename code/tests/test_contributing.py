"""The contributor's flow checks itself: pre-commit hooks, the GitHub workflow, the templates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run a tool as a contributor would, its caches (pre-commit's) in ``home``, not the repo."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run(args, cwd=kwargs.pop("cwd", REPO), capture_output=True, text=True,
                          env=env, **kwargs)


def test_workflows_pass_actionlint(tmp_path):
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    result = run(str(BIN / "actionlint"), *map(str, workflows), home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  build:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ github.nonsense }}\n")
    result = run(str(BIN / "actionlint"), str(bad), home=tmp_path)
    assert result.returncode == 1 and "nonsense" in result.stdout


def test_the_workflow_tests_builds_and_deploys():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    triggers = flow[True]  # YAML reads the key `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    steps = "\n".join(str(s.get("run", "")) + str(s.get("uses", ""))
                      for s in flow["jobs"]["build"]["steps"])
    for needed in ("python -m pytest", "jupyter-book build", "actions/cache",
                   "upload-pages-artifact", "lessons.py check"):
        assert needed in steps, needed
    assert "deploy-pages" in str(flow["jobs"]["deploy"]["steps"])
    assert flow["jobs"]["deploy"]["if"].endswith("refs/heads/main'")


def test_pre_commit_config_is_valid(tmp_path):
    result = run(str(BIN / "pre-commit"), "validate-config", ".pre-commit-config.yaml",
                 home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="pre-commit needs a git checkout")
def test_pre_commit_hooks_pass_on_the_repository(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    result = run(str(BIN / "pre-commit"), "run", "--all-files", home=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.count("Passed") >= 5


@pytest.mark.parametrize("name", ["lesson_error.yml", "new_lesson.yml"])
def test_issue_templates_are_valid_forms(name):
    form = yaml.safe_load((REPO / ".github" / "ISSUE_TEMPLATE" / name).read_text())
    assert form["name"] and form["description"] and form["body"]
    assert all(item["type"] in {"input", "textarea", "dropdown", "markdown"}
               for item in form["body"])


def test_pull_request_template_names_the_checks():
    text = (REPO / ".github" / "pull_request_template.md").read_text()
    assert "lessons.py check" in text and "pytest" in text and "jupyter-book build" in text


def test_binder_installs_the_book_requirements_with_cpu_torch():
    """The launch buttons' Binder: pip reads binder/requirements.txt as it will there."""
    # pip's own parser, in a child process: importing pip's internals here would import
    # distutils before setuptools, which later breaks torch.compile in this test process.
    code = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from pip._internal.network.session import PipSession\n"
        "from pip._internal.req.req_file import parse_requirements\n"
        "print(json.dumps([[r.requirement for r in parse_requirements(f, session=PipSession())]\n"
        "                  for f in sys.argv[1:]]))\n"
    )
    binder = REPO / "binder" / "requirements.txt"
    files = [str(binder), str(REPO / "requirements.txt")]
    result = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True,
                            check=True)
    found, ours = json.loads(result.stdout)
    assert found == ours and "torch==2.13.0" in found  # every pin, the package (-e .) included
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in binder.read_text()
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
