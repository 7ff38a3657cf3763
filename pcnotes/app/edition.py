"""The course as a folder of notebooks: the learner edition, or the executed solutions.

``python -m pcnotes course DIR`` writes the **learner edition** of the core
notebooks and the deep dives (``DIR/NN_topic.ipynb``, ``DIR/deeper/NN_topic.ipynb``)
from the solution notebooks: the clone's ``notebooks/`` when pcnotes runs from
a clone, else the copy the installed wheel carries
(:func:`pcnotes.util.paths.course_notebooks`). ``make learner``
(``tools/learner.py``) writes the same edition from the ``.py`` sources.

* a code cell tagged ``solution`` keeps its imports, its comments outside
  functions, and each function's signature and docstring; every function
  body becomes a stub that raises
  ``NotImplementedError('Exercise "NAME": write your solution here ...')``.
  The cell is tagged ``exercise`` instead;
* a markdown cell tagged ``solution`` (the answer to a "predict before you
  run" question) is left out;
* every other cell is copied as it is, the checker calls included, and no
  cell keeps an output.

``--solutions`` writes the executed solution notebooks instead, outputs and
all.

Every notebook is read and checked before anything is written. A notebook
in DIR that was changed since pcnotes wrote it (a learner's work), or that
pcnotes did not write, is never overwritten: :class:`ChangedFileError` names
it, unless ``force``. ``DIR/.generated.json`` records what was written last
time (relative path -> sha256). Each file is written whole or not at all
(:func:`pcnotes.util.folders.write_file`).

Reading the ``.ipynb`` needs only nbformat, so ``pcnotes course`` works in any
Python that has pcnotes; reading the ``.py`` sources (``make learner``) needs
jupytext, a dev dependency. Neither imports torch.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import tokenize
from pathlib import Path

from pcnotes.util.folders import write_file

__all__ = ["SOLUTION", "EXERCISE", "STUB_PHRASE", "MANIFEST", "EditionError", "ChangedFileError",
           "notebook_files", "read_notebook", "stub_cell", "learner_notebook", "learner_edition",
           "solutions_edition"]

SOLUTION, EXERCISE = "solution", "exercise"
# The checkers in pcnotes.course let exactly this error through (their STUB_PHRASE); not imported
# from there so that writing the edition needs no torch. tests/test_learner.py keeps the two equal.
STUB_PHRASE = "write your solution here"
MANIFEST = ".generated.json"  # what was written last time: relative path -> sha256
NAME_PATTERN = "[0-9][0-9]_*"  # NN_topic, in the folder and in its deeper/ (as tools/nbsync.py)
DEEPER = "deeper"

LEARNER_README = """# The learner edition

Written by `python -m pcnotes course` (or `make learner` in a clone) from the solution
notebooks: edit these copies; running the command again never overwrites a notebook
you changed.

