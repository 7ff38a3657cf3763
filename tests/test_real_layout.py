"""The notebooks on data in MVTec AD's layout, with MVTec AD's names.

``generate_mvtec_named`` writes a small set that looks like the real MVTec AD
from outside (``bottle`` with ``broken_large`` and ``contamination``, ``tile``
with ``crack`` and ``oil``; RGB 300x200 and grayscale images). Notebooks
00-05 are run from their ``.py`` sources with ``PCNOTES_DATA`` pointing at it:
they must take every category and defect kind from the folders.

The convention the notebooks follow for that:

* ``root = ensure_default_dataset(...)`` (``$PCNOTES_DATA`` when set), then
  ``categories = list_categories(root)`` and ``list_defects(root, category)``;
* a chosen category or defect is picked by position, with a comment naming what
  it is in the embedded set: ``CATEGORY = categories[0]  # fabric in the embedded
  set``; ``DEFECT = list_defects(root, CATEGORY)[-1]  # thread ...``;
* counts come from the data (``len(test)``), never from the embedded set's sizes;
* thresholds on metrics, which are claims about the embedded set, are asserted
  only when ``read_manifest(root) is not None`` (the generated set);
* cells that *draw* with the generator (``render_texture``, ``add_defect``,
  ``render_sample``) keep the generator's own names: they read no data set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jupytext
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from pcnotes.data.mvtec import MVTecDataset, list_categories, list_defects
from pcnotes.util.folders import UnsafeTargetError
from pcnotes.data.synth import CATEGORIES, MVTEC_NAMED, ensure_default_dataset, generate_mvtec_named

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-5]_*.py"))


def _tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes: any change to the folder changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def mvtec_named(tmp_path_factory) -> Path:
    return generate_mvtec_named(tmp_path_factory.mktemp("real") / "mvtec_anomaly_detection")


def test_the_layout_has_mvtec_names_mixed_image_formats_and_a_mask_per_defect(mvtec_named):
    assert list_categories(mvtec_named) == ["bottle", "tile"]
    assert list_defects(mvtec_named, "bottle") == ["broken_large", "contamination"]
    assert list_defects(mvtec_named, "tile") == ["crack", "oil"]
    bottle = Image.open(mvtec_named / "bottle" / "test" / "broken_large" / "000.png")
    tile = Image.open(mvtec_named / "tile" / "train" / "good" / "000.png")
    assert (bottle.mode, bottle.size) == ("RGB", (300, 200))
    assert (tile.mode, tile.size) == ("L", (256, 256))
    for category in MVTEC_NAMED:
        test = MVTecDataset(mvtec_named, category, "test")
        assert len(MVTecDataset(mvtec_named, category, "train")) == 16
        assert test.labels.count(0) == 4 and test.labels.count(1) == 6
        for index in np.flatnonzero(test.labels):
            item = test[int(index)]
            # the defect survives resize + centre crop: the model can be scored on it
            assert item["image"].shape == (3, 224, 224) and item["mask"].sum() > 20, test.paths[index]
            mask = np.asarray(Image.open(test.mask_paths[index]))
            assert mask.shape == Image.open(test.paths[index]).size[::-1]
            assert set(np.unique(mask)) == {0, 255}
    assert not (mvtec_named / "manifest.json").exists()


def test_the_embedded_data_set_machinery_leaves_it_alone(mvtec_named):
    before = _tree_digest(mvtec_named)
    assert ensure_default_dataset(mvtec_named) == mvtec_named
    assert _tree_digest(mvtec_named) == before


def test_it_refuses_to_write_into_a_folder_that_holds_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UnsafeTargetError, match="mine.txt|not"):
        generate_mvtec_named(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = _tree_digest(generate_mvtec_named(tmp_path / "a", n_train=2, n_test_good=1, n_test_per_defect=1))
    b = _tree_digest(generate_mvtec_named(tmp_path / "b", n_train=2, n_test_good=1, n_test_per_defect=1))
    c = _tree_digest(generate_mvtec_named(tmp_path / "c", seed=1, n_train=2, n_test_good=1,
                                          n_test_per_defect=1))
    assert a == b != c


def test_all_six_notebooks_that_read_data_are_run():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"], NOTEBOOKS


def _output_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_notebook_runs_on_the_mvtec_named_layout(source, mvtec_named, monkeypatch):
    before = _tree_digest(mvtec_named)
    monkeypatch.setenv("PCNOTES_DATA", str(mvtec_named))  # the kernel inherits the environment
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    text = _output_text(notebook)
    # Nothing of the embedded set was read: its names appear in no output...
    leaked = [name for name in CATEGORIES if name in text]
    assert not leaked, f"{source.name} printed embedded-set categories {leaked}"
    # ...and the data set was only read, never redrawn or written to.
    assert _tree_digest(mvtec_named) == before
    if source.stem in ("00_setup", "05_evaluation"):  # they print every category
        assert "bottle" in text and "tile" in text, text[-2000:]
