"""The committed notebooks show nothing of the machine that ran them.

A learner reads them on their own laptop: no absolute paths or download lines
in the outputs (the same patterns as the project's hook,
shared/hooks/machine_traces.py), no dates in the sources, and no execution
timestamps in the cell metadata (``tools/nbsync.py execute`` records none).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOTEBOOKS += sorted((ROOT / "notebooks" / "deeper").glob("*.ipynb"))
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")) + sorted((ROOT / "notebooks" / "deeper").glob("*.py"))

# As in the project hook: a path that starts at the root, after a space, quote, "(" or "=".
ABSOLUTE_PATH = re.compile(r"(^|[\s\"'(=])/[a-z][a-z0-9_.-]*/[a-z0-9_.-]+/")
DOWNLOAD = "Downloading: "
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
          r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
DATE = re.compile(
    r"\b(?:19|20)\d\d-[01]\d-[0-3]\d\b"  # 2026-11-24
    rf"|\b{_MONTH}\.? (?:[0-3]?\d(?:st|nd|rd|th)?,? )?(?:19|20)\d\d\b"  # Nov 24, 2026 / November 2026
    rf"|\b[0-3]?\d(?:st|nd|rd|th)? {_MONTH}\.?,? (?:19|20)\d\d\b"  # 24 November 2026
    r"|\b[0-3]?\d/[01]?\d/(?:19|20)\d\d\b"  # 24/11/2026
)


def output_lines(notebook) -> list[tuple[int, str]]:
    """(cell number from 1, line) for every line of text output: streams and text/plain."""
    lines = []
    for number, cell in enumerate(notebook.cells, start=1):
        for output in cell.get("outputs", []):
            for text in (output.get("text", ""), output.get("data", {}).get("text/plain", "")):
                lines += [(number, line) for line in "".join(text).splitlines()]
    return lines


def test_the_patterns_catch_what_they_are_meant_to():
    assert ABSOLUTE_PATH.search("imagenet (/work/main/data/weights.pt)")
    assert ABSOLUTE_PATH.search("/root/.cache/torch/hub/checkpoints/x.pth")
    assert not ABSOLUTE_PATH.search("imagenet (data/mobilenet_v2_imagenet_features.pt)")
    assert not ABSOLUTE_PATH.search("~/.cache/torch/hub/checkpoints/x.pth and 4608 / 1024")
    for dated in ("measured on 2026-11-24", "in November 2026", "on Nov 24, 2026", "24 Nov 2026", "1/12/2025"):
        assert DATE.search(dated), dated
    for undated in ("2048 -> 1024", "CVPR 2022", "arXiv 2106.08265", "May be", "(2, 784, 1024, 3, 3)"):
        assert not DATE.search(undated), undated


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_outputs_show_no_absolute_path_and_no_download_line(path):
    notebook = nbformat.read(path, as_version=4)
    traces = [f"cell {n}: {line.strip()[:160]}" for n, line in output_lines(notebook)
              if ABSOLUTE_PATH.search(line) or DOWNLOAD in line]
    assert not traces, f"{path.name} shows where it was run:\n" + "\n".join(traces)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_cells_carry_no_execution_timestamps(path):
    notebook = nbformat.read(path, as_version=4)
    stamped = [n for n, cell in enumerate(notebook.cells, start=1) if "execution" in cell.metadata]
    assert not stamped, f"{path.name}: cells {stamped} record when they ran (re-run tools/nbsync.py execute)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_sources_hold_no_dates(path):
    dated = [f"line {n}: {line.strip()[:160]}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if DATE.search(line)]
    assert not dated, f"{path.name} dates its text:\n" + "\n".join(dated)
