"""pcnotes.util.folders: the one guarded folder replacement never touches a user's file.

The sandboxes hold someone's files; every test compares all of their bytes
before and after. The property test at the end walks a few hundred random
paths (``..``, symbolic links, existing folders with random files) through
the guard.
"""

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pcnotes.util import folders
from pcnotes.util.folders import MARKER, DiskFullError, Interrupted, UnsafeTargetError, check_target, replace_folder

SOURCE_ROOT = str(Path(folders.__file__).parents[2])  # the folder that holds pcnotes/


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry below ``folder`` (links not followed): file bytes, link targets, folders."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(top) / name
            key = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = ("folder",)
            else:
                found[key] = path.read_bytes()
    return found


def write_output(folder: Path, kind: str, files=("result.txt",)) -> Path:
    """An earlier pcnotes output, made the real way."""
    with replace_folder(folder, kind) as staging:
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(f"{kind} output {name}")
    return folder


@pytest.fixture
def place(tmp_path, monkeypatch):
    """tmp_path with a home folder and a working folder of their own."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "home" / "work")
    return tmp_path


def test_replaces_only_on_success_and_keeps_nothing_else(place):
    target = write_output(place / "out", "predict", ["old.txt"])
    for failure in (RuntimeError("failed half-way"), KeyboardInterrupt()):
        with pytest.raises(type(failure)):
            with replace_folder(target, "predict") as staging:
                (staging / "new.txt").write_text("new")
                raise failure
        assert sorted(p.name for p in target.iterdir()) == [MARKER, "old.txt"]
    with replace_folder(target, "predict") as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in place.iterdir()) == ["home", "out"]
    marker = json.loads((target / MARKER).read_text())
    new_hash = hashlib.sha256(b"new").hexdigest()
    assert marker == {"tool": "pcnotes", "kind": "predict", "format": 2, "files": {"new.txt": new_hash}}


def test_parent_folders_made_for_a_failed_run_are_removed(place):
    with pytest.raises(RuntimeError):
        with replace_folder(place / "a" / "b" / "out", "evaluate"):
            raise RuntimeError
    assert sorted(p.name for p in place.iterdir()) == ["home"]


@pytest.mark.parametrize("where, message", [
    (lambda p: "/", "is the root of the file system"),
    (lambda p: p / "home", "is the home folder"),
    (lambda p: p, "contains the home folder"),
    (lambda p: ".", "is the current folder"),
    (lambda p: p / "home" / "work" / "new" / ".." / "..", "is the home folder"),
    (lambda p: p / "data", "is or contains the input"),
    (lambda p: p / "data" / "runs", "lies inside the input"),
    (lambda p: p / "file.txt", "exists and is not a folder"),
    (lambda p: p / "mine", f"has no {MARKER} marker"),
    (lambda p: p / "fit_output", "is a pcnotes 'fit' output, not a 'evaluate' one"),
    (lambda p: p / "tampered", "holds files pcnotes did not write there (sub/notes.txt)"),
    (lambda p: p / "future", "in format 3, which this pcnotes does not read"),
])
def test_refusals_name_the_folder_and_change_nothing(place, where, message):
    (place / "data").mkdir()
    (place / "data" / "image.png").write_bytes(b"data")
    (place / "file.txt").write_text("a file")
    (place / "mine").mkdir()
    (place / "mine" / "config.json").write_text("{}")  # a generic name proves nothing
    write_output(place / "fit_output", "fit")
    write_output(place / "tampered", "evaluate", ["sub/heat.png"])
    (place / "tampered" / "sub" / "notes.txt").write_text("added by the user")
    (place / "future").mkdir()
    (place / "future" / MARKER).write_text(json.dumps({"tool": "pcnotes", "kind": "evaluate", "format": 3}))
    before = snapshot(place)
    target = where(place)
    with pytest.raises(UnsafeTargetError, match="refusing to replace it") as info:
        with replace_folder(target, "evaluate", inputs=[place / "data"]):
            pytest.fail("the block must not run")
    assert message in str(info.value) and str(target) in str(info.value)
    assert snapshot(place) == before


def test_a_mount_point_is_refused(place, monkeypatch):
    (place / "volume").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: str(path) == str(place / "volume"))
    with pytest.raises(UnsafeTargetError, match="is a mount point, which cannot be renamed"):
        check_target(place / "volume", "demo")


def test_a_symlink_is_judged_by_what_it_points_at(place):
    (place / "mine").mkdir()
    (place / "mine" / "keep.txt").write_text("keep")
    (place / "link").symlink_to(place / "mine")
    with pytest.raises(UnsafeTargetError, match=r"link \(that is .*mine\): has no"):
        check_target(place / "link", "fit")
    write_output(place / "out", "fit")
    (place / "out_link").symlink_to(place / "out")
    write_output(place / "out_link", "fit", ["again.txt"])
    assert (place / "out_link").is_symlink() and (place / "out" / "again.txt").is_file()


def test_identical_content_is_left_in_place(place):
    target = write_output(place / "out", "dataset", ["a.png", "b/c.png"])
    inode = target.stat().st_ino
    write_output(target, "dataset", ["a.png", "b/c.png"])
    assert target.stat().st_ino == inode
    write_output(target, "dataset", ["a.png"])
    assert target.stat().st_ino != inode and not (target / "b").exists()


def _killed_run(target: Path, role: str = "tmp") -> Path:
    """A staging folder left by a run killed with SIGKILL; with role 'old', killed between the two renames."""
    code = ("import os, sys\n"
            "from pathlib import Path\n"
            "from pcnotes.util import folders\n"
            "real_rename = os.rename\n"
            "def rename(a, b):\n"
            "    real_rename(a, b)\n"
            f"    if {role!r} == 'old' and '.pcnotes-old-' in str(b):\n"
            "        print(b, flush=True); sys.stdin.read()\n"
            "folders.os.rename = rename\n"
            f"with folders.replace_folder({str(target)!r}, 'evaluate') as staging:\n"
            "    (staging / 'half.png').write_bytes(b'half')\n"
            f"    if {role!r} == 'tmp':\n"
            "        print(staging, flush=True); sys.stdin.read()\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={"PYTHONPATH": SOURCE_ROOT})
    left = Path(process.stdout.readline().strip())
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert left.is_dir()
    return left


def test_staging_of_a_dead_run_is_removed_by_the_next_run_and_a_live_one_is_not(place):
    dead = _killed_run(place / "out")
    with replace_folder(place / "other", "fit") as live:
        write_output(place / "out", "evaluate")
        assert live.is_dir() and not dead.exists()
    assert sorted(p.name for p in place.iterdir()) == ["home", "other", "out"]


def test_an_earlier_output_moved_aside_by_a_killed_run_is_put_back(place):
    target = write_output(place / "out", "evaluate", ["precious_result.txt"])
    before = snapshot(target)
    old = _killed_run(target, role="old")
    assert not target.exists() and snapshot(old) == before  # killed between the two renames
    write_output(place / "elsewhere", "fit")  # any next run in the same folder repairs it
    assert snapshot(target) == before and not old.exists()


def test_a_staging_folder_of_another_host_is_left_alone(place):
    other = place / ".out.pcnotes-tmp-999999-00000000-ab"
    other.mkdir()
    write_output(place / "out", "evaluate")
    assert other.is_dir()


def test_folders_follow_the_umask(place):
    umask = os.umask(0o077)
    try:
        write_output(place / "private" / "out", "fit", ["sub/x.txt"])
        os.umask(0o002)
        write_output(place / "shared" / "out", "fit", ["sub/x.txt"])
    finally:
        os.umask(umask)
    for folder in ("private", "private/out", "private/out/sub"):
        assert (place / folder).stat().st_mode & 0o777 == 0o700
    for folder in ("shared", "shared/out", "shared/out/sub"):
        assert (place / folder).stat().st_mode & 0o777 == 0o775


def test_write_file_replaces_a_file_whole_and_follows_the_umask(place):
    umask = os.umask(0o027)
    try:
        written = folders.write_file(place / "new" / "results.json", "{}\n")  # the folder is made too
        folders.write_file(place / "new" / "figure.png", b"\x89PNG")
    finally:
        os.umask(umask)
    assert written == place / "new" / "results.json" and written.read_text() == "{}\n"
    assert (place / "new" / "figure.png").read_bytes() == b"\x89PNG"
    assert written.stat().st_mode & 0o777 == 0o640  # not mkstemp's private 0600
    assert (place / "new").stat().st_mode & 0o777 == 0o750
    folders.write_file(written, "[1]\n")
    assert written.read_text() == "[1]\n"
    assert sorted(p.name for p in (place / "new").iterdir()) == ["figure.png", "results.json"]


def test_write_file_that_fails_leaves_the_old_file_and_no_partial_one(place):
    old = place / "results.json"
    old.write_text("the old results\n")
    before = sorted(p.name for p in place.iterdir())
    with pytest.raises(TypeError):  # fails in the write itself, after the partial file exists
        folders.write_file(old, [1, 2, 3])
    assert old.read_text() == "the old results\n"
    assert sorted(p.name for p in place.iterdir()) == before


def test_sigterm_and_sighup_raise_like_ctrl_c_only_inside(place, signal_dispositions):
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with signal_dispositions({signum: signal.SIG_DFL}):  # as in a terminal, whatever this run inherited
            with pytest.raises(Interrupted) as info:
                with folders.interrupts_on_signals():
                    os.kill(os.getpid(), signum)
                    signal.sigtimedwait([], 0)  # let the handler run
            assert info.value.signum == signum and isinstance(info.value, KeyboardInterrupt)
            assert signal.getsignal(signum) == signal.SIG_DFL
    # an application's own handler is left alone
    seen = []
    previous = signal.signal(signal.SIGHUP, lambda *args: seen.append("app"))
    try:
        with folders.interrupts_on_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            signal.sigtimedwait([], 0)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert seen == ["app"]


def test_an_ignored_sighup_stays_ignored_inside(signal_dispositions):
    # under nohup: SIGHUP ignored before the block stays ignored in it and after it, and interrupts nothing
    with signal_dispositions({signal.SIGHUP: signal.SIG_IGN}):
        with folders.interrupts_on_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            signal.sigtimedwait([], 0)  # a handler, had one been set, would run here
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_a_signal_during_the_swap_waits_until_the_new_output_is_in_place(place, monkeypatch, signal_dispositions):
    target = write_output(place / "out", "demo", ["old.txt"])
    real_rename = os.rename

    def rename_then_signal(source, destination):
        real_rename(source, destination)
        if ".pcnotes-old-" in str(destination):  # between the two renames of the swap
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "rename", rename_then_signal)
    with signal_dispositions({signal.SIGTERM: signal.SIG_DFL}), pytest.raises(Interrupted):
        with replace_folder(target, "demo") as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in place.iterdir()) == ["home", "out"]


def test_a_full_disk_names_the_folder_without_byte_counts(place):
    target = write_output(place / "out", "fit", ["model.npy"])
    before = snapshot(target)
    with pytest.raises(DiskFullError) as info:
        with replace_folder(target, "fit"):
            raise OSError(errno.ENOSPC, "1000000 requested and 65504 written")
    assert str(info.value) == (f"no space left on the device while writing {target}; free some space or "
                               f"choose another folder ({target} was left as it was)")
    assert info.value.errno == errno.ENOSPC
    assert snapshot(target) == before


def test_numba_gets_a_temporary_cache_only_when_its_own_places_are_read_only(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # nothing can be made below a file, not even by root
    assert folders.numba_cache_fallback([blocker / "pycache", blocker / "home" / ".cache"]) is not None
    assert folders.numba_cache_fallback([blocker / "pycache", tmp_path / "cache"]) is None
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/chosen/by/user")
    folders.use_writable_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == "/chosen/by/user"


def test_numba_writes_its_cache_where_the_fallback_points(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    (tmp_path / "kernel.py").write_text("import numba\n\n@numba.njit(cache=True)\ndef plus_one(x):\n"
                                        "    return x + 1\n")
    code = ("import os\n"
            "from pcnotes.util import folders\n"
            "folders.numba_cache_fallback = lambda candidates: folders.Path(os.environ['FALLBACK'])\n"
            "folders.use_writable_numba_cache()\n"
            "import kernel\n"
            "print(kernel.plus_one(41))\n")
    env = {"PYTHONPATH": f"{SOURCE_ROOT}:{tmp_path}", "HOME": str(blocker / "home"),
           "XDG_CACHE_HOME": str(blocker / "cache"), "FALLBACK": str(tmp_path / "fallback")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    assert list((tmp_path / "fallback").rglob("*.nbi"))  # numba's cache index went to the fallback


# -- the property: no random path ever touches a user's file -------------------------------------


def _random_sandbox(rng: random.Random, base: Path) -> tuple[set[str], dict[str, set[str]]]:
    """Folders of user files, pcnotes outputs (some with a user file added), files and links.

    Returns the user files (relative to ``base``) and, per kind, the folders
    that may be replaced by that kind (``base``-relative, resolved).
    """
    user: set[str] = set()
    replaceable: dict[str, set[str]] = {kind: set() for kind in folders.KINDS}

    def add_user_file(folder: Path):
        path = folder / rng.choice(["config.json", "metrics.json", "scores.csv", "overview.png",
                                    "notes.txt", ".hidden", "memory_bank.npy"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1, 64)))
        user.add(path.relative_to(base).as_posix())

    for folder in ("home", "home/work", "data"):
        (base / folder).mkdir(parents=True, exist_ok=True)
        add_user_file(base / folder)
    for i in range(rng.randrange(2, 5)):
        folder = base / rng.choice(["", "home/", "home/work/", "data/"]) / f"user{i}"
        for _ in range(rng.randrange(1, 4)):
            add_user_file(folder / rng.choice(["", "sub/", "sub/deeper/"]))
    for i in range(rng.randrange(1, 4)):
        folder = base / rng.choice(["", "home/work/"]) / f"out{i}"
        kind = rng.choice(folders.KINDS)
        write_output(folder, kind, rng.sample(["a.png", "b/c.png", "metrics.json", "config.json"], 2))
        if rng.random() < 0.4:
            add_user_file(folder / rng.choice(["", "b/"]))
        else:
            replaceable[kind].add(folder.relative_to(base).as_posix())
    for i in range(rng.randrange(0, 3)):
        (base / f"empty{i}").mkdir()
        for kind in folders.KINDS:
            replaceable[kind].add(f"empty{i}")
    add_user_file(base)
    names = [p for p in base.rglob("*") if not p.is_symlink()]
    for i in range(rng.randrange(1, 4)):
        pointee = rng.choice(names + [base / "ghost", base / "home", base / "home" / "work"])
        (base / rng.choice(["", "home/work/"]) / f"link{i}").symlink_to(pointee)
    return user, replaceable


def _random_target(rng: random.Random, base: Path) -> str:
    """A path typed by someone in a hurry: relative or absolute, with .., . and links."""
    start = rng.choice([base, base / "home", Path("."), Path("..")])
    parts = [str(start)]
    for _ in range(rng.randrange(1, 5)):
        try:
            existing = [p.name for p in Path(os.path.join(os.getcwd(), *parts)).iterdir()]
        except OSError:
            existing = []
        part = rng.choice(existing + ["..", "..", ".", "new", "nonexistent"]) if existing else \
            rng.choice(["..", "new", "nonexistent"])
        parts.append(part)
    return os.path.join(*parts)


def test_no_random_path_ever_touches_a_user_file(tmp_path, monkeypatch):
    rng = random.Random(20240610)
    outcomes = {"replaced": 0, "refused": 0}
    for case in range(300):
        # Deep enough that the at most 5 ".." of a target stay inside this case's folder.
        room = tmp_path / f"case{case}"
        base = room / "a" / "b" / "c" / "d" / "e" / "sandbox"
        user, replaceable = _random_sandbox(rng, base)
        monkeypatch.setenv("HOME", str(base / "home"))
        monkeypatch.chdir(base / "home" / "work")
        target = _random_target(rng, base)
        kind = rng.choice(folders.KINDS)
        resolved = Path(os.path.realpath(target))
        existed = os.path.lexists(resolved)
        before = snapshot(room)  # the guard may create folders above the sandbox: watch them too
        try:
            with replace_folder(target, kind, inputs=[base / "data"] if rng.random() < 0.7 else []) as staging:
                (staging / "new.txt").write_text("new")
        except UnsafeTargetError:
            outcomes["refused"] += 1
            assert snapshot(room) == before, (case, target)
            continue
        outcomes["replaced"] += 1
        after = snapshot(room)
        for path in user:
            key = f"a/b/c/d/e/sandbox/{path}"
            assert after.get(key) == before[key], (case, target, kind, path)
        if existed:  # only an empty folder or an untouched earlier output of this kind
            assert resolved.relative_to(base).as_posix() in replaceable[kind], (case, target, kind)
        assert sorted(p.name for p in resolved.iterdir()) == [MARKER, "new.txt"]
        assert not any(".pcnotes-tmp-" in key or ".pcnotes-old-" in key for key in after), (case, target)
        changed = {key for key in set(before) | set(after) if before.get(key) != after.get(key)}
        inside = resolved.relative_to(room).as_posix()
        assert all(key == inside or key.startswith(inside + "/") or inside.startswith(key + "/")
                   for key in changed), (case, target, changed)
    assert outcomes["replaced"] > 50 and outcomes["refused"] > 50, outcomes
