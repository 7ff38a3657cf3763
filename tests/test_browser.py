"""The coreset explorer in a real browser: JupyterLab + headless Chromium (Playwright).

Starts JupyterLab on a free local port with a token, opens a fresh copy of
``notebooks/06_coreset_explorer.ipynb`` (outputs cleared, so the only explorer
on the page is the live one) and runs all cells, on the data set a learner
gets (the generated one). Then it moves the ratio slider with the keyboard as
a user would:

* a sweep of single steps, each waited for: it prints every step's latency
  (key press to new stats on the page) and does not assert them;
* five quick steps, not waited for: the explorer must end at the fifth value.

It checks that the figure renders, and saves a screenshot to
``artifacts/explorer.png``. Every wait is for a condition, with a timeout.
Needs ``/usr/bin/chromium`` (``make browser`` installs it); without it the
test fails, it is not skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from pcnotes.data.synth import ensure_default_dataset

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_coreset_explorer.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "artifacts" / "explorer.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
SERVER_START_S = 90
RUN_ALL_S = 900  # kernel start and the whole notebook, features included, on busy cores
UPDATE_S = 300  # one update; the first step above 10 % runs the greedy sampler to 100 %

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _request(method: str, url: str, timeout: float = 10) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout).read()


def _fresh_notebook_copy(folder: Path) -> Path:
    """The explorer notebook with outputs and saved widget state removed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    path = folder / NOTEBOOK.name
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1: yields (base url, token); always stopped afterwards."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` to install Debian's chromium "
                    "(the browser test must run, not be skipped)")
    base = tmp_path_factory.mktemp("lab")
    work, settings = base / "work", base / "settings"
    work.mkdir()
    _fresh_notebook_copy(work)
    # The data set a learner gets, so that the latencies printed are the ones a learner sees.
    data = ensure_default_dataset()
    # No news or update checks: nothing pops up over the notebook. And every cell stays in
    # the page: by default JupyterLab only renders the cells near the viewport.
    for plugin, values in [("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                           ("notebook-extension/tracker", {"windowingMode": "none"})]:
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, PCNOTES_DATA=str(data), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
               JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    log = (base / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.shutdown_no_activity_timeout=600"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}; see {base / 'server.log'}")
            try:
                json.loads(_get(f"{url}/api/status?token={token}"))
                break
            except (urllib.error.URLError, ConnectionError, ValueError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not answer within {SERVER_START_S} s") from None
                try:  # wait for the server to exit, for half a second at most, then ask again
                    server.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
        yield url, token
    finally:
        _stop(server, url, token)
        log.close()
        print(f"\njupyter lab log: {base / 'server.log'}")


def _stop(server: subprocess.Popen, url: str, token: str) -> None:
    """Shut down the kernels and the server, then make sure the process group is gone."""
    try:
        for session in json.loads(_get(f"{url}/api/sessions?token={token}")):
            _request("DELETE", f"{url}/api/sessions/{session['id']}?token={token}")
    except (OSError, ValueError):
        pass  # the server may already be gone; the process group is killed below anyway
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    try:  # kernels started by the server live in its process group too
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


STATS = ".pcnotes-explorer-stats"
STATUS = ".pcnotes-explorer-status"
READOUT = ".pcnotes-explorer-ratio .widget-readout"
PLOT = "img.pcnotes-explorer-plot"


def _wait_shown(page, timeout_s: float, previous_stats: str | None = None) -> str:
    """Wait until the explorer is ready and shows the ratio its slider reads; return the stats.

    "Shows" means: the status says "ready", the stats table's "coreset ratio"
    row equals the slider's readout, and (if given) the stats differ from
    ``previous_stats``. Fails at once if a notebook cell raised instead.
    """
    page.wait_for_function(
        """([stats, status, readout, previous]) => {
            const s = document.querySelector(stats), t = document.querySelector(status),
                  r = document.querySelector(readout);
            const row = s && [...s.querySelectorAll('tr')].find(
                tr => tr.querySelector('th')?.innerText.trim() === 'coreset ratio');
            const shown = row && r && t && t.innerText.includes('ready')
                && row.querySelector('td').innerText.trim() === r.innerText.trim()
                && (previous === null || s.innerText !== previous);
            const model = window.jupyterapp.shell.currentWidget.content.model;
            for (let i = 0; i < model.cells.length; i++) {
                const cell = model.cells.get(i);
                for (let j = 0; cell.type === 'code' && j < cell.outputs.length; j++) {
                    if (cell.outputs.get(j).type === 'error') return true;
                }
            }
            return shown;
        }""",
        arg=[STATS, STATUS, READOUT, previous_stats], timeout=timeout_s * 1000, polling=20)
    errors = _notebook_errors(page)
    assert not errors, f"the notebook raised: {errors}"
    return page.locator(STATS).inner_text()


def _row(stats: str, name: str) -> str:
    """The value of one row of the stats table's text, e.g. ``_row(stats, "bank size")``."""
    for line in stats.splitlines():
        if line.startswith(name):
            return line[len(name):].strip()
    raise AssertionError(f"no {name!r} row in the stats:\n{stats}")


def test_the_explorer_slider_works_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(60_000)
            try:
                _drive(page, url, token)
            except Exception:
                # Leave evidence: what the page showed, and the notebook's error outputs.
                SCREENSHOT.parent.mkdir(exist_ok=True)
                failure = SCREENSHOT.with_name("explorer-failure.png")
                page.screenshot(path=str(failure), full_page=True)
                print(f"\nfailure screenshot: {failure}\nnotebook errors: {_notebook_errors(page)}")
                raise
        finally:
            browser.close()


def _notebook_errors(page) -> list[str]:
    """``ename: evalue`` of every error output in the open notebook (read from its model:
    JupyterLab only renders the cells near the viewport)."""
    try:
        return page.evaluate("""() => {
            const model = window.jupyterapp.shell.currentWidget.content.model, errors = [];
            for (let i = 0; i < model.cells.length; i++) {
                const cell = model.cells.get(i);
                if (cell.type !== 'code') continue;
                for (let j = 0; j < cell.outputs.length; j++) {
                    const out = cell.outputs.get(j).toJSON();
                    if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
                }
            }
            return errors;
        }""")
    except Exception as error:  # the page itself may be the problem
        return [f"(could not read the notebook: {error})"]


def _drive(page, url: str, token: str) -> None:
    """Open the notebook, run it, sweep the slider, press it quickly, check the views."""
    page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    # The notebook names the venv's python3 kernel; accept a kernel dialog if one shows.
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    if dialog.count():
        dialog.first.click()
    kernel = page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.sessionContext.ready;
        return panel.context.sessionContext.session.kernel.name;
    }""")
    assert kernel == "python3"
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    stats = _wait_shown(page, RUN_ALL_S)
    assert not _row(stats, "test image").startswith("good/"), "the explorer should open on a defect"
    # The radius is given in the space of the heat map's scores (1024-d mean_mapped features in 06).
    assert _row(stats, "coverage radius").endswith("(1024-d, the space of the scores)"), stats
    # Every cell has run: the explorer's later updates go on while the kernel is idle.
    page.wait_for_function("""() => {
        const panel = window.jupyterapp.shell.currentWidget;
        return panel.context.sessionContext.session.kernel.status === 'idle'
            && !panel.content.widgets.some(cell => cell.promptNode?.innerText.includes('*'));
    }""", timeout=RUN_ALL_S * 1000, polling=250)

    handle = page.locator(".pcnotes-explorer-ratio .noUi-handle")
    handle.focus()
    # One key is one step of 0.1 on the log10 scale. First five quick steps, none waited for,
    # to banks not seen yet: the explorer must end at the fifth.
    start_ratio = float(page.locator(READOUT).inner_text())
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    stats = _wait_shown(page, UPDATE_S, previous_stats=stats)
    expected = f"{start_ratio * 10 ** 0.5:.4f}"
    assert page.locator(READOUT).inner_text().strip() == expected
    assert _row(stats, "coreset ratio") == expected, stats
    print(f"\nfive quick steps from {start_ratio:.4f}: shows {_row(stats, 'coreset ratio')}, "
          f"expected {expected}")

    # Then a sweep of single steps, each waited for: up to 20 % (the first step above 10 % runs
    # the greedy sampler to 100 %), then down to 0.1 %.
    rows = []
    for key in ["ArrowRight"] * 8 + ["ArrowLeft"] * 23:
        start = time.perf_counter()
        page.keyboard.press(key)
        new_stats = _wait_shown(page, UPDATE_S, previous_stats=stats)
        rows.append((time.perf_counter() - start, new_stats, page.locator(STATUS).inner_text()))
        stats = new_stats
    _print_latencies(rows)

    image = page.locator(PLOT)
    image.wait_for(state="visible")
    width, height = image.evaluate(
        "img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
    assert width > 300 and height > 200, (width, height)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.locator(".pcnotes-explorer").screenshot(path=str(SCREENSHOT))
    print(f"screenshot: {SCREENSHOT}\nstats at the end:\n{stats}")


def _print_latencies(rows: list[tuple[float, str, str]]) -> None:
    """One line per step, then the median of the steps to a new bank that ran no sampler."""
    print("explorer latency, key press to new stats in the page (printed, not asserted);")
    print("kernel: the whole update (numbers, figure, PNG), and the numbers alone")
    print(f"{'ratio':>8} {'bank':>8} {'page':>8}  kernel")
    fresh = []
    for seconds, stats, status in rows:
        footer = stats.splitlines()[-1]  # "numbers computed in ... (coreset ..., scores ...)"
        if "scores from cache" in footer:
            kind = "cached"
        elif "new greedy run" in footer:
            kind = "sampler run"
        else:
            kind = "new"
            fresh.append(seconds)
        bank = _row(stats, "bank size").split(" of ")[0]
        whole = status.strip().removeprefix("✓ ready (").removesuffix(")")
        print(f"{_row(stats, 'coreset ratio'):>8} {bank:>8} {seconds:>7.2f}s  {whole}; {footer} [{kind}]")
    if fresh:
        print(f"new banks without a sampler run: {len(fresh)}, median {statistics.median(fresh):.2f} s, "
              f"max {max(fresh):.2f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