Each exercise is a cell tagged `exercise`: a function whose body raises
`NotImplementedError("... write your solution here ...")`. Replace that line with
your code and run the cell below it: `pcnotes.course` checks your function on a
few inputs and answers in one line, naming the mistake when it recognises one.
A function that passes is the one the cells below it (and 05's "Your PatchCore")
run; until then the library's runs in its place, and one line says so, so "Run
all" always reaches the end of a notebook.

Start with `00_setup.ipynb`; `deeper/` holds the deep dives, reading for after class.
The executed solutions: `python -m pcnotes course SOMEWHERE_ELSE --solutions`.
"""

SOLUTIONS_README = """# The solution notebooks

Written by `python -m pcnotes course --solutions`: every notebook executed, with its
outputs, so every figure is there without running anything. The learner edition
(exercises as stubs): `python -m pcnotes course SOMEWHERE_ELSE`.
"""


class EditionError(ValueError):
    """Why the edition cannot be written (a solution cell it cannot stub, no notebooks)."""


class ChangedFileError(EditionError):
    """A file in the output folder that pcnotes did not write as it is now (a learner's work)."""


def stub_message(name: str) -> str:
    return f'Exercise "{name}": {STUB_PHRASE}, in place of this line, then run the check below.'


# -- reading ---------------------------------------------------------------------------------


def notebook_files(folder: Path, suffix: str) -> list[Path]:
    """``folder/NN_topic{suffix}``, then ``folder/deeper/NN_topic{suffix}``, each sorted."""
    folders = [folder] + ([folder / DEEPER] if (folder / DEEPER).is_dir() else [])
    return [path for place in folders for path in sorted(place.glob(f"{NAME_PATTERN}{suffix}"))]


def read_notebook(path: Path):
    """A notebook from its ``.ipynb`` (nbformat) or its jupytext ``.py`` source (jupytext)."""
    if path.suffix == ".py":
        try:
            import jupytext
        except ImportError:
            raise EditionError(f"{path}: reading the .py sources needs jupytext (pip install jupytext); "
                               f"`python -m pcnotes course` reads the .ipynb instead") from None
        return jupytext.read(path)
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:  # unreadable, not JSON, not a notebook
        raise EditionError(f"{path}: not a readable notebook ({' '.join(str(error).split())[:200]})") from None


# -- the stubs -------------------------------------------------------------------------------


def _colon_line(source: str, node: ast.FunctionDef) -> int:
    """The line of the colon that ends ``node``'s signature (1-based)."""
    depth, started = 0, False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.start[0] < node.lineno:
            continue
        if not started:
            started = token.string == "def"
            continue
        if token.type == tokenize.OP:
            if token.string in "([{":
                depth += 1
            elif token.string in ")]}":
                depth -= 1
            elif token.string == ":" and depth == 0:
                return token.start[0]
    raise EditionError(f"no colon after def {node.name}")


def _body_end(lines: list[str], node: ast.FunctionDef) -> int:
    """The last line of ``node``'s body, counting indented comments after its last statement."""
    end = node.end_lineno
    while end < len(lines) and (not lines[end].strip() or
                                (lines[end][:1].isspace() and lines[end].lstrip().startswith("#"))):
        end += 1
    while end > node.end_lineno and not lines[end - 1].strip():
        end -= 1  # blank lines after the function stay
    return end


def stub_cell(source: str, where: str) -> str:
    """A solution cell's source with every function body replaced by a stub."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise EditionError(f"{where}: a solution cell must be plain Python ({error.msg}, line {error.lineno})")
    functions = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node)
        elif not isinstance(node, (ast.Import, ast.ImportFrom)):
            code = source.splitlines()[node.lineno - 1].strip()
            raise EditionError(f"{where}, line {node.lineno}: `{code}` is neither an import nor a def; a solution "
                               f"cell holds only the functions the learner writes (move other code to the next cell)")
    if not functions:
        raise EditionError(f"{where}: a solution code cell needs at least one def (tag a markdown cell to hide prose)")
    lines = source.splitlines()
    for node in reversed(functions):  # from the bottom, so earlier line numbers stay valid
        keep_to = _colon_line(source, node)
        first = node.body[0]
        if first.lineno == keep_to:
            raise EditionError(f"{where}: put the body of def {node.name} on its own lines")
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            keep_to = first.end_lineno  # the docstring is the instructions: it stays
        indent = " " * first.col_offset
        stub = f"{indent}raise NotImplementedError({stub_message(node.name)!r})"
        lines[keep_to:_body_end(lines, node)] = [stub]
    return "\n".join(lines)


def _plain_metadata(notebook) -> None:
    """A stand-alone notebook: the course's kernel, not paired with a .py, no author's Python version."""
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata.pop("jupytext", None)
    notebook.metadata.pop("language_info", None)  # the learner's kernel writes its own


def learner_notebook(notebook, where: str | Path):
    """The learner edition of one solution notebook (left unchanged); ``where`` names it in errors."""
    import nbformat

    notebook = copy.deepcopy(notebook)
    cells = []
    for number, cell in enumerate(notebook.cells, start=1):
        tags = cell.metadata.get("tags", [])
        if SOLUTION in tags:
            if cell.cell_type == "markdown":
                continue
            if cell.cell_type != "code":
                raise EditionError(f"{where}, cell {number}: only code and markdown cells can be tagged {SOLUTION}")
            cell.source = stub_cell(cell.source, f"{where}, cell {number}")
            cell.metadata["tags"] = [EXERCISE if tag == SOLUTION else tag for tag in tags]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    notebook.cells = cells
    _plain_metadata(notebook)
    notebook.metadata.pop("widgets", None)  # the saved state of widgets whose outputs are gone
    nbformat.validate(notebook)
    return notebook


def solution_notebook(notebook, where: str | Path):
    """The executed solution notebook as a learner gets it: outputs kept, metadata plain."""
    import nbformat

    notebook = copy.deepcopy(notebook)
    _plain_metadata(notebook)
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        raise EditionError(f"{where}: not a valid notebook ({' '.join(str(error).split())[:200]})") from None
    return notebook


# -- writing ---------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _notebook_bytes(notebook) -> bytes:
    import nbformat

    return nbformat.writes(notebook).encode() + b"\n"


def write_edition(files: dict[Path, bytes], out: Path, force: bool = False) -> list[Path]:
    """Write ``files`` (relative path -> bytes) into ``out``, guarded by the manifest.

    Checks every target first: one that exists and is not what pcnotes wrote
    there last time raises :class:`ChangedFileError` before anything is
    written, unless ``force``. Files recorded last time whose notebook is gone
    are removed when unchanged. Returns the paths written.
    """
    manifest_path = out / MANIFEST
    try:
        written_before = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if not isinstance(written_before, dict):
            written_before = {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        written_before = {}  # then every notebook there counts as changed: nothing is overwritten
    if not force:
        for relative in files:
            target = out / relative
            if target.exists() and written_before.get(relative.as_posix()) != _digest(target.read_bytes()):
                raise ChangedFileError(f"{target} was changed since pcnotes wrote it, or pcnotes did not write it "
                                       f"(a learner's work?); move it away, or run again with --force to overwrite it")
    manifest = dict(written_before)

    def record(relative: str, digest: str | None) -> None:
        # after every file, so that a run cut short never makes its own files look like a learner's
        if digest is None:
            manifest.pop(relative, None)
        else:
            manifest[relative] = digest
        write_file(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    for relative, data in files.items():
        write_file(out / relative, data)
        record(relative.as_posix(), _digest(data))
    wanted = {relative.as_posix() for relative in files}
    for relative, digest in written_before.items():  # notebooks whose source is gone: remove unchanged copies
        if relative not in wanted:
            stale = out / relative
            if stale.is_file() and _digest(stale.read_bytes()) == digest:
                stale.unlink()
            record(relative, None)
    return [out / relative for relative in files]


def _sources(source: Path, suffix: str) -> list[Path]:
    notebooks = notebook_files(source, suffix)
    if not notebooks:
        raise EditionError(f"no notebooks (NN_topic{suffix}) in {source}")
    return notebooks


def learner_edition(source: Path, out: Path, force: bool = False, suffix: str = ".ipynb") -> list[Path]:
    """Write the learner edition of every notebook in ``source`` (read from ``NN_topic{suffix}``,
    ``.ipynb`` or ``.py``) to ``out``; return the paths written."""
    source, out = Path(source), Path(out)
    files = {path.relative_to(source).with_suffix(".ipynb"): _notebook_bytes(learner_notebook(read_notebook(path), path))
             for path in _sources(source, suffix)}  # every notebook is read and checked before anything is written
    files[Path("README.md")] = LEARNER_README.encode()
    return write_edition(files, out, force)


def solutions_edition(source: Path, out: Path, force: bool = False) -> list[Path]:
    """Write the executed solution notebooks (``source``'s ``.ipynb``) to ``out``; return the paths written."""
    source, out = Path(source), Path(out)
    files = {path.relative_to(source): _notebook_bytes(solution_notebook(read_notebook(path), path))
             for path in _sources(source, ".ipynb")}
    files[Path("README.md")] = SOLUTIONS_README.encode()
    return write_edition(files, out, force)
