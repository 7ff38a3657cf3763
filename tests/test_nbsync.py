"""The sync check really fails on a drifted .py/.ipynb pair."""

import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = '# %% [markdown]\n# # A title\n\n# %%\nx = 1\nprint(x)\n'


def run_check(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "nbsync.py"), "check", str(directory)],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_check_passes_on_a_pair_and_fails_once_the_script_drifts(tmp_path):
    py = tmp_path / "01_demo.py"
    py.write_text(SCRIPT)
    jupytext.write(jupytext.read(py), tmp_path / "01_demo.ipynb")
    assert run_check(tmp_path).returncode == 0

    py.write_text(SCRIPT.replace("x = 1", "x = 2"))
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "cell 2 differs" in result.stderr and "x = 2" in result.stderr


@pytest.mark.slow
def test_check_fails_on_a_missing_notebook_or_an_added_cell(tmp_path):
    py = tmp_path / "02_demo.py"
    py.write_text(SCRIPT)
    assert "is missing" in run_check(tmp_path).stderr
    jupytext.write(jupytext.read(py), tmp_path / "02_demo.ipynb")
    py.write_text(SCRIPT + "\n# %%\ny = 3\n")
    assert "has 3 cells" in run_check(tmp_path).stderr


@pytest.mark.slow
def test_the_committed_notebooks_are_in_sync():
    result = run_check(ROOT / "notebooks")
    assert result.returncode == 0, result.stderr
