"""The sync check really fails on a drifted .py/.ipynb pair."""

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
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


@pytest.mark.slow
def test_check_covers_the_deep_dives_in_deeper(tmp_path):
    (tmp_path / "deeper").mkdir()
    for py in (tmp_path / "01_core.py", tmp_path / "deeper" / "01_detail.py"):
        py.write_text(SCRIPT)
        jupytext.write(jupytext.read(py), py.with_suffix(".ipynb"))
    result = run_check(tmp_path)
    assert result.returncode == 0 and "2 notebook pairs checked" in result.stdout

    (tmp_path / "deeper" / "01_detail.py").write_text(SCRIPT.replace("x = 1", "x = 5"))
    result = run_check(tmp_path)
    assert result.returncode == 1 and "01_detail.py" in result.stderr and "x = 5" in result.stderr


def test_check_names_a_deep_dive_that_no_glob_would_pick_up(tmp_path):
    (tmp_path / "01_core.py").write_text(SCRIPT)
    jupytext.write(jupytext.read(tmp_path / "01_core.py"), tmp_path / "01_core.ipynb")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "fast_coreset.py").write_text(SCRIPT)
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert "fast_coreset.py is not named NN_topic.py" in result.stderr


@pytest.mark.slow
def test_execute_runs_a_deep_dive_in_its_own_folder(tmp_path):
    (tmp_path / "deeper").mkdir()
    (tmp_path / "01_core.py").write_text(SCRIPT)
    (tmp_path / "deeper" / "01_detail.py").write_text(
        "# %%\nfrom pathlib import Path\nprint(Path.cwd().name)\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "nbsync.py"), "execute", str(tmp_path),
                             "--only", "01_detail"], capture_output=True, text=True)
    assert "01_detail.ipynb: executed" in result.stdout, result.stderr
    executed = nbformat.read(tmp_path / "deeper" / "01_detail.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "deeper"
    assert not (tmp_path / "01_core.ipynb").exists()  # --only ran just the one
