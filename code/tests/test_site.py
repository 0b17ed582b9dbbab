"""The built site, read in a real browser: headless Chromium driven by Playwright.

These tests need the built book (``_build/html``, or ``$LLMFS_SITE_DIR``) and Chromium (Debian's
``chromium`` package; Playwright drives it through its executable, no browser download).
``.ci/run`` runs them after the build (installing Chromium when it is missing); by hand:
``LLMFS_SITE_TESTS=1 pytest code/tests/test_site.py``. The site is
served on localhost and every request to another host is refused, so a page that needs
the network to render shows up as a failed request. Screenshots of the landing page and a lesson
are written to ``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("LLMFS_SITE_DIR", REPO / "_build" / "html"))
SCREENSHOTS = SITE.parent / "screenshots"
LESSON = "lessons/L03_The_Attention_Mechanism.html"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LLMFS_SITE_TESTS") != "1",
                       reason="needs the built site and Chromium: set LLMFS_SITE_TESTS=1"),
]


def pages() -> list[str]:
    """Every HTML page of the site, as paths relative to its root."""
    skip = ("_static/", "_sources/", "_images/")
    return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html")
                  if not p.relative_to(SITE).as_posix().startswith(skip))


@pytest.fixture(scope="module")
def server():
    assert (SITE / "index.html").is_file(), "build the book first: jupyter-book build ."
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports failures itself
        pass


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    # $LLMFS_CHROMIUM: another Chromium-based browser (GitHub's runners ship Google Chrome).
    executable = (os.environ.get("LLMFS_CHROMIUM") or shutil.which("chromium")
                  or shutil.which("chromium-browser"))
    assert executable, "Chromium is not installed (.ci/run installs Debian's chromium package)"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


class PageReport:
    """A page opened offline: its console errors and its failed or refused requests."""

    def __init__(self, browser, base: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        host = urlparse(base).netloc

        def route(r):
            if urlparse(r.request.url).netloc == host or r.request.url.startswith("data:"):
                r.continue_()
            else:  # offline: the site must not need another host to render
                self.failed.append(f"external request {r.request.url}")
                r.abort()

        self.page.route("**/*", route)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.failed.append(f"failed {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(
            f"HTTP {r.status} {r.url}"))

    def open(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        # MathJax typesets after load; wait for it where the page has math.
        self.page.evaluate("async () => { if (window.MathJax && MathJax.startup) "
                           "await MathJax.startup.promise; }")

    def close(self) -> None:
        self.context.close()


def test_every_page_loads_offline_with_typeset_math_and_images(server, browser):
    problems = []
    for path in pages():
        report = PageReport(browser, server)
        try:
            report.open(server + path)
            page = report.page
            raw_math = page.evaluate(
                "() => [...document.querySelectorAll('.math')]"
                ".filter(e => !e.querySelector('mjx-container')).length")
            images = page.evaluate(
                "async () => { const imgs = [...document.images];"
                " imgs.forEach(i => i.loading = 'eager');"
                " await Promise.all(imgs.map(i => i.complete ? 0 : new Promise("
                "   r => { i.onload = i.onerror = r; })));"
                " return imgs.filter(i => i.naturalWidth === 0).map(i => i.src); }")
            text = page.inner_text("article") if page.query_selector("article") else ""
            if "$$" in text:
                problems.append(f"{path}: raw $$ left in the text")
            if raw_math:
                problems.append(f"{path}: {raw_math} math elements not typeset")
            problems += [f"{path}: image did not load: {src}" for src in images]
            problems += [f"{path}: console: {e}" for e in report.errors]
            problems += [f"{path}: {f}" for f in report.failed]
        finally:
            report.close()
    assert not problems, "\n".join(problems[:50])


def test_no_table_is_cut_off_at_the_pages_edge(server, browser):
    # a table wider than the article must scroll inside its own box, not run past the edge
    problems = []
    for path in pages():
        report = PageReport(browser, server)
        try:
            report.open(server + path)
            cut = report.page.evaluate(
                "() => { const article = document.querySelector('article');"
                " if (!article) return [];"
                " const edge = article.getBoundingClientRect().right + 1;"
                " return [...article.querySelectorAll('table')].filter(t => {"
                "   const style = getComputedStyle(t);"
                "   const scrolls = ['auto', 'scroll'].includes(style.overflowX);"
                "   return t.getBoundingClientRect().right > edge && !scrolls; }).length; }")
            if cut:
                problems.append(f"{path}: {cut} table(s) run past the page's edge")
        finally:
            report.close()
    assert not problems, "\n".join(problems)


def test_search_for_attention_returns_the_attention_lessons(server, browser):
    report = PageReport(browser, server)
    try:
        report.open(server + "search.html?q=attention")
        report.page.wait_for_selector("#search-results ul li a", timeout=30_000)
        hrefs = report.page.eval_on_selector_all("#search-results ul li a",
                                                 "links => links.map(a => a.href)")
        assert any("L03_The_Attention_Mechanism" in h for h in hrefs), hrefs
        assert any("L04_Multi_Head_Attention" in h for h in hrefs), hrefs
        assert not report.errors and not report.failed, report.errors + report.failed
    finally:
        report.close()


def test_dark_mode_toggles(server, browser):
    report = PageReport(browser, server)
    try:
        report.open(server + "index.html")
        page = report.page
        themes = [page.evaluate("() => document.documentElement.dataset.theme")]
        for _ in range(2):  # light -> dark -> auto, or as the theme cycles
            page.click(".theme-switch-button")
            themes.append(page.evaluate("() => document.documentElement.dataset.theme"))
        assert "dark" in themes and len(set(themes)) >= 2, themes
        assert not report.errors, report.errors
    finally:
        report.close()


def test_a_hidden_solution_opens(server, browser):
    report = PageReport(browser, server)
    try:
        report.open(server + LESSON)
        page = report.page
        summary = page.locator("details summary", has_text="Show solution").first
        details = summary.locator("xpath=..")
        assert details.evaluate("d => d.open") is False
        summary.click()
        assert details.evaluate("d => d.open") is True
        assert details.locator("pre").count() > 0  # the solution's code is inside
    finally:
        report.close()


def test_the_notebook_download_is_a_valid_notebook_with_outputs(server, browser):
    import nbformat

    report = PageReport(browser, server)
    try:
        report.open(server + LESSON)
        hrefs = report.page.eval_on_selector_all("a[href$='.ipynb']", "as => as.map(a => a.href)")
    finally:
        report.close()
    local = [h for h in hrefs if h.startswith(server)]
    assert local, f"no .ipynb download link on {LESSON}: {hrefs}"
    with urllib.request.urlopen(local[0]) as response:
        notebook = nbformat.reads(response.read().decode(), as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert sum(bool(c.outputs) for c in code) > len(code) / 2  # executed: outputs are kept
    # Every lesson's download, whether executed in this build or served from the cache.
    for lesson in sorted((REPO / "lessons").glob("L*.md")):
        download = nbformat.read(SITE / "_sources" / "lessons" / f"{lesson.stem}.ipynb", 4)
        code = [c for c in download.cells if c.cell_type == "code"]
        assert sum(bool(c.outputs) for c in code) > len(code) / 2, lesson.stem


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "link", "img", "script"):
                self.links.append(attrs[key])


@functools.cache
def parsed(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8", errors="replace"))
    return links


def test_every_internal_link_and_anchor_resolves():
    broken = []
    for rel in pages():
        source = SITE / rel
        for link in parsed(source).links:
            url = urlparse(link)
            if url.scheme or link.startswith(("//", "mailto:", "javascript:", "data:")):
                continue
            target = source if not url.path else Path(
                unquote(urljoin(source.as_uri(), url.path)).removeprefix("file://"))
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{rel}: {link} (no such file)")
            elif url.fragment and target.suffix == ".html" and \
                    unquote(url.fragment) not in parsed(target).ids:
                broken.append(f"{rel}: {link} (no such anchor)")
    assert not broken, "\n".join(broken[:50])


def test_every_lesson_launches_in_binder_as_its_own_source():
    """The launch button opens the repository's lesson file in JupyterLab on Binder."""
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text())
    org, repo = urlparse(config["repository"]["url"]).path.strip("/").split("/")
    binder = (f"{config['launch_buttons']['binderhub_url']}/v2/gh/{org}/{repo}/"
              f"{config['repository']['branch']}?urlpath=lab/tree/")
    lessons = sorted((REPO / "lessons").glob("L*.md"))
    assert lessons
    for lesson in lessons:
        links = parsed(SITE / "lessons" / f"{lesson.stem}.html").links
        launch = [link for link in links if link.startswith(binder)]
        assert launch == [f"{binder}lessons/{lesson.name}"], (lesson.stem, launch)
    # Binder installs binder/requirements.txt (tested in test_contributing.py), and its home is
    # the repository, so .jupyter/labconfig opens the .md as a notebook (test_jupyterlab.py).
    assert (REPO / "binder" / "requirements.txt").is_file()


def test_screenshots_of_the_landing_page_and_a_lesson(server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {}
    for name, path in (("landing", "index.html"), ("lesson", LESSON)):
        report = PageReport(browser, server)
        try:
            report.open(server + path)
            shots[name] = SCREENSHOTS / f"{name}.png"
            report.page.screenshot(path=str(shots[name]), full_page=False)
        finally:
            report.close()
    for name, shot in shots.items():
        assert shot.stat().st_size > 10_000
        print(f"screenshot of the {name}: {shot}")
    (SCREENSHOTS / "index.json").write_text(json.dumps({k: str(v) for k, v in shots.items()}))


def test_one_search_box(server, browser):
    report = PageReport(browser, server)
    try:
        report.open(server + LESSON)
        visible = report.page.evaluate(
            "() => [...document.querySelectorAll('.search-button-field, form.bd-search')]"
            ".filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0).length")
        assert visible == 1, f"{visible} search boxes visible on a desktop-wide page"
    finally:
        report.close()
