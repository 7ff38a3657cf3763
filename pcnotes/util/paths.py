"""Where pcnotes runs from, and paths as a reader should see them.

A notebook committed with its outputs, or a log pasted into an issue, should
not show where the repository happened to sit on the machine that ran it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_DIR", "REPO_ROOT", "REPOSITORY", "display_path", "printable", "course_notebooks", "results_dir",
           "results_file"]

#: The installed (or cloned) ``pcnotes/`` folder.
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: The clone pcnotes runs from (``data/``, ``notebooks/``, ``benchmarks/`` beside the
#: package), or ``None`` for an installed package, which has only ``pcnotes/``.
REPO_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None

#: Where the repository is expected to be published: the one place for the Colab links, the
#: install-if-missing cell and ``pip install git+...``. pyproject.toml's [project.urls]
#: Repository says the same (tests/test_project.py holds the two equal).
REPOSITORY = "https://github.com/pcnotes/pcnotes"

#: In an installed package: the copies the wheel carries (setup.py puts them there).
_SHIPPED_NOTEBOOKS = PACKAGE_DIR / "course" / "notebooks"
_SHIPPED_RESULTS = PACKAGE_DIR / "course" / "results"


def course_notebooks() -> Path:
    """The folder of the course's solution notebooks (``NN_topic.py``/``.ipynb``, ``deeper/``).

    The clone's ``notebooks/`` when pcnotes runs from a clone (or an editable
    install), else the copy an installed wheel carries. Raises
    :class:`FileNotFoundError` saying so when neither exists.
    """
    if REPO_ROOT is not None and (REPO_ROOT / "notebooks").is_dir():
        return REPO_ROOT / "notebooks"
    if _SHIPPED_NOTEBOOKS.is_dir():
        return _SHIPPED_NOTEBOOKS
    raise FileNotFoundError(
        f"the course notebooks are not in this pcnotes ({PACKAGE_DIR}): it was installed from "
        f"a build without them; install it again from the wheel or from {REPOSITORY}")


def results_dir() -> Path:
    """The folder of the benchmark results the notebooks quote.

    ``benchmarks/results`` in a clone, else the copy an installed wheel
    carries (``pcnotes/course/results``); that folder may be missing (nothing
    shipped), so check before reading, or use :func:`results_file`.
    """
    if REPO_ROOT is not None:
        return REPO_ROOT / "benchmarks" / "results"
    return _SHIPPED_RESULTS


def results_file(name: str) -> Path:
    """``benchmarks/results/NAME`` from the clone, else from the installed package's copy.

    Raises :class:`FileNotFoundError` naming both places when the file is in
    neither (a results file that no benchmark has written yet, say).
    """
    places = [REPO_ROOT / "benchmarks" / "results"] if REPO_ROOT is not None else []
    places.append(_SHIPPED_RESULTS)
    for folder in places:
        if (folder / name).is_file():
            return folder / name
    where = " or ".join(display_path(folder) for folder in places)
    raise FileNotFoundError(f"no benchmark results file {name!r} in {where}: the benchmark that writes it "
                            f"(benchmarks/README.md) has not been run, or this pcnotes was built without it")


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository (or, installed, to the folder holding
    ``pcnotes/``) when it lies inside it, ``~/...`` under the home folder,
    otherwise unchanged.

    For printing only: open files with the real path.
    """
    path = Path(path)
    resolved = path.resolve()
    base = PACKAGE_DIR.parent
    if resolved.is_relative_to(base):
        return resolved.relative_to(base).as_posix()
    home = Path.home().resolve()
    if home != Path(home.anchor) and resolved.is_relative_to(home):
        return "~/" + resolved.relative_to(home).as_posix()
    return str(path)


def printable(text: str | Path) -> str:
    """A file name as text that any font, terminal and UTF-8 file can hold.

    Python reads a name that is not UTF-8 (``b"\\xe9t\\xe9.png"``) with
    surrogates standing for its bytes; those cannot be drawn or encoded, so
    they are shown as ``\\xNN`` escapes instead.
    """
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
