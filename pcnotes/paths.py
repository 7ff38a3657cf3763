"""Paths as a reader should see them in messages and notebook outputs.

A notebook committed with its outputs, or a log pasted into an issue, should
not show where the repository happened to sit on the machine that ran it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "display_path"]

#: The repository this package lives in (where ``data/`` and ``notebooks/`` are).
REPO_ROOT = Path(__file__).resolve().parents[1]


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it, ``~/...`` under the
    home folder, otherwise unchanged.

    For printing only: open files with the real path.
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return resolved.relative_to(REPO_ROOT).as_posix()
    home = Path.home().resolve()
    if home != Path(home.anchor) and resolved.is_relative_to(home):
        return "~/" + resolved.relative_to(home).as_posix()
    return str(path)
