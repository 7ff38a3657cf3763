"""tools/figure_fonts.py: every figure's smallest text, as the book shows it, is 9 px or more."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# %%\nimport matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n" \
         "import matplotlib.pyplot as plt\n"


def fonts(*notebooks: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "figure_fonts.py"), *map(str, notebooks)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow  # a kernel per notebook
def test_a_figure_under_9_px_in_the_book_fails_and_a_legible_one_passes(tmp_path):
    small = tmp_path / "small.py"  # 8-pt text at 80 dpi (8.9 px) in a figure wider than the column
    small.write_text(HEADER + "fig, ax = plt.subplots(figsize=(14, 3), dpi=80)\n"
                     "ax.set_title('tiny', fontsize=8)\n")
    shown = tmp_path / "shown.py"  # a JPEG pyplot figure, and the explorer figure as 06 displays it and as a widget
    shown.write_text(HEADER + "%config InlineBackend.figure_formats = ['jpeg']\n"
                     "fig, ax = plt.subplots(figsize=(8, 3), dpi=80)\nax.set_title('fine', fontsize=9)\n"
                     "\n# %%\nfrom IPython.display import display\nfrom pcnotes.app.explorer import ExplorerFigure\n"
                     "figure = ExplorerFigure(dpi=72)\ndisplay(figure.fig)\nwidget_png = figure.png()\n")

    result = fonts(small)
    assert result.returncode == 1, result.stdout + result.stderr
    name, cell, width, font, rendered = result.stdout.splitlines()[1].split()[:5]
    assert (name, cell, font) == ("small", "1", "8.9") and int(width) > 688  # 8 pt at 80 dpi, cropped tight
    assert float(rendered) == pytest.approx(8.9 * 688 / int(width), abs=0.06)  # shrunk to the column
    assert "'tiny'  <-- under 9 px" in result.stdout and "1 figures with text under 9 px" in result.stderr

    result = fonts(shown)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("shown", "1"), ("shown", "2"), ("shown", "2")]  # all measured
    assert all(9 <= float(row[4]) for row in rows)


# Every figure of the core notebooks is measured where they already run in full:
# tests/test_learner_course.py (the learner edition, every stub filled, draws the book's figures).
