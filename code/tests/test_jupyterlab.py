"""Learners open lessons in JupyterLab: a real server serves each ``.md`` as a notebook.

The server is started as a learner starts it (README: ``JUPYTER_CONFIG_PATH=.jupyter jupyter
lab``) and as Binder's launch buttons start it (the repository is the home directory, so
``.jupyter`` is the user's own configuration), on a copy of the lessons, and driven through its
REST API: the contents API must hand
out a lesson as a notebook (Jupytext's contents manager), a save must write the ``.md`` back and
nothing else, and the settings API must show that a double click opens a lesson as a notebook.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JUPYTER = Path(sys.executable).with_name("jupyter")
TOKEN = "llmfs-test-token"
LESSON = "L01_Tokenization_From_Scratch.md"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["learner", "binder"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    shutil.copytree(REPO / "lessons", root / "lessons")
    shutil.copy(REPO / "jupytext.toml", root / "jupytext.toml")
    port = free_port()
    if request.param == "learner":  # the README's command, from a clone
        env = {**os.environ, "JUPYTER_CONFIG_PATH": str(REPO / ".jupyter"),
               "JUPYTER_CONFIG_DIR": str(root / ".jupyter-user"),
               "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    else:  # Binder copies the repository into the home directory and runs a plain jupyter lab
        shutil.copytree(REPO / ".jupyter", root / ".jupyter")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
        env["HOME"] = str(root)
    process = subprocess.Popen(
        [str(JUPYTER), "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # a cold start on a busy machine can take a while
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {process.stdout.read()[-3000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within a minute")
        yield base, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def api(base: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def test_the_contents_api_serves_a_lesson_as_a_notebook(server):
    base, _ = server
    model = api(base, f"/api/contents/lessons/{LESSON}?type=notebook&content=1")
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert len(code) > 10 and any("show_source" in c["source"] for c in code)
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"].startswith("# ")


def test_saving_writes_back_the_markdown_only(server):
    base, root = server
    lessons = root / "lessons"
    before = sorted(p.name for p in lessons.iterdir())
    model = api(base, f"/api/contents/lessons/{LESSON}?type=notebook&content=1")
    model["content"]["cells"][0]["source"] += "\n\nA learner's note."
    api(base, f"/api/contents/lessons/{LESSON}", "PUT",
        {"type": "notebook", "format": "json", "content": model["content"]})
    text = (lessons / LESSON).read_text()
    assert "A learner's note." in text
    assert text.startswith("---\njupytext:") and "execution_timeout" in text  # front matter kept
    # Apart from the note, the file is what the repository holds: a save loses nothing.
    original = (REPO / "lessons" / LESSON).read_text()
    assert text.replace("\n\nA learner's note.", "", 1) == original
    assert sorted(p.name for p in lessons.iterdir()) == before  # no .ipynb beside it


def test_a_double_click_opens_a_lesson_as_a_notebook(server):
    base, _ = server
    settings = api(base, "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    # The repository's overrides become the defaults of the document manager's settings...
    viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers["markdown"] == "Jupytext Notebook"
    # ...and the factory they name is the one the Jupytext extension registers in JupyterLab.
    extension = Path(sys.prefix, "share", "jupyter", "labextensions", "jupyterlab-jupytext")
    bundle = "".join(p.read_text(errors="ignore") for p in extension.rglob("*.js"))
    assert "Jupytext Notebook" in bundle
