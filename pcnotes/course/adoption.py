"""Adopting the learner's functions: the code they write is the code that runs.

After each checker, a notebook calls ``fn = course.adopt("patchify", patchify, passed)``:

* passed: the learner's function is kept, and its source saved as ``NAME.py`` in the
  course-state folder, so that a later notebook (another kernel) can load it;
* not passed (a wrong answer, or the learner edition's stub): the library's function
  of the same signature is returned, with one line saying so, and an earlier saved
  answer of that stage is removed, so a stage is never run from a stale answer.

:func:`learner_stages` gives the capstone every adopted function, by exercise name,
ready for ``PatchCore(config, stages=...)``. The folder is ``$PCNOTES_COURSE_DIR``
or ``course/`` in the user's data folder (``platformdirs``; on Colab, the runtime's
home, which lasts as long as the runtime). Re-running a cell simply overwrites.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from pathlib import Path
from typing import Callable

import platformdirs

from pcnotes.course.nb05_evaluation import _pro_at as pro_at
from pcnotes.model import STAGES

__all__ = ["adopt", "learner_stages", "course_dir", "library_stage"]

#: What a saved function's source is run with: the names the notebooks import.
_PRELUDE = ("import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
            "from scipy.spatial.distance import cdist\n")


def course_dir() -> Path:
    """Where adopted functions are saved: ``$PCNOTES_COURSE_DIR``, else the user data folder's ``course/``."""
    folder = os.environ.get("PCNOTES_COURSE_DIR")
    return Path(folder) if folder else Path(platformdirs.user_data_dir("pcnotes", appauthor=False)) / "course"


def library_stage(name: str) -> Callable:
    """The library's function for exercise ``name``, with the exercise's signature."""
    if name not in _LIBRARY:
        raise KeyError(f"no exercise named {name!r}: valid names are {', '.join(_LIBRARY)}")
    return _LIBRARY[name]


def adopt(name: str, fn: Callable, passed: bool) -> Callable:
    """The function the rest of the course runs for exercise ``name``: ``fn`` if it passed its checker."""
    library = library_stage(name)
    path = course_dir() / f"{name}.py"
    if not passed:
        path.unlink(missing_ok=True)
        print(f"→ {name}: the library's function runs from here on, until your answer passes the check.")
        return library
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):  # typed at a prompt, or a builtin: runs here, not in later notebooks
        print(f"→ {name}: yours runs here; its source cannot be read, so later notebooks use the library's.")
        return fn
    _write(path, f"# {name}: adopted after its check passed\n{_PRELUDE}\n\n{source}", fn.__name__)
    return fn


def _write(path: Path, text: str, function_name: str) -> None:
    """Save all or nothing (a temporary file, then a rename); the first line after the header names the function."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(f"FUNCTION = {function_name!r}\n{text}")
    os.replace(partial, path)


def learner_stages() -> dict[str, Callable]:
    """Every adopted function, by exercise name: ``{"patchify": fn, ...}``.

    A saved file that no longer runs is skipped with one line (the library's stage runs).
    """
    stages = {}
    for name in _LIBRARY:
        path = course_dir() / f"{name}.py"
        if not path.is_file():
            continue
        namespace: dict = {}
        try:
            exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - the learner's own code
            stages[name] = namespace[namespace["FUNCTION"]]
        except Exception as error:  # noqa: BLE001 - one line, then the library's
            print(f"→ {name}: {path} does not load ({type(error).__name__}: {error}); the library's runs")
    return stages


_LIBRARY: dict[str, Callable] = {**STAGES, "pro": pro_at}
