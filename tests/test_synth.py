"""Tests for pcnotes.data.synth: the procedural default data set."""

from __future__ import annotations

import hashlib
import json
import os

from pathlib import Path

import numpy as np

import pytest
from PIL import Image

from pcnotes.data import synth
from pcnotes.util.folders import MARKER, UnsafeTargetError, replace_folder
from pcnotes.data.mvtec import MVTecDataset, list_categories

SMALL = dict(n_train=2, n_test_good=1, n_test_per_defect=1)
CROP_LO, CROP_HI = 16, 240  # the central 224x224 crop of a 256x256 image


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "set"
    return synth.generate_dataset(root, seed=0, **SMALL)


def _read(path):
    with Image.open(path) as img:
        img.load()
        return img.mode, img.size, np.asarray(img)


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------


def test_same_seed_same_bytes_different_seed_different(small_set, tmp_path):
    again = synth.generate_dataset(tmp_path / "again", seed=0, **SMALL)
    assert _all_files(again) == _all_files(small_set)
    other = synth.generate_dataset(tmp_path / "other", seed=1, **SMALL)
    m0, m1 = synth.read_manifest(small_set), synth.read_manifest(other)
    assert m0["sha256"] != m1["sha256"]
    assert m0["files"].keys() == m1["files"].keys()
    assert all(m0["files"][k] != m1["files"][k] for k in m0["files"])


def test_each_image_is_reproducible_on_its_own(small_set):
    image, mask = synth.render_sample("wood", "test/hole", 0, seed=0)
    on_disk = _read(small_set / "wood" / "test" / "hole" / "000.png")[2]
    np.testing.assert_array_equal(image, on_disk)
    disk_mask = _read(small_set / "wood" / "ground_truth" / "hole" / "000_mask.png")[2]
    np.testing.assert_array_equal(mask, disk_mask)
    # Train and test images come from different streams.
    train0, _ = synth.render_sample("wood", "train/good", 0)
    test0, _ = synth.render_sample("wood", "test/good", 0)
    assert not np.array_equal(train0, test0)


def test_manifest_hashes_match_files(small_set):
    manifest = synth.read_manifest(small_set)
    assert manifest["seed"] == 0 and manifest["version"] == synth.GENERATOR_VERSION
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((small_set / rel).read_bytes()).hexdigest() == digest
    assert manifest["n_files"] == len(manifest["files"])


# --------------------------------------------------------------------------
# Layout, counts, images and masks
# --------------------------------------------------------------------------


def test_layout_and_counts(small_set):
    assert list_categories(small_set) == sorted(synth.CATEGORIES)
    manifest = synth.read_manifest(small_set)
    for category in synth.CATEGORIES:
        cat = small_set / category
        assert len(list((cat / "train" / "good").glob("*.png"))) == 2
        assert len(list((cat / "test" / "good").glob("*.png"))) == 1
        defects = sorted(p.name for p in (cat / "test").iterdir() if p.name != "good")
        assert defects == sorted(synth.DEFECTS[category])
        assert len(synth.DEFECTS[category]) >= 3
        for defect in synth.DEFECTS[category]:
            assert len(list((cat / "test" / defect).glob("*.png"))) == 1
            assert (cat / "ground_truth" / defect / "000_mask.png").is_file()
        expected = {"train/good": 2, "test/good": 1, **{f"test/{d}": 1 for d in synth.DEFECTS[category]}}
        assert manifest["categories"][category] == expected
    # No temporary folders left next to the set.
    assert [p.name for p in small_set.parent.iterdir()] == ["set"]


def test_dataset_loader_reads_generated_set(small_set):
    test = MVTecDataset(small_set, "tiles", "test")
    assert len(test) == 1 + len(synth.DEFECTS["tiles"])
    assert sum(test.labels) == len(synth.DEFECTS["tiles"])
    item = test[test.labels.index(1)]
    assert item["mask"].sum() > 0
    assert len(MVTecDataset(small_set, "tiles", "train")) == 2


