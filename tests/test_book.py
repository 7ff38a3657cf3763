"""The rendered book in headless Chromium, offline: every page, every image, link and formula.

The book is built once (``tools/build_book.py``, the same as ``make book``) into
a temporary folder and served from 127.0.0.1. The browser context lets through
requests to that server only: any other request (a CDN, a font service) is
aborted and fails the test, which is what "reads fully offline" means. On every
page: no console errors, every ``<img>`` decoded, every formula typeset by
MathJax (no raw ``$$`` left), every internal link pointing at a file of the
site and, with ``#anchor``, at an element that exists. Needs ``/usr/bin/chromium``
(``make browser``); without it the test fails, it is not skipped.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
BUILD_S = 600
PAGE_MS = 30_000
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
HIDDEN_OUTPUT_TAGS = {"remove-output", "remove-cell", "hide-output"}  # myst-nb drops these outputs

pytestmark = pytest.mark.browser

# What one page reports once it has loaded and MathJax has finished.
PAGE_REPORT_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const text = document.body.cloneNode(true);
  text.querySelectorAll("pre, code, script, style, mjx-container, .math").forEach(e => e.remove());
  const formulas = Array.from(document.querySelectorAll("span.math, div.math"));
  return {
    images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
    formulas: formulas.length,
    untypeset: formulas.filter(e => !e.querySelector("mjx-container")).map(e => e.textContent.slice(0, 80)),
    typeset: document.querySelectorAll("mjx-container").length,
    rawMath: (text.textContent.match(/\\$\\$|\\\\begin\\{|\\\\\\(|\\\\\\[/g) || []).length,
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(e => e.id || e.getAttribute("name")),
    refresh: !!document.querySelector('meta[http-equiv="refresh"]'),
    bodyText: document.body.innerText,
    clipped: Array.from(document.querySelectorAll("pre")).filter(e => e.scrollWidth > e.clientWidth + 1)
      .map(e => e.textContent.slice(0, 60)),
  };
}
"""


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Path:
    """``make book``'s site, built once per session into a temporary folder."""
    out = tmp_path_factory.mktemp("book") / "html"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), str(out)],
                            capture_output=True, text=True, timeout=BUILD_S, cwd=ROOT)
    assert result.returncode == 0, f"the book build failed:\n{result.stdout}\n{result.stderr}"
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output for failures
        pass


@pytest.fixture(scope="session")
def site(book):
    """``(base URL, folder)`` of the book served on 127.0.0.1; stopped afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", book
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pages(book: Path) -> list[str]:
    """Every HTML page of the site, relative to its root."""
    skip = ("_static/", "_sources/", "_downloads/", "_images/", ".doctrees/")
    pages = [p.relative_to(book).as_posix() for p in book.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(skip))


def _source_of(page: str) -> Path | None:
    """The notebook or Markdown file a page was made from, if it is one of the repository's."""
    for suffix in (".ipynb", ".md"):
        source = ROOT / Path(page).with_suffix(suffix)
        if source.is_file():
            return source
    return None


