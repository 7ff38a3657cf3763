"""The wheel works without the clone: weights, notebooks and results inside, nothing written into it.

One slow test, run by ``make test``: it builds the wheel from a copy of the
sources, installs it into a temporary folder (``pip install --target``; its
dependencies are this venv's), then, from a working folder outside the clone,
with ``PCNOTES_DATA`` unset and ``XDG_DATA_HOME`` pointed into the temporary
folder, runs ``python -m pcnotes demo``, writes the course with
``python -m pcnotes course`` and executes one solution notebook against the
installed package. Every file of the installed package is hashed before and
after: none may change and none may appear, except in ``__pycache__`` (byte
code and numba's compiled kernels, which numba caches beside its source).
About a minute and a half on 2 cores, most of it the demo.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the sdist holds (MANIFEST.in): the wheel is built from these alone
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "pcnotes", "notebooks",
           "benchmarks/results"]
QUICK_NOTEBOOK = "00_setup.ipynb"  # the shipped weights, their hash and the data set's place: quick


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(source), "-w", str(tmp / "dist")], check=True, cwd=tmp, capture_output=True)
    (wheel,) = (tmp / "dist").glob("pcnotes-*.whl")
    return wheel


def package_files(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``folder``, ``__pycache__`` left out."""
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


def run(command: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
path = sys.argv[1]
notebook = nbformat.read(path, as_version=4)
NotebookClient(notebook, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": str(__import__("pathlib").Path(path).parent)}}).execute()
nbformat.write(notebook, path)
"""


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_and_the_course_outside_the_clone(tmp_path):
    started = time.perf_counter()
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    expected = ["pcnotes/data/weights/mobilenet_v2_imagenet_features.pt", "pcnotes/data/weights/PROVENANCE.md",
                "pcnotes/course/notebooks/00_setup.ipynb", "pcnotes/course/notebooks/00_setup.py",
                "pcnotes/course/notebooks/deeper/03_fast_greedy.ipynb", "pcnotes/course/results/coreset.json",
                "pcnotes/course/results/coreset.md", "pcnotes/course/results/real_data_synthetic.json"]
    assert [name for name in expected if name not in names] == []
    shipped = sorted(name.removeprefix("pcnotes/course/notebooks/") for name in names
                     if name.startswith("pcnotes/course/notebooks/"))
    in_clone = sorted(path.relative_to(ROOT / "notebooks").as_posix()
                      for pattern in ("[0-9][0-9]_*.*", "deeper/[0-9][0-9]_*.*")
                      for path in (ROOT / "notebooks").glob(pattern) if path.suffix in (".py", ".ipynb"))
    assert shipped == in_clone
    assert not any(name.startswith(("tests/", "tools/", "data/", "notebooks/", "benchmarks/")) for name in names)

    site, work, data_home = tmp_path / "site", tmp_path / "work", tmp_path / "xdg-data"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PCNOTES_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), XDG_DATA_HOME=str(data_home))
    where = run([sys.executable, "-c", "import pcnotes, pcnotes.util.paths as p; print(pcnotes.__file__); "
                 "print(p.REPO_ROOT)"], env, work).stdout.split("\n")
    assert Path(where[0]) == site / "pcnotes" / "__init__.py" and where[1] == "None"  # not the clone's
    before = package_files(site / "pcnotes")

    demo_started = time.perf_counter()
    demo = run([sys.executable, "-m", "pcnotes", "demo"], env, work)
    demo_seconds = time.perf_counter() - demo_started
    assert "imagenet (" in demo.stdout  # the shipped weights were found and loaded
    assert (data_home / "pcnotes" / "synthetic" / "fabric" / "train" / "good").is_dir()
    assert (work / "runs" / "demo" / "overview.png").is_file()

    course = run([sys.executable, "-m", "pcnotes", "course", "course"], env, work)
    assert course.stdout.startswith("learner edition: ")
    assert (work / "course" / "00_setup.ipynb").is_file() and (work / "course" / "deeper").is_dir()
    run([sys.executable, "-m", "pcnotes", "course", "solutions", "--solutions"], env, work)
    solved = work / "solutions" / QUICK_NOTEBOOK
    run([sys.executable, "-c", EXECUTE, str(solved)], env, work)
    text = solved.read_text()
    assert "kind: imagenet" in text and "sha256 as pinned in pcnotes.stages.s1_features: True" in text
    assert "drawn by pcnotes.data.synth: True" in text and "Traceback" not in text
    assert str(site / "pcnotes") in run([sys.executable, "-c", "import pcnotes; print(pcnotes.__file__)"],
                                        env, work / "solutions").stdout

    after = package_files(site / "pcnotes")
    assert sorted(set(after) - set(before)) == []  # no data set, no outputs inside the package
    assert [name for name in before if before[name] != after.get(name)] == []
    print(f"wheel {wheel.stat().st_size / 1e6:.1f} MB; built, installed and exercised in "
          f"{time.perf_counter() - started:.0f} s, the demo {demo_seconds:.0f} s of it")
