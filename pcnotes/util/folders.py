"""The one guarded way to replace a folder: outputs, saved models and the data set.

Every writer in pcnotes (the CLI's evaluate, fit, predict and demo,
:meth:`pcnotes.model.PatchCore.save` and :func:`pcnotes.data.synth.generate_dataset`)
goes through :func:`replace_folder`::

    with replace_folder("runs/bottle", "evaluate", inputs=[data_root]) as staging:
        ...write everything into staging...
    # only now does runs/bottle hold the new output; before, it held the old one

The rules, each one a case that once lost a user's files:

* **Resolve first.** ``..`` and symbolic links are resolved before anything
  is decided, so ``V/nonexistent/..`` is V and is judged as V.
* **Replace only what is provably ours.** A target may be missing, an empty
  folder, or a folder holding the marker ``.pcnotes-output.json``
  (``{"tool": "pcnotes", "kind": KIND, "format": 2, "files": {PATH: SHA256}}``)
  of the same kind, and nothing that the marker does not list, each file with
  the content pcnotes wrote. A generic name such as ``config.json`` or
  ``metrics.json`` proves nothing; a file the user added to an old output
  (notes, a spreadsheet), or a line they appended to one pcnotes wrote, makes
  it theirs again. Only the files an operating system adds by itself
  (``.DS_Store``, ``._*``, ``Thumbs.db``, ``desktop.ini``: :data:`OS_JUNK`)
  are ignored in that check, and removed with the old folder. ``force=True``
  (the CLI's ``--force``) replaces a pcnotes output of the same kind even when
  it was edited; it never replaces a folder without the marker.
* **Some folders are never targets:** a filesystem root, the home folder, the
  working folder and anything above them; the inputs of the run (the data
  root, a training folder, a model), anything above them, and anything inside
  an input folder; a mount point (it cannot be renamed).
* **Delete nothing before the new content is complete.** Work happens in a
  staging sibling ``.NAME.pcnotes-tmp-PID-HOST-RANDOM``; on success the old
  folder is renamed aside, the staging folder renamed into place, and only
  then is the old one removed. On any failure, Ctrl-C, SIGTERM or SIGHUP the
  staging folder is removed and the target is left exactly as it was. The
  swap runs with those signals held back until it is complete, so no signal
  can land between its two renames.
* **Clean up after killed runs.** A staging folder whose process is gone (same
  host, dead PID, both in its name) is removed by the next run in the same
  parent folder; a moved-aside old folder whose target went missing is put
  back.
* **Permissions follow the umask**, as with ``mkdir``: folders are made with
  ``os.mkdir`` (never ``mkdtemp``, which makes them private, 0700).

A target whose content is already byte-identical to the new content (say, a
concurrent run wrote the same data set) is left in place.

A single file (a figure, a results file, a learner's notebook) is written by
:func:`write_file`: whole, or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["MARKER", "KINDS", "UnsafeTargetError", "DiskFullError", "check_target", "replace_folder",
           "write_marker", "write_file", "interrupts_on_signals", "Interrupted", "use_writable_numba_cache"]

#: The file that proves a folder was written by pcnotes; hidden, with pcnotes' own name.
MARKER = ".pcnotes-output.json"
MARKER_FORMAT = 2  # format 1 listed names only, so edits to a file could not be seen
#: Files that operating systems add to folders by themselves (Finder, Explorer):
#: they never make an output the user's. ``._*`` are macOS resource forks.
OS_JUNK = (".DS_Store", "Thumbs.db", "desktop.ini")
KINDS = ("evaluate", "fit", "predict", "demo", "dataset")

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"^\.(?P<name>.+)\.pcnotes-(?P<role>tmp|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]+$")
_NAME_MAX = 160  # leaves room for the suffix within the usual 255-byte limit


class UnsafeTargetError(ValueError):
    """A folder pcnotes refuses to replace; the message names it and says what to do."""


class DiskFullError(OSError):
    """The disk filled up while writing; the target was left as it was."""

    def __str__(self) -> str:
        return self.strerror


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, turned into an interrupt so that clean-up code runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- signals ---------------------------------------------------------------------

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_on_signals() -> Iterator[None]:
    """Inside this block SIGTERM and SIGHUP raise :class:`Interrupted`, like Ctrl-C.

    Only signals still at their default action are taken over (an
    application's own handler is left alone), only in the main thread, and the
    previous handlers are restored afterwards.
    """
    taken = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _SIGNALS:
            if signal.getsignal(signum) == signal.SIG_DFL:
                taken[signum] = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, previous in taken.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back for a few renames; they take effect afterwards.

    Python runs signal handlers in the main thread whichever thread the
    signal reached, so swapping in a handler that only takes note works even
    with torch's worker threads about (a signal mask on one thread would not).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _frame: arrived.append(signum))
                for signum in (signal.SIGINT, *_SIGNALS)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in arrived[:1]:  # now act on it as the process would have
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)  # default_int_handler raises KeyboardInterrupt; ours Interrupted
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


# -- what may be replaced --------------------------------------------------------


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _home() -> Path | None:
    try:
        return _resolve(Path.home())
    except (RuntimeError, KeyError):  # no HOME and no password entry
        return None


def _cwd() -> Path | None:
    try:
        return _resolve(Path.cwd())
    except FileNotFoundError:  # the working folder was removed: nothing left to protect
        return None


def _contains(outer: Path, inner: Path) -> bool:
    """``inner`` is ``outer`` or lies below it (both resolved)."""
    return inner == outer or outer in inner.parents


def _entries(folder: Path) -> set[str]:
    """Every file, folder and link below ``folder`` as POSIX paths relative to it (links not followed)."""
    found = set()
    for top, dirs, files in os.walk(folder):
        base = Path(top).relative_to(folder)
        found.update((base / name).as_posix() for name in dirs + files)
    found.discard(MARKER)
    return found


def _is_os_junk(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return name in OS_JUNK or name.startswith("._")


def _file_hash(path: Path) -> str | None:
    """sha256 of a regular file; ``None`` for a folder or a link."""
    if path.is_symlink() or not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("tool") != "pcnotes":
        return None
    return marker


def _why_not_ours(folder: Path, kind: str, force: bool = False) -> str | None:
    """``None`` if ``folder`` may be replaced by a ``kind`` output, else the reason.

    With ``force``, only a missing marker or one of another kind is a reason.
    """
    if not any(folder.iterdir()):
        return None
    marker = _read_marker(folder)
    if marker is None:
        return f"has no {MARKER} marker, so pcnotes did not write it"
    if marker.get("kind") != kind:
        return f"is a pcnotes '{marker.get('kind')}' output, not a '{kind}' one"
    if force:
        return None
    if marker.get("format") == 1:
        return (f"has a {MARKER} marker in format 1, which does not record what its files held, "
                "so edits to them cannot be ruled out")
    if marker.get("format") != MARKER_FORMAT:
        return f"has a {MARKER} marker in format {marker.get('format')!r}, which this pcnotes does not read"
    listed = marker.get("files")
    if not isinstance(listed, dict):
        return f"has a {MARKER} marker without its file list"
    extra = sorted(name for name in _entries(folder) - set(listed) if not _is_os_junk(name))
    if extra:
        return f"holds files pcnotes did not write there ({', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''})"
    changed = sorted(name for name, digest in listed.items()
                     if digest is not None and _file_hash(folder / name) != digest)
    if changed:
        return f"holds {changed[0]}, which was changed since pcnotes wrote it" + (
            f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
    return None


def check_target(target: str | os.PathLike, kind: str, *, inputs: Sequence[str | os.PathLike] = (),
                 force: bool = False) -> Path:
    """Refuse, before any work starts, a ``target`` that :func:`replace_folder` must not replace.

    ``force`` allows an edited pcnotes output of the same ``kind``. Returns the resolved target. Raises :class:`UnsafeTargetError` naming the
    folder, the reason and what to do (see the module docstring for the rules).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shown = os.fspath(target)
    resolved = _resolve(target)
    where = shown if shown == str(resolved) else f"{shown} (that is {resolved})"

    def refuse(reason: str, advice: str = "choose another folder") -> UnsafeTargetError:
        return UnsafeTargetError(f"{where}: {reason}; refusing to replace it: {advice}")

    if resolved == Path(resolved.anchor):
        raise refuse("is the root of the file system")
    for name, place in (("home folder", _home()), ("current folder", _cwd())):
        if place is not None and _contains(resolved, place):
            what = f"is the {name}" if resolved == place else f"contains the {name}"
            raise refuse(what, "choose a subfolder")
    for given in inputs:
        source = _resolve(given)
        if _contains(resolved, source):
            raise refuse(f"is or contains the input {os.fspath(given)}", "choose a folder outside the inputs")
        if source.is_dir() and _contains(source, resolved):
            raise refuse(f"lies inside the input {os.fspath(given)}", "choose a folder outside the inputs")
    ancestor = next(p for p in resolved.parents if os.path.lexists(p))
    if not ancestor.is_dir():
        raise refuse(f"cannot be made, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK):
        raise refuse(f"cannot be made, no permission to write in {ancestor}")
    if os.path.lexists(resolved):
        if not resolved.is_dir():
            raise refuse("exists and is not a folder")
        if os.path.ismount(resolved):
            raise refuse("is a mount point, which cannot be renamed", "choose a subfolder of it")
        reason = _why_not_ours(resolved, kind, force)
        if reason is not None:
            advice = "choose another folder, or move its files away first"
            if (_read_marker(resolved) or {}).get("kind") == kind:  # an edited pcnotes output
                advice = "choose another folder, move that file away, or pass --force (force=True) to replace it"
            raise refuse(reason, advice)
    return resolved


# -- staging and the swap --------------------------------------------------------


def _temp_name(target: Path, role: str) -> str:
    return f".{target.name[:_NAME_MAX]}.pcnotes-{role}-{os.getpid()}-{_HOST}-{secrets.token_hex(4)}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence check only
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale(parent: Path) -> None:
    """Remove staging folders of dead runs in ``parent``; put back an old folder whose target vanished."""
    if os.name != "posix" or not parent.is_dir():
        return
    for path in parent.iterdir():
        match = _TEMP.match(path.name)
        if (match is None or match["host"] != _HOST or not path.is_dir() or path.is_symlink()
                or _process_exists(int(match["pid"]))):
            continue
        original = parent / match["name"]
        if match["role"] == "old" and not os.path.lexists(original):
            if len(match["name"]) < _NAME_MAX:  # a full name: the folder it was moved aside from
                with contextlib.suppress(OSError):
                    os.rename(path, original)
            continue  # never delete the only copy
        shutil.rmtree(path, ignore_errors=True)


def _mkdirs(folder: Path) -> list[Path]:
    """``mkdir -p`` (following the umask); returns the folders it made, outermost first."""
    made = [p for p in reversed(folder.parents) if not p.exists()] + ([] if folder.exists() else [folder])
    folder.mkdir(parents=True, exist_ok=True)
    return made


def write_marker(folder: Path, kind: str, files: Sequence[str] | None = None) -> None:
    """Write the marker that proves ``folder`` is a pcnotes ``kind`` output.

    It lists ``files`` (POSIX paths relative to ``folder``), by default
    everything now in the folder, each with the sha256 of its content
    (``null`` for a folder), so that a later edit shows.
    """
    listed = sorted(_entries(folder) if files is None else files)
    hashes = {name: _file_hash(folder / name) for name in listed}
    marker = {"tool": "pcnotes", "kind": kind, "format": MARKER_FORMAT, "files": hashes}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def write_file(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to the file ``path`` at once: never a half-written file.

    The bytes go to a hidden sibling ``.NAME.pcnotes-part-PID-HOST-RANDOM``
    first, which replaces ``path`` only when it is complete (``os.replace``);
    on any error, Ctrl-C included, it is removed and ``path`` is left as it
    was.  The parent folder is made if missing.  Permissions follow the
    umask, as with ``open`` (``tempfile.mkstemp`` would make the file
    private, 0600).  For single files: results, figures, notebooks; a
    folder of them goes through :func:`replace_folder`.
    """
    path = Path(path)
    _mkdirs(path.parent)
    temporary = path.with_name(_temp_name(path, "part"))
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _same_content(a: Path, b: Path) -> bool:
    names = _entries(a) | {MARKER}
    if names != _entries(b) | {MARKER}:
        return False
    files = [n for n in sorted(names) if (a / n).is_file() and not (a / n).is_symlink()]
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    return not mismatch and not errors


def _swap_in(staging: Path, target: Path, kind: str, inputs, force: bool = False) -> None:
    """Put ``staging`` at ``target``; the old target is removed only after the new one is in place."""
    for _ in range(3):  # a concurrent run may create or replace the target meanwhile
        if not os.path.lexists(target):
            try:
                os.rename(staging, target)
                return
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue
        check_target(target, kind, inputs=inputs, force=force)  # again: the folder may have changed meanwhile
        if _same_content(staging, target):
            shutil.rmtree(staging)
            return
        old = target.parent / _temp_name(target, "old")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(old, target)  # put the earlier output back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    raise UnsafeTargetError(f"{target}: changed three times while pcnotes was replacing it; try again")


def _disk_full(error: OSError, target: Path) -> DiskFullError:
    full = DiskFullError(error.errno, f"no space left on the device while writing {target}; "
                                      f"free some space or choose another folder ({target} was left as it was)")
    full.filename = str(target)
    return full


@contextlib.contextmanager
def replace_folder(target: str | os.PathLike, kind: str, *,
                   inputs: Sequence[str | os.PathLike] = (), force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it replaces ``target``.

    ``kind`` is one of :data:`KINDS` and is written into the marker;
    ``inputs`` are the files and folders the run reads (see the module
    docstring). :func:`check_target` runs first, so a refused target raises
    :class:`UnsafeTargetError` before the block starts. If the block raises
    (including Ctrl-C, SIGTERM, SIGHUP), the staging folder and any parent
    folders made for it are removed and ``target`` is untouched. A full disk
    raises :class:`DiskFullError`, whose message has no byte counts.
    """
    resolved = check_target(target, kind, inputs=inputs, force=force)
    with interrupts_on_signals():
        made = _mkdirs(resolved.parent)
        _remove_stale(resolved.parent)
        staging = resolved.parent / _temp_name(resolved, "tmp")
        try:
            staging.mkdir()
            yield staging
            write_marker(staging, kind)
            with _signals_held():
                _swap_in(staging, resolved, kind, inputs, force)
        except BaseException as error:
            with _signals_held():
                shutil.rmtree(staging, ignore_errors=True)
                for folder in reversed(made):  # deepest first; only if still empty
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) \
                    and not isinstance(error, DiskFullError):
                raise _disk_full(error, resolved) from error
            raise


# -- numba's cache -----------------------------------------------------------------


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def numba_cache_fallback(candidates: Sequence[Path]) -> Path | None:
    """A private temporary cache folder if none of ``candidates`` is writable, else ``None``."""
    if any(_writable(Path(folder)) for folder in candidates):
        return None
    return Path(tempfile.gettempdir()) / f"pcnotes-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"


def use_writable_numba_cache() -> None:
    """Give numba a writable cache folder when its own two places are read-only.

    numba caches compiled kernels next to the source (``pcnotes/fast/__pycache__``)
    or, failing that, in the user's cache folder; when both are read-only (an
    installed package and a read-only HOME, as in some containers) the first
    kernel call fails with a cache error. Then ``NUMBA_CACHE_DIR`` is pointed
    at a temporary folder. Must run before numba is imported, so
    :mod:`pcnotes.fast.coreset` calls it first thing; a value the user set is kept.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    fallback = numba_cache_fallback([Path(__file__).parents[1] / "fast" / "__pycache__", Path(user_cache) / "numba"])
    if fallback is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(fallback)
