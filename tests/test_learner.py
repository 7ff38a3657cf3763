"""The learner edition: solutions out, stubs in, outputs cleared, checkers kept.

Written by ``make learner`` (tools/learner.py, from the .py sources) and by
``python -m pcnotes course DIR`` (from the .ipynb), both through pcnotes.app.edition.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from pcnotes.app import edition
from pcnotes.course import STUB_PHRASE

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "course"


def generate(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "learner.py"), "--source", str(source),
                           "--out", str(out), *extra], capture_output=True, text=True)


def solution_cells(py: Path) -> list:
    return [cell for cell in jupytext.read(py).cells if "solution" in cell.metadata.get("tags", [])]


def solution_text(py: Path) -> list[str]:
    """What must not reach the learner: every statement and comment inside a solution function, and
    every line of a solution markdown cell."""
    hidden = []
    for cell in solution_cells(py):
        if cell.cell_type == "markdown":
            hidden += [line for line in cell.source.splitlines() if line.strip()]
            continue
        lines = cell.source.splitlines()
        for node in ast.parse(cell.source).body:
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body  # the docstring stays
                hidden += [ast.get_source_segment(cell.source, statement) for statement in body]
                hidden += [line.strip() for line in lines[node.lineno:] if line.strip().startswith("#")]
    return hidden


def notebook_sources(folder: Path) -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.py")) + sorted((folder / "deeper").glob("[0-9][0-9]_*.py"))


def assert_learner_edition_of(source: Path, out: Path) -> list[Path]:
    result = generate(source, out)
    assert result.returncode == 0, result.stderr
    written = []
    for py in notebook_sources(source):
        ipynb = out / py.relative_to(source).with_suffix(".ipynb")
        notebook = nbformat.read(ipynb, as_version=4)
        nbformat.validate(notebook)
        assert all(not cell.get("outputs") and cell.get("execution_count") is None
                   for cell in notebook.cells if cell.cell_type == "code")
        text = ipynb.read_text(encoding="utf-8")
        for secret in solution_text(py):
            assert json.dumps(secret)[1:-1] not in text, f"{ipynb.name} shows solution text {secret!r}"
        written.append(ipynb)
    return written


def test_the_fixture_edition_is_valid_and_holds_no_solution_code(tmp_path):
    written = assert_learner_edition_of(FIXTURE, tmp_path / "learner")
    assert [path.relative_to(tmp_path / "learner").as_posix() for path in written] == [
        "01_tiny_course.ipynb", "deeper/01_tiny_detail.ipynb"]
    assert len(solution_text(FIXTURE / "01_tiny_course.py")) >= 6  # the test looks for something real

    learner = nbformat.read(written[0], as_version=4)
    exercises = [cell for cell in learner.cells if "exercise" in cell.metadata.get("tags", [])]
    assert [cell.source.splitlines()[0] for cell in exercises] == [
        "def coreset_size(num_points: int, ratio: float) -> int:",
        "def patchify(features: torch.Tensor, patch_size: int) -> torch.Tensor:"]
    assert all('"""' in cell.source and STUB_PHRASE in cell.source for cell in exercises)  # docstring kept
    assert sum("exercises.check_" in cell.source for cell in learner.cells) == 2  # the checkers stay
    assert not any("**Answer.**" in cell.source for cell in learner.cells)  # hidden answers are dropped
    source_cells = jupytext.read(FIXTURE / "01_tiny_course.py").cells
    assert len(learner.cells) == len(source_cells) - 1


def execute(notebook, folder: Path):
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()


