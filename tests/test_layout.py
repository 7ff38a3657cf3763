"""The package's layout tells the pipeline: the stages in one folder, numbered, and nothing else there."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pcnotes

PACKAGE = Path(pcnotes.__file__).parent
ROOT = PACKAGE.parent
STAGE = re.compile(r"s([1-8])_\w+\.py")


def tracked(folder: Path) -> list[str]:
    """The entries of ``folder`` that git tracks (build copies and caches are not the package's)."""
    listed = subprocess.run(["git", "ls-files", "--", "."], cwd=folder, capture_output=True, text=True,
                            check=True).stdout.split()
    return sorted({Path(path).parts[0] for path in listed})


def test_import_pcnotes_loads_no_heavy_library_and_runs_nothing():
    code = ("import sys, pcnotes\n"
            "print(sorted(m for m in ('numba', 'faiss', 'matplotlib', 'torch') if m in sys.modules))\n"
            "import os; print('NUMBA_CACHE_DIR' in os.environ)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "False"]


def test_the_public_face_finds_every_name_it_promises():
    for name in pcnotes.__all__:
        assert getattr(pcnotes, name) is not None, name


def test_the_package_folder_has_at_most_ten_entries():
    entries = tracked(PACKAGE)
    assert len(entries) <= 10, entries
    assert {"stages", "model.py", "config.py"} <= set(entries)


def test_the_stage_folder_holds_the_eight_stages_in_order_and_nothing_else():
    stages = PACKAGE / "stages"
    modules = [name for name in tracked(stages) if name != "__init__.py"]
    assert all(STAGE.fullmatch(name) for name in modules), modules
    assert sorted({int(STAGE.fullmatch(name).group(1)) for name in modules}) == list(range(1, 9))
    lines = sum(len((stages / name).read_text(encoding="utf-8").splitlines()) for name in tracked(stages))
    assert lines < 1600, lines
    for name in modules:
        source = (stages / name).read_text(encoding="utf-8")
        number = STAGE.fullmatch(name).group(1)
        assert ast.get_docstring(ast.parse(source)).startswith(f"Stage {number}"), name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pcnotes"):
                # arrows point down only: a stage uses other stages, the fast kernels and util, never the model
                assert node.module.split(".")[1] in ("stages", "fast", "util"), (name, node.module)


def pcnotes_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pcnotes":
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names if alias.name.split(".")[0] == "pcnotes"}
    return modules


def test_every_notebook_imports_pcnotes_from_at_most_four_modules():
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + sorted(
        (ROOT / "notebooks" / "deeper").glob("[0-9][0-9]_*.py"))
    assert len(sources) >= 13
    for path in sources:
        modules = pcnotes_modules(path.read_text(encoding="utf-8"))  # percent cells and magics are comments
        assert modules and len(modules) <= 4, (path.name, sorted(modules))


def test_learner_editions_written_before_the_new_layout_still_find_their_checkers():
    from pcnotes import course, exercises

    assert exercises is course and exercises.check_patchify is course.check_patchify
