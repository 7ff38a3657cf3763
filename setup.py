"""The wheel carries the course: the notebooks and the benchmark results they read.

Everything else about the package is declared in pyproject.toml. This file
only adds one step to setuptools' ``build_py``: it copies, from the clone,

    notebooks/NN_topic.py and .ipynb, notebooks/deeper/NN_topic.py and .ipynb
        -> pcnotes/course/notebooks/   (what ``python -m pcnotes course`` writes out)
    benchmarks/results/*.json and *.md
        -> pcnotes/course/results/     (what :func:`pcnotes.util.paths.results_file` reads)

into the build, so that an installed pcnotes has them. A copy, not a symbolic
link: links do not survive a Windows checkout or every sdist. MANIFEST.in puts
the same files into the sdist, from which ``python -m build`` makes the wheel.
A clone (or an editable install) reads the originals in place and gets no copy.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: (source folder in the clone, glob patterns, folder inside the package)
COURSE_FILES = [
    ("notebooks", ["[0-9][0-9]_*.py", "[0-9][0-9]_*.ipynb"], "pcnotes/course/notebooks"),
    ("notebooks/deeper", ["[0-9][0-9]_*.py", "[0-9][0-9]_*.ipynb"], "pcnotes/course/notebooks/deeper"),
    ("benchmarks/results", ["*.json", "*.md"], "pcnotes/course/results"),
]


class build_py_with_course(build_py):
    """setuptools' build_py, then the course files copied into the build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads notebooks/ and benchmarks/results/ in the clone
        for source, patterns, target in COURSE_FILES:
            files = sorted({path for pattern in patterns for path in (HERE / source).glob(pattern)})
            if not files:
                raise SystemExit(f"setup.py: no course files {patterns} in {HERE / source}; "
                                 f"build the wheel from a complete clone or sdist")
            folder = Path(self.build_lib, target)
            self.mkpath(str(folder))
            for path in files:
                self.copy_file(str(path), str(folder / path.name))


setup(cmdclass={"build_py": build_py_with_course})