def printed(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


@pytest.mark.slow
def test_the_learner_edition_as_written_runs_to_the_end_on_the_librarys_stages(tmp_path, monkeypatch):
    """Every stub is "not done yet"; adopt() hands the cells that follow the library's function, each
    with one line, and saves nothing."""
    monkeypatch.setenv("PCNOTES_COURSE_DIR", str(tmp_path / "course"))  # the kernel inherits it
    out = tmp_path / "learner"
    assert generate(FIXTURE, out).returncode == 0
    notebook = nbformat.read(out / "01_tiny_course.ipynb", as_version=4)
    execute(notebook, out)  # raises CellExecutionError at the first cell that fails: none did
    checks = [printed(cell) for cell in notebook.cells if "exercises.adopt(" in cell.source]
    assert checks == [f"✗ {name}: not done yet: write your solution in place of the `raise NotImplementedError` "
                      f"line above, then run this check again\n"
                      f"→ {key}: the library's function runs from here on, until your answer passes the check.\n"
                      for name, key in [("coreset size", "coreset_size"), ("patchify", "patchify")]]
    assert printed(notebook.cells[-2]) == "a 10 % coreset of 12544 patches keeps 1254\npatches: (2, 25, 8, 3, 3)\n"
    assert "Traceback" not in nbformat.writes(notebook)
    assert not (tmp_path / "course").exists() or not any((tmp_path / "course").iterdir())


@pytest.mark.slow
def test_with_the_solutions_put_back_the_learner_edition_runs_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("PCNOTES_COURSE_DIR", str(tmp_path / "course"))
    out = tmp_path / "learner"
    assert generate(FIXTURE, out).returncode == 0
    for py in notebook_sources(FIXTURE):
        ipynb = out / py.relative_to(FIXTURE).with_suffix(".ipynb")
        notebook = nbformat.read(ipynb, as_version=4)
        stubs = [cell for cell in notebook.cells if "exercise" in cell.metadata.get("tags", [])]
        solutions = [cell for cell in solution_cells(py) if cell.cell_type == "code"]
        assert len(stubs) == len(solutions) >= 1
        for stub, solution in zip(stubs, solutions):
            stub.source = solution.source
        execute(notebook, ipynb.parent)
        checks = [cell for cell in notebook.cells if "exercises.check_" in cell.source]
        assert all(printed(cell).startswith("✓ ") and printed(cell).count("\n") == 1 for cell in checks)
        assert "Traceback" not in nbformat.writes(notebook)


def test_the_real_notebooks_give_a_valid_edition_without_solution_code(tmp_path):
    written = assert_learner_edition_of(ROOT / "notebooks", tmp_path / "learner")
    assert len(written) == len(notebook_sources(ROOT / "notebooks")) >= 7


@pytest.mark.slow
def test_a_learners_changed_notebook_is_never_overwritten_without_force(tmp_path):
    out = tmp_path / "learner"
    assert generate(FIXTURE, out).returncode == 0
    mine = out / "01_tiny_course.ipynb"
    mine.write_text(mine.read_text(encoding="utf-8").replace("in place of this line", "my own work"), encoding="utf-8")
    result = generate(FIXTURE, out)
    assert result.returncode == 2
    assert f"{mine} was changed since pcnotes wrote it" in result.stderr and "--force" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "my own work" in mine.read_text(encoding="utf-8")
    assert generate(FIXTURE, out).returncode == 2  # and again: no half-done rerun marked it as ours

    assert generate(FIXTURE, out, "--force").returncode == 0
    assert "my own work" not in mine.read_text(encoding="utf-8")
    assert generate(FIXTURE, out).returncode == 0  # an unchanged edition is simply rewritten


def test_a_solution_cell_the_tool_cannot_stub_is_named_before_anything_is_written(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    (source / "01_good.py").write_text((FIXTURE / "01_tiny_course.py").read_text(encoding="utf-8"), encoding="utf-8")
    (source / "02_bad.py").write_text('# %% tags=["solution"]\ndef f(x):\n    return x\n\n\nanswer = f(2)\n')
    result = generate(source, tmp_path / "learner")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "02_bad.py, cell 1, line 5: `answer = f(2)` is neither an import nor a def" in result.stderr
    assert not (tmp_path / "learner").exists()


@pytest.mark.slow
def test_a_notebook_whose_source_is_gone_leaves_the_edition_unless_someone_changed_it(tmp_path):
    source, out = tmp_path / "notebooks", tmp_path / "learner"
    source.mkdir()
    for stem in ("01_kept", "02_gone", "03_edited"):
        (source / f"{stem}.py").write_text(f"# %% [markdown]\n# # {stem}\n")
    assert generate(source, out).returncode == 0
    (out / "03_edited.ipynb").write_text((out / "03_edited.ipynb").read_text().replace("03_edited", "notes"))
    (source / "02_gone.py").unlink()
    (source / "03_edited.py").unlink()
    assert generate(source, out).returncode == 0
    assert sorted(path.name for path in out.glob("*.ipynb")) == ["01_kept.ipynb", "03_edited.ipynb"]
    assert "notes" in (out / "03_edited.ipynb").read_text()
    assert sorted(json.loads((out / ".generated.json").read_text())) == ["01_kept.ipynb", "README.md"]


def test_the_edition_keeps_the_checkers_stub_phrase():
    assert edition.STUB_PHRASE == STUB_PHRASE  # the checkers let exactly this NotImplementedError through


def test_the_ipynb_and_the_py_give_the_same_exercises(tmp_path):
    """`pcnotes course` reads the committed .ipynb, `make learner` the .py: the same cells, tags and
    stubs (that the other cells' sources agree is `make sync-check`'s business)."""
    def shape(notebook):
        return [(cell.cell_type, cell.metadata, cell.source if "exercise" in cell.metadata.get("tags", []) else "")
                for cell in notebook.cells]

    for py in notebook_sources(ROOT / "notebooks"):
        from_py = edition.learner_notebook(edition.read_notebook(py), py)
        from_ipynb = edition.learner_notebook(edition.read_notebook(py.with_suffix(".ipynb")), py)
        assert shape(from_py) == shape(from_ipynb), py.name
        assert from_py.metadata == from_ipynb.metadata == {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def course(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcnotes", "course", str(out), *extra],
                          capture_output=True, text=True, cwd=out.parent)


def test_pcnotes_course_writes_the_learner_edition_and_the_solutions(tmp_path):
    result = course(tmp_path / "course")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("learner edition: ")
    sources = notebook_sources(ROOT / "notebooks")
    written = sorted(tmp_path.joinpath("course").rglob("*.ipynb"))
    assert [path.relative_to(tmp_path / "course") for path in written] == sorted(
        py.relative_to(ROOT / "notebooks").with_suffix(".ipynb") for py in sources)
    for py in sources:
        ipynb = tmp_path / "course" / py.relative_to(ROOT / "notebooks").with_suffix(".ipynb")
        text = ipynb.read_text()
        assert '"outputs": []' in text or '"code"' not in text
        assert all(json.dumps(secret)[1:-1] not in text for secret in solution_text(py)), ipynb.name
    assert (tmp_path / "course" / "README.md").is_file()

    result = course(tmp_path / "solutions", "--solutions")
    assert result.returncode == 0, result.stderr
    solved = nbformat.read(tmp_path / "solutions" / "02_locally_aware_patches.ipynb", as_version=4)
    committed = nbformat.read(ROOT / "notebooks" / "02_locally_aware_patches.ipynb", as_version=4)
    assert [cell.source for cell in solved.cells] == [cell.source for cell in committed.cells]
    assert any(cell.get("outputs") for cell in solved.cells)  # executed, as committed
    assert "jupytext" not in solved.metadata  # a stand-alone notebook, paired with nothing


def test_pcnotes_course_never_overwrites_a_changed_notebook_without_force(tmp_path):
    out = tmp_path / "course"
    assert course(out).returncode == 0
    mine = out / "03_coreset.ipynb"
    mine.write_text(mine.read_text().replace("in place of this line", "my own work"))
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    for extra in ((), ("--solutions",)):
        result = course(out, *extra)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {mine} was changed since pcnotes wrote it")
        assert result.stderr.count("\n") == 1 and "--force" in result.stderr
        assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing written
    (out / "notes.ipynb").write_text("{}")  # a file that is not the course's is left alone, --force or not
    assert course(out, "--force").returncode == 0
    assert "my own work" not in mine.read_text() and (out / "notes.ipynb").read_text() == "{}"


def test_pcnotes_course_refuses_a_notebook_it_did_not_write(tmp_path):
    out = tmp_path / "course"
    out.mkdir()
    (out / "00_setup.ipynb").write_text("my notes")
    result = course(out)
    assert result.returncode == 2 and "pcnotes did not write it" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["00_setup.ipynb"]
