"""Keep notebooks/NN_name.py (jupytext percent) and NN_name.ipynb in step.

    python tools/nbsync.py check   [DIR]   # fail when any pair's inputs differ
    python tools/nbsync.py execute [DIR]   # .py -> .ipynb inputs, then run it in place

DIR holds the core notebooks (DIR/NN_name.py) and the deep dives beside them
(DIR/deeper/NN_name.py); both are checked and executed. The .py file is the
source of truth: edit it, then `make notebooks`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient


def cell_inputs(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


NAME_PATTERN = "[0-9][0-9]_*"  # NN_topic, in notebooks/ and in notebooks/deeper/
DEEPER = "deeper"


def folders(directory: Path) -> list[Path]:
    """The core folder, then its deep dives' folder when there is one."""
    return [directory] + ([directory / DEEPER] if (directory / DEEPER).is_dir() else [])


def sources(directory: Path) -> list[Path]:
    """Every notebook source: ``DIR/NN_topic.py``, then ``DIR/deeper/NN_topic.py``."""
    return [py for folder in folders(directory) for py in sorted(folder.glob(f"{NAME_PATTERN}.py"))]


def pairs(directory: Path) -> list[tuple[Path, Path]]:
    return [(py, py.with_suffix(".ipynb")) for py in sources(directory)]


def misnamed(directory: Path) -> list[Path]:
    """Notebooks in deeper/ that no glob would pick up, so nothing would check or run them."""
    if not (directory / DEEPER).is_dir():
        return []
    return [path for path in sorted((directory / DEEPER).iterdir())
            if path.suffix in (".py", ".ipynb") and not path.match(f"{NAME_PATTERN}{path.suffix}")]


def drift(py: Path, ipynb: Path) -> str | None:
    """Why ``py`` and ``ipynb`` disagree, or None when their inputs are the same."""
    if not ipynb.exists():
        return f"{ipynb} is missing (pair it with `make notebooks`)"
    script, notebook = cell_inputs(jupytext.read(py)), cell_inputs(nbformat.read(ipynb, as_version=4))
    if len(script) != len(notebook):
        return f"{py} has {len(script)} cells, {ipynb} has {len(notebook)}"
    for number, (a, b) in enumerate(zip(script, notebook), start=1):
        if a != b:
            return f"cell {number} differs between {py.name} and {ipynb.name}:\n  {a[1][:120]!r}\n  {b[1][:120]!r}"
    return None


def check(directory: Path) -> int:
    problems = [reason for py, nb in pairs(directory) if (reason := drift(py, nb))]
    orphans = [nb for folder in folders(directory) for nb in sorted(folder.glob(f"{NAME_PATTERN}.ipynb"))
               if not nb.with_suffix(".py").exists()]
    problems += [f"{nb} has no paired .py" for nb in orphans]
    problems += [f"{path} is not named NN_topic{path.suffix} (NN: the core notebook it belongs to), "
                 f"so nothing checks or runs it" for path in misnamed(directory)]
    for problem in problems:
        print(f"out of sync: {problem}", file=sys.stderr)
    if not pairs(directory):
        print(f"no notebooks found in {directory}", file=sys.stderr)
        return 1
    print(f"{len(pairs(directory))} notebook pairs checked, {len(problems)} out of sync")
    return 1 if problems else 0


def execute(directory: Path, names: list[str]) -> int:
    for py, ipynb in pairs(directory):
        if names and py.stem not in names:
            continue
        notebook = jupytext.read(py)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        start = time.perf_counter()
        # record_timing=False: no execution timestamps in the committed cell metadata
        NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(py.parent)}}).execute()
        nbformat.write(notebook, ipynb)
        print(f"{ipynb}: executed in {time.perf_counter() - start:.1f} s")
    return check(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["check", "execute"])
    parser.add_argument("directory", nargs="?", default="notebooks", type=Path)
    parser.add_argument("--only", nargs="*", default=[], help="notebook stems to execute, e.g. 03_coreset (core or deeper)")
    args = parser.parse_args(argv)
    return check(args.directory) if args.command == "check" else execute(args.directory, args.only)


if __name__ == "__main__":
    sys.exit(main())
