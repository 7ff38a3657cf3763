"""Where pcnotes runs from, and paths as a reader should see them.

A notebook committed with its outputs, or a log pasted into an issue, should
not show where the repository happened to sit on the machine that ran it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGE_DIR", "REPO_ROOT", "display_path"]

#: The installed (or cloned) ``pcnotes/`` folder.
PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: The clone pcnotes runs from (``data/``, ``notebooks/``, ``benchmarks/`` beside the
#: package), or ``None`` for an installed package, which has only ``pcnotes/``.
REPO_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None


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
