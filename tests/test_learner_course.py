"""`make learner` both ways: the learner edition of the core notebooks, its stubs filled by a learner.

With every stub filled by a right answer written apart from the notebooks' own
(tests/learner_answers/), the core notebooks 00-06 run to the end, every check passes, and 05's
capstone runs the learner's stages: its AUROC equals the library's, every stage under "yours".
With one stage wrong (patchify with reflect padding), notebooks 02-05 still run to the end, and
the capstone names that stage under "library".

The first run also measures every figure as the book shows it (tools/figure_fonts.py's hook): the
learner's notebooks draw the solution notebooks' figures, so the core notebooks run once for both.

The notebooks run one after the other in one course folder, each in its own kernel, as a learner's
"Run all" would run them.
"""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pcnotes import ensure_default_dataset

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = Path(__file__).parent / "learner_answers"
CORE = ["00_setup", "01_layer_hooks", "02_locally_aware_patches", "03_coreset", "04_scoring_and_heatmaps",
        "05_evaluation", "06_coreset_explorer"]
#: the stages 05's capstone runs, in the order its line names them
CAPSTONE = ["patchify", "align", "mean_mapper", "aggregator", "coreset_size", "greedy_k_center", "image_score",
            "auroc"]
EXERCISES = sorted(path.stem for path in ANSWERS.glob("*.py"))
_spec = importlib.util.spec_from_file_location("figure_fonts", ROOT / "tools" / "figure_fonts.py")
figure_fonts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figure_fonts)
CAPSTONE_LINE = re.compile(r"your PatchCore: image AUROC (\d\.\d{4}) \(library (\d\.\d{4})\); yours: (.*); library: (.*)")


def learner_edition(out: Path) -> Path:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "learner.py"), "--source", str(ROOT / "notebooks"),
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def filled(cell_source: str, answers: dict[str, Path]) -> str:
    """An exercise cell with each stubbed function replaced by the answer file of its name: the cell's
    imports, then the answer files (their imports and their function)."""
    tree = ast.parse(cell_source)
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    imports = [ast.get_source_segment(cell_source, node) for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join([*imports, "", *(answers[name].read_text() for name in names)])


def run_course(out: Path, notebooks: list[str], answers: dict[str, Path],
               fonts: dict | None = None) -> dict[str, nbformat.NotebookNode]:
    """Fill every stub of ``notebooks`` and run them in order: ``{name: executed notebook}``.
    A cell that raises stops the test with nbclient's CellExecutionError, naming the cell.
    With ``fonts``, each notebook runs with figure_fonts' hook, and ``fonts[name]`` gets its records."""
    executed = {}
    for name in notebooks:
        notebook = nbformat.read(out / f"{name}.ipynb", as_version=4)
        for cell in notebook.cells:
            if "exercise" in cell.metadata.get("tags", []):
                cell.source = filled(cell.source, answers)
        if fonts is not None:
            notebook = figure_fonts.instrumented(notebook)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(out)}}).execute()
        if fonts is not None:
            fonts[name] = figure_fonts.records(notebook)
        executed[name] = notebook
    return executed


def printed(notebook) -> list[str]:
    return [line for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
            for line in output.get("text", "").splitlines()]


def adopt_lines(notebooks: dict) -> list[str]:
    """The check's line and any line of adopt's, of every adopt cell, in order."""
    return [line for notebook in notebooks.values() for cell in notebook.cells
            if cell.cell_type == "code" and "course.adopt(" in cell.source
            for output in cell.outputs for line in output.get("text", "").splitlines()]


def capstone(notebooks: dict) -> tuple[str, str, list[str], list[str]]:
    """05's capstone line: ``(your AUROC, the library's, your stages, the library's stages)``."""
    lines = [match for line in printed(notebooks["05_evaluation"]) if (match := CAPSTONE_LINE.fullmatch(line))]
    assert len(lines) == 1, printed(notebooks["05_evaluation"])
    mine, library, yours, theirs = lines[0].groups()
    return mine, library, [] if yours == "none" else yours.split(", "), [] if theirs == "none" else theirs.split(", ")


@pytest.fixture
def course_env(tmp_path, monkeypatch):
    """One course folder for the whole run, and the embedded data set where the notebooks find it."""
    monkeypatch.setenv("PCNOTES_DATA", str(ensure_default_dataset(seed=0)))
    monkeypatch.setenv("PCNOTES_COURSE_DIR", str(tmp_path / "course"))
    return tmp_path / "course"


def test_every_exercise_has_an_answer_and_a_checker_line_in_the_notebooks():
    sources = "".join((ROOT / "notebooks" / f"{name}.py").read_text() for name in CORE)
    adopted = re.findall(r'course\.adopt\("(\w+)", (\w+),', sources)
    assert sorted(name for name, _ in adopted) == EXERCISES and all(name == fn for name, fn in adopted)
    assert set(CAPSTONE) < set(EXERCISES)


@pytest.mark.slow
def test_the_learner_edition_with_every_stub_filled_runs_the_learners_patchcore(tmp_path, course_env):
    out = learner_edition(tmp_path / "learner")
    answers = {name: ANSWERS / f"{name}.py" for name in EXERCISES}
    fonts: dict[str, list[dict]] = {}
    notebooks = run_course(out, CORE, answers, fonts)

    shown = [(name, record["cell"], record["text"], figure_fonts.rendered_px(record["font_px"], record["width"]))
             for name, found in fonts.items() for record in found]
    drawn = {"00_setup", "01_layer_hooks", "03_coreset", "04_scoring_and_heatmaps", "05_evaluation",
             "06_coreset_explorer"}  # the notebooks with figures: each was measured
    assert drawn <= {name for name, *_ in shown}, shown
    small = [row for row in shown if row[3] < figure_fonts.MIN_PX]
    assert not small, f"figure text under {figure_fonts.MIN_PX:g} px in the book: {small}"

    lines = adopt_lines(notebooks)
    assert len(lines) == len(EXERCISES) and all(line.startswith("✓ ") for line in lines), lines
    assert sorted(path.stem for path in course_env.glob("*.py")) == EXERCISES  # each saved for later notebooks
    mine, library, yours, theirs = capstone(notebooks)
    assert mine == library and float(mine) > 0.5
    assert yours == CAPSTONE and theirs == []


@pytest.mark.slow
def test_with_one_stage_wrong_every_notebook_runs_and_the_capstone_names_it(tmp_path, course_env):
    out = learner_edition(tmp_path / "learner")
    answers = {name: ANSWERS / f"{name}.py" for name in EXERCISES} | {"patchify": ANSWERS / "wrong" / "patchify.py"}
    notebooks = run_course(out, CORE[2:6], answers)  # 00, 01 and 06 have no exercise that adopts

    lines = adopt_lines(notebooks)
    assert lines[:2] == [
        "✗ patchify: you padded with mode='reflect', which mirrors the values next to the border; PatchCore pads "
        "with zeros: F.unfold(features, kernel_size=p, padding=p // 2) (no F.pad needed). "
        "[on 2 images, 3 channels, a 5x6 grid, p=3]",
        "→ patchify: the library's function runs from here on, until your answer passes the check."]
    assert len(lines) == len(EXERCISES) + 1 and all(line.startswith("✓ ") for line in lines[2:]), lines
    assert "patchify" not in {path.stem for path in course_env.glob("*.py")}
    mine, library, yours, theirs = capstone(notebooks)
    assert mine == library  # the library's patchify with the learner's other stages: the same model
    assert yours == [name for name in CAPSTONE if name != "patchify"] and theirs == ["patchify"]