def test_images_are_256_rgb_and_masks_binary_inside_crop(small_set):
    for category in synth.CATEGORIES:
        for path in (small_set / category).glob("*/*/*.png"):
            mode, size, array = _read(path)
            if "ground_truth" in path.parts:
                assert mode == "L" and size == (256, 256)
                mask = array
                assert set(np.unique(mask)) == {0, 255}
                inside = mask[CROP_LO:CROP_HI, CROP_LO:CROP_HI]
                assert (inside > 0).sum() == (mask > 0).sum() > 0  # all of it inside the crop
            else:
                assert mode == "RGB" and size == (256, 256)


@pytest.mark.parametrize("category", synth.CATEGORIES)
def test_defects_are_visible_and_sized_plausibly(category):
    for defect in synth.DEFECTS[category]:
        for index in range(3):
            rng = np.random.default_rng([123, index])
            clean = synth.render_texture(category, rng, 256)
            state = rng.bit_generator.state
            image, mask = synth.add_defect(clean, defect, rng, category=category)
            assert image.shape == (256, 256, 3) and image.dtype == np.uint8
            assert mask.shape == (256, 256) and mask.dtype == np.uint8
            fraction = (mask > 0).mean()
            assert 0.0015 <= fraction <= 0.045, (category, defect, fraction)
            # Visible: inside the mask the image changed clearly.
            change = np.abs(image.astype(int) - clean.astype(int)).max(axis=2)
            assert change[mask > 0].mean() > 25, (category, defect)
            # Nothing changed outside the central crop.
            outside = np.ones_like(mask, bool)
            outside[CROP_LO:CROP_HI, CROP_LO:CROP_HI] = False
            assert change[outside].max() == 0
            # Same generator state -> same defect.
            rng.bit_generator.state = state
            again, again_mask = synth.add_defect(clean, defect, rng, category=category)
            np.testing.assert_array_equal(again, image)
            np.testing.assert_array_equal(again_mask, mask)


def test_normal_images_vary():
    a = synth.render_texture("fabric", np.random.default_rng(1))
    b = synth.render_texture("fabric", np.random.default_rng(2))
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_bad_arguments():
    with pytest.raises(ValueError):
        synth.render_texture("marble", np.random.default_rng(0))
    with pytest.raises(ValueError):
        synth.add_defect(np.zeros((256, 256, 3), np.uint8), "dent", np.random.default_rng(0))
    with pytest.raises(ValueError):
        synth.generate_dataset("/nonexistent/never", categories=["marble"])
    with pytest.raises(ValueError):
        synth.generate_dataset("/nonexistent/never", seed=-1)


# --------------------------------------------------------------------------
# Atomic writing and the default set
# --------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_generation_leaves_nothing(tmp_path, monkeypatch, error):
    real_save = synth._save_png
    calls = {"n": 0}

    def flaky_save(path, array):
        calls["n"] += 1
        if calls["n"] == 5:
            raise error("simulated crash")
        real_save(path, array)

    monkeypatch.setattr(synth, "_save_png", flaky_save)
    with pytest.raises(error):
        synth.generate_dataset(tmp_path / "set", categories=["wood"], **SMALL)
    assert calls["n"] == 5
    assert list(tmp_path.iterdir()) == []  # no target, no stray temporary folder