def _has_display_math(markdown: str) -> bool:
    """``$$`` outside code: fenced blocks and inline code spans do not count."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", markdown, flags=re.DOTALL)
    return "$$" in prose


def _expected_figures_and_math(source: Path) -> tuple[int, bool]:
    """How many image outputs the reader should see, and whether the text has display math."""
    if source.suffix == ".md":
        return 0, _has_display_math(source.read_text(encoding="utf-8"))
    notebook = nbformat.read(source, as_version=4)
    figures, math = 0, False
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            math = math or _has_display_math(cell.source)
        elif not HIDDEN_OUTPUT_TAGS & set(cell.metadata.get("tags", [])):
            figures += sum(any(k in o.get("data", {}) for k in IMAGE_TYPES) for o in cell.outputs)
    return figures, math


def _site_path(url: str, base: str) -> str | None:
    """The site-relative file a same-site URL names (``None`` for another site)."""
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path)[len(urlsplit(base).path):]
    return path + "index.html" if path == "" or path.endswith("/") else path


@pytest.fixture(scope="module")
def visited(site):
    """Open every page once; return ``(reports by page, blocked requests, base URL, folder)``."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` to install Debian's chromium "
                    "(the book test must run, not be skipped)")
    from playwright.sync_api import sync_playwright

    base, book = site
    blocked: list[str] = []

    def only_this_site(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    reports = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", only_this_site)
            for page_path in _pages(book):
                page = context.new_page()
                problems: list[str] = []
                page.on("console", lambda m, p=problems: p.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e, p=problems: p.append(f"page error: {e}"))
                page.on("response", lambda r, p=problems: p.append(f"HTTP {r.status}: {r.url}")
                        if r.status >= 400 else None)
                page.goto(base + page_path, wait_until="load", timeout=PAGE_MS)
                if page_path == "index.html":  # the site root sends the reader to the landing page
                    page.wait_for_url(base + "book/index.html", timeout=PAGE_MS)
                    reports[page_path] = {"redirected_to": page.url, "problems": problems}
                    page.close()
                    continue
                page.wait_for_load_state("networkidle", timeout=PAGE_MS)
                report = page.evaluate(PAGE_REPORT_JS)
                report["problems"] = problems
                reports[page_path] = report
                if page_path == "notebooks/04_scoring_and_heatmaps.html":
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.locator("div.math").first.scroll_into_view_if_needed()
                    page.screenshot(path=str(ARTIFACTS / "book_math.png"))
                page.close()
            context.close()
        finally:
            browser.close()
    return reports, blocked, base, book


def test_the_book_has_a_page_for_every_notebook_readme_and_doc(visited):
    reports, _, base, book = visited
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    sources += sorted((ROOT / "notebooks" / "deeper").glob("*.ipynb")) + sorted((ROOT / "docs").glob("*.md"))
    sources += [p for p in sorted(ROOT.glob("*/README.md")) if not p.parent.name.startswith(".")]
    expected = {"README.html"} | {s.relative_to(ROOT).with_suffix(".html").as_posix() for s in sources}
    assert expected <= set(reports), f"pages missing: {sorted(expected - set(reports))}"
    assert reports["index.html"]["redirected_to"] == base + "book/index.html"
    # the table of contents on the landing page links every one of them
    toc = {_site_path(link, base) for link in reports["book/index.html"]["links"]}
    assert expected <= toc, f"not in the table of contents: {sorted(expected - toc)}"


def test_no_page_asks_for_anything_outside_the_site(visited):
    _, blocked, _, _ = visited
    assert not blocked, f"pages tried to fetch from outside (not offline): {sorted(set(blocked))[:10]}"


def test_every_page_loads_without_console_errors(visited):
    reports, *_ = visited
    problems = {page: r["problems"] for page, r in reports.items() if r["problems"]}
    assert not problems, problems


def test_every_image_is_decoded_and_every_notebook_figure_is_there(visited):
    reports, *_ = visited
    broken = {page: [i["src"] for i in r["images"] if i["width"] == 0]
              for page, r in reports.items() if "images" in r}
    assert not any(broken.values()), {page: srcs for page, srcs in broken.items() if srcs}
    counted = 0
    for page, report in reports.items():
        source = _source_of(page)
        if source is None or "images" not in report:
            continue
        figures, _ = _expected_figures_and_math(source)
        shown = sum(1 for i in report["images"] if "/_images/" in i["src"])
        assert shown >= figures, f"{page}: {shown} figures shown, {source.name} has {figures}"
        counted += figures
    assert counted > 10  # the notebooks' figures really were counted


def test_no_code_or_output_line_is_clipped_at_the_column(visited):
    reports, *_ = visited
    clipped = {page: r["clipped"] for page, r in reports.items() if r.get("clipped")}
    assert not clipped, clipped


def test_math_is_typeset_on_every_page_that_has_some(visited):
    reports, *_ = visited
    pages_with_math = 0
    for page, report in reports.items():
        if "formulas" not in report:
            continue
        assert not report["untypeset"], f"{page}: formulas left raw: {report['untypeset'][:3]}"
        assert report["rawMath"] == 0, f"{page}: raw TeX delimiters in the visible text"
        source = _source_of(page)
        if source is not None and _expected_figures_and_math(source)[1]:
            assert report["formulas"] > 0 and report["typeset"] >= report["formulas"], page
            pages_with_math += 1
    assert pages_with_math >= 2  # 03 (triangle inequality) and 04 (eq. 7) have display math


def test_every_internal_link_resolves(visited):
    reports, _, base, book = visited
    ids = {page: set(r.get("ids", [])) for page, r in reports.items()}
    broken = []
    for page, report in reports.items():
        for link in report.get("links", []):
            target = _site_path(link, base)
            if target is None:
                continue  # another site (the paper, the reference code): not fetched here
            if not (book / target).is_file():
                broken.append(f"{page}: {link} (no such file)")
                continue
            fragment = unquote(urlsplit(link).fragment)
            if fragment and target.endswith(".html") and fragment not in ids.get(target, set()):
                html = (book / target).read_text(errors="replace")
                if not re.search(rf'(id|name)="{re.escape(fragment)}"', html):
                    broken.append(f"{page}: {link} (no #{fragment} there)")
    assert not broken, broken[:20]


def test_the_explorer_page_shows_the_snapshot_in_place_of_the_live_widget(visited):
    reports, *_ = visited
    explorer = reports["notebooks/06_coreset_explorer.html"]
    assert "CoresetExplorer(" not in explorer["bodyText"]  # no widget repr where the widget was
    assert any("/_images/" in i["src"] and i["width"] > 300 for i in explorer["images"])


def test_search_finds_a_notebook(site):
    from playwright.sync_api import sync_playwright

    base, _ = site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(base + "search.html?q=coreset", wait_until="load", timeout=PAGE_MS)
            results = page.locator("#search-results a")
            results.first.wait_for(timeout=PAGE_MS)
            hrefs = results.evaluate_all("links => links.map(a => a.href)")
        finally:
            browser.close()
    assert any("notebooks/03_coreset.html" in href for href in hrefs), hrefs
