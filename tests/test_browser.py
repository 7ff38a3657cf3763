"""The coreset explorer in a real browser: JupyterLab + headless Chromium (Playwright).

Starts JupyterLab on a free local port with a token, opens a fresh copy of
``notebooks/06_coreset_explorer.ipynb`` (outputs cleared, so the only explorer
on the page is the live one), runs all cells, moves the ratio slider with the
keyboard as a user would, and checks that the stats change and the figure
renders. A screenshot goes to ``artifacts/explorer.png``.

The notebook reads its data from ``$PCNOTES_DATA``: here a small generated
set, so the whole test takes about a minute. Needs ``/usr/bin/chromium``
(``make browser`` installs it); without it the test fails, it is not skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from pcnotes.synth import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_coreset_explorer.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "artifacts" / "explorer.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
SERVER_START_S = 90
RUN_ALL_S = 240  # the notebook on the small data set, plus kernel start
UPDATE_S = 60

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
    # A small data set keeps the notebook at a few seconds per cell.
    data = generate_dataset(base / "data", n_train=8, n_test_good=4, n_test_per_defect=2)
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
                time.sleep(0.5)
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


def _wait_ready(page, timeout_s: float, previous_stats: str | None = None) -> str:
    """Wait until the explorer says "ready" (and its stats differ from ``previous_stats``).

    Fails at once if a notebook cell raised instead.
    """
    page.wait_for_function(
        """([stats, status, previous]) => {
            const s = document.querySelector(stats), t = document.querySelector(status);
            const ready = s && t && t.innerText.includes('ready') && s.innerText.includes('bank size')
                && (previous === null || s.innerText !== previous);
            const model = window.jupyterapp.shell.currentWidget.content.model;
            for (let i = 0; i < model.cells.length; i++) {
                const cell = model.cells.get(i);
                for (let j = 0; cell.type === 'code' && j < cell.outputs.length; j++) {
                    if (cell.outputs.get(j).type === 'error') return true;
                }
            }
            return ready;
        }""",
        arg=[STATS, STATUS, previous_stats], timeout=timeout_s * 1000, polling=250)
    errors = _notebook_errors(page)
    assert not errors, f"the notebook raised: {errors}"
    return page.locator(STATS).inner_text()


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
    """Open the notebook, run it, move the slider, check the views, take the screenshot."""
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

    before = _wait_ready(page, RUN_ALL_S)
    assert "bank size" in before and "AUROC" in before

    handle = page.locator(".pcnotes-explorer-ratio .noUi-handle")
    handle.focus()
    # Each key is one step of 0.1 on the log10 scale. Keys pressed while an update runs are
    # lost (the slider is disabled meanwhile), so the ratio ends somewhere above 1 %.
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    after = _wait_ready(page, UPDATE_S, previous_stats=before)
    bank = [line for line in after.splitlines() if line.startswith("bank size")]
    assert bank and bank != [line for line in before.splitlines() if line.startswith("bank size")]

    page.wait_for_timeout(1000)  # let any further queued update finish too
    _wait_ready(page, UPDATE_S)
    image = page.locator(".pcnotes-explorer-plots img")
    image.wait_for(state="visible")
    width, height = image.evaluate(
        "img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
    assert width > 300 and height > 200, (width, height)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.locator(".pcnotes-explorer").screenshot(path=str(SCREENSHOT))
    print(f"\nscreenshot: {SCREENSHOT}")
    print("stats before:\n" + before + "\nstats after:\n" + after)