def test_regenerating_replaces_a_generated_set(tmp_path):
    root = synth.generate_dataset(tmp_path / "set", categories=["tiles"], seed=0, **SMALL)
    synth.generate_dataset(root, categories=["tiles"], seed=3, **SMALL)
    assert synth.read_manifest(root)["seed"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(UnsafeTargetError, match="refusing"):
        synth.generate_dataset(foreign, categories=["wood"], **SMALL)
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_ensure_does_not_regenerate_when_manifest_present(small_set, monkeypatch):
    before = (small_set / synth.MANIFEST_NAME).stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("must not regenerate")

    monkeypatch.setattr(synth, "generate_dataset", boom)
    assert synth.ensure_default_dataset(small_set, seed=0) == small_set
    assert (small_set / synth.MANIFEST_NAME).stat().st_mtime_ns == before


def test_ensure_generates_when_missing_or_stale(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "generate_dataset", lambda root, **kw: calls.append((root, kw)) or root)
    synth.ensure_default_dataset(tmp_path / "fresh")
    assert calls[-1][0] == tmp_path / "fresh"
    # A manifest from another seed (or version) counts as stale.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / synth.MANIFEST_NAME).write_text(json.dumps(
        {"generator": "pcnotes.synth", "version": synth.GENERATOR_VERSION, "seed": 5,
         "categories": {c: {} for c in synth.CATEGORIES}}))
    synth.ensure_default_dataset(stale, seed=0)
    assert calls[-1][0] == stale and len(calls) == 2


def test_ensure_leaves_real_mvtec_layout_alone(tmp_path, monkeypatch):
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    monkeypatch.setattr(synth, "generate_dataset", lambda *a, **k: pytest.fail("regenerated"))
    assert synth.ensure_default_dataset(tmp_path) == tmp_path


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("PCNOTES_DATA", raising=False)
    root = synth.default_data_root()
    assert root.parts[-2:] == ("data", "synthetic")
    assert (root.parent.parent / "pcnotes" / "data" / "synth.py").is_file()  # the clone's data/
    monkeypatch.setenv("PCNOTES_DATA", str(tmp_path))
    assert synth.default_data_root() == tmp_path


def test_an_installed_package_draws_its_data_in_the_user_data_folder_not_in_itself(monkeypatch, tmp_path):
    monkeypatch.delenv("PCNOTES_DATA", raising=False)
    monkeypatch.setattr(synth, "REPO_ROOT", None)  # as from a wheel: no clone around the package
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    root = synth.default_data_root()
    assert root == tmp_path / "share" / "pcnotes" / "synthetic"
    assert not root.is_relative_to(Path(synth.__file__).parents[1])


def test_cli_prints_root_and_counts(small_set, capsys):
    assert synth.main(["--root", str(small_set), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert str(small_set) in out
    assert "wood: train/good 2" in out


def test_identical_set_is_kept_and_a_live_staging_folder_is_left_alone(tmp_path):
    root = synth.generate_dataset(tmp_path / "set", categories=["wood"], seed=0, **SMALL)
    inode = root.stat().st_ino
    synth.generate_dataset(root, categories=["wood"], seed=0, **SMALL)
    assert root.stat().st_ino == inode  # same files: the existing folder stays in place
    # A run still in progress next to the set (this process) keeps its staging folder.
    with replace_folder(tmp_path / "other", "dataset") as live:
        synth.generate_dataset(root, categories=["wood"], seed=1, **SMALL)
        assert live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "set"]


def test_a_set_drawn_before_the_marker_existed_is_still_replaceable(tmp_path):
    root = synth.generate_dataset(tmp_path / "set", categories=["wood"], seed=0, **SMALL)
    (root / MARKER).unlink()  # as written by an older pcnotes: manifest.json only
    synth.generate_dataset(root, categories=["wood"], seed=2, **SMALL)
    assert synth.read_manifest(root)["seed"] == 2
    # ... but not once the user has put a file of their own into it.
    (root / MARKER).unlink()
    (root / "wood" / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeTargetError, match="notes.txt"):
        synth.generate_dataset(root, categories=["wood"], seed=3, **SMALL)
    assert (root / "wood" / "notes.txt").read_text() == "mine"
    assert synth.read_manifest(root)["seed"] == 2


def test_generated_folder_has_normal_permissions(small_set):
    umask = os.umask(0)
    os.umask(umask)
    assert small_set.stat().st_mode & 0o777 == 0o777 & ~umask
