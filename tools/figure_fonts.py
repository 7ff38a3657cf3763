"""The smallest text of every notebook figure, in pixels, as the book shows it.

    python tools/figure_fonts.py [NOTEBOOK.py ...] [--column 688] [--min 9]

Runs each notebook (default: the core ones, notebooks/NN_topic.py) in a fresh kernel,
with a hook on matplotlib's ``print_figure`` that looks at every PNG or JPEG rendered into memory
(the inline backend's, ``display(fig)``'s, a widget's): the smallest visible text (font size
in points × dpi / 72, in pixels of the image) and the width of the image. The book shows an image
at its own width, or shrunk to the column when wider, so

    rendered px = font px × min(image width, column) / image width.

The column is the width an output image gets in the book (tools/build_book.py) in a
1280-pixel-wide browser window: 688 px (790 px from 1440 px on). Exit status 1 when any
figure's smallest text renders under ``--min`` pixels. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

COLUMN_PX = 688
MIN_PX = 9.0
MARK = "FIGURE_FONTS "

HOOK = '''
import io as _io

from matplotlib.backend_bases import FigureCanvasBase as _Canvas
from matplotlib.text import Text as _Text
from PIL import Image as _Image

_FIGURE_FONTS = []
_print_figure = _Canvas.print_figure
_RASTER = ("png", "jpeg", "jpg")  # the inline backend's formats (several notebooks show JPEG)
_CELL = [0]  # the notebook's code cell running now, from 1 (this hook's own cell is not counted)


def _next_cell(info):
    _CELL[0] += 1


get_ipython().events.register("pre_run_cell", _next_cell)


def _drawn_texts(fig):
    """Visible, non-empty texts; tick labels only of axes that are drawn."""
    hidden = set()
    for ax in fig.axes:
        if not ax.axison:
            hidden.update(ax.get_xticklabels() + ax.get_yticklabels())
    return [t for t in fig.findobj(_Text) if t.get_visible() and t.get_text().strip() and t not in hidden]


def _recording_print_figure(self, filename, *args, **kwargs):
    """Every PNG or JPEG rendered into memory (the inline backend, display(fig), a widget's png)."""
    result = _print_figure(self, filename, *args, **kwargs)
    texts = _drawn_texts(self.figure)
    if isinstance(filename, _io.BytesIO) and texts and kwargs.get("format", "png") in _RASTER:
        smallest = min(texts, key=lambda t: t.get_fontsize())
        dpi = kwargs.get("dpi")
        dpi = dpi if isinstance(dpi, (int, float)) else self.figure.dpi  # savefig passes "figure"
        _FIGURE_FONTS.append({"cell": _CELL[0],
                              "width": _Image.open(_io.BytesIO(filename.getvalue())).width,
                              "font_px": smallest.get_fontsize() * dpi / 72,
                              "text": smallest.get_text()[:40]})
    return result


_Canvas.print_figure = _recording_print_figure
'''


def rendered_px(font_px: float, width: int, column: int = COLUMN_PX) -> float:
    """The font's height in the book: images wider than the column are shrunk to it."""
    return font_px * min(width, column) / width


def instrumented(notebook):
    """The notebook's code cells between the hook and a last cell that prints what the hook recorded."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    report = new_code_cell(f"print({MARK!r} + __import__('json').dumps(_FIGURE_FONTS))")
    return nbformat.v4.new_notebook(cells=[new_code_cell(HOOK), *code, report], metadata=notebook.metadata)


def records(executed) -> list[dict]:
    """What :func:`instrumented`'s last cell printed: one record per figure."""
    for output in executed.cells[-1].outputs:
        if output.get("name") == "stdout" and MARK in output.text:
            return json.loads(output.text.split(MARK, 1)[1])
    raise RuntimeError("no figure record came back")


def measure(py: Path, timeout: int = 600) -> list[dict]:
    """One record per figure: code cell number, image width, smallest font (px), its text."""
    notebook = instrumented(jupytext.read(py))
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(py.parent)}}).execute()
    return records(notebook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="jupytext .py notebooks; default: the core ones")
    parser.add_argument("--column", type=int, default=COLUMN_PX, help="the book's column width in px")
    parser.add_argument("--min", type=float, default=MIN_PX, help="the smallest legible text in px")
    args = parser.parse_args(argv)
    from nbsync import NAME_PATTERN  # tools/ is on the path when this runs as a script

    notebooks = args.notebooks or sorted(Path("notebooks").glob(f"{NAME_PATTERN}.py"))
    small = 0
    print(f"{'notebook':<28} {'cell':>4} {'width':>5} {'font':>5} {'shown':>5}  smallest text")
    for py in notebooks:
        for record in measure(py):
            shown = rendered_px(record["font_px"], record["width"], args.column)
            flag = "  <-- under %g px" % args.min if shown < args.min else ""
            small += shown < args.min
            print(f"{py.stem:<28} {record['cell']:>4} {record['width']:>5} {record['font_px']:>5.1f} {shown:>5.1f}"
                  f"  {record['text']!r}{flag}")
    if small:
        print(f"{small} figures with text under {args.min:g} px at a {args.column}-px column", file=sys.stderr)
    return 1 if small else 0


if __name__ == "__main__":
    sys.exit(main())
