"""Tests for pcnotes.data.mvtec: file loading, transforms and the MVTec AD layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pcnotes.data.mvtec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    MaskValuesWarning,
    MVTecDataset,
    collect_notes,
    image_transform,
    list_categories,
    list_images,
    load_images,
    load_mask,
    load_rgb,
    mask_transform,
    unnormalize,
)

# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


def test_image_transform_shape_dtype_and_normalisation():
    value = 100
    img = Image.new("RGB", (300, 260), (value, value, value))
    out = image_transform()(img)
    assert out.shape == (3, 224, 224)
    assert out.dtype == torch.float32
    expected = (value / 255 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    per_channel = out.mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(per_channel, expected, atol=1e-5)
    # A constant image stays constant through resize and crop.
    assert float(out.std(dim=(1, 2)).max()) < 1e-5


def test_image_transform_is_configurable():
    img = Image.new("RGB", (64, 48), (255, 0, 0))
    out = image_transform(resize=40, crop=32, mean=(0, 0, 0), std=(1, 1, 1))(img)
    assert out.shape == (3, 32, 32)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [1.0, 0.0, 0.0], atol=1e-6)


def test_mask_transform_binary_and_same_crop_as_image():
    # 320x320 -> resize 256 (scale 0.8) -> centre crop 224 (offset 16).
    # A square at [100, 200) maps to [80, 160) after the resize and to
    # [64, 144) after the crop.
    mask = np.zeros((320, 320), np.uint8)
    mask[100:200, 100:200] = 255
    out = mask_transform()(Image.fromarray(mask, "L"))
    assert out.shape == (1, 224, 224)
    assert out.dtype == torch.float32
    assert set(torch.unique(out).tolist()) <= {0.0, 1.0}
    rows = torch.nonzero(out[0].any(dim=1)).flatten()
    cols = torch.nonzero(out[0].any(dim=0)).flatten()
    assert (int(rows.min()), int(rows.max())) == (64, 143)
    assert (int(cols.min()), int(cols.max())) == (64, 143)

    # The image transform puts the same content in the same place.
    rgb = np.zeros((320, 320, 3), np.uint8)
    rgb[100:200, 100:200] = 255
    img = image_transform(mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(rgb))
    bright = img[0] > 0.5
    assert torch.equal(bright, out[0] > 0.5)


def test_unnormalize_roundtrip():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    tensor = image_transform(resize=40, crop=40)(Image.fromarray(rgb))
    back = unnormalize(tensor, IMAGENET_MEAN, IMAGENET_STD)
    assert back.shape == (40, 40, 3)
    assert back.min() >= 0.0 and back.max() <= 1.0
    # Resize to the same size is the identity, so we get the pixels back.
    np.testing.assert_allclose(back, rgb / 255.0, atol=1e-5)
    assert unnormalize(tensor[None]).shape == (1, 40, 40, 3)


# --------------------------------------------------------------------------
# load_rgb / load_mask
# --------------------------------------------------------------------------


def _rgb_array(path):
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_load_rgb_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (8, 6), 77).save(path)
    arr = _rgb_array(path)
    assert arr.shape == (6, 8, 3)
    assert (arr == 77).all()


def test_load_rgb_drops_alpha_of_la_and_rgba(tmp_path):
    Image.new("LA", (4, 4), (200, 0)).save(tmp_path / "la.png")
    assert (_rgb_array(tmp_path / "la.png") == 200).all()
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert (_rgb_array(tmp_path / "rgba.png") == [10, 20, 30]).all()


def test_load_rgb_palette(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 128, 0] + [0] * (256 * 3 - 6))
    img.save(tmp_path / "pal.png")
    assert (_rgb_array(tmp_path / "pal.png") == [255, 128, 0]).all()
    # With a transparent palette entry (no warning, alpha dropped).
    img.save(tmp_path / "pal_t.png", transparency=1)
    assert (_rgb_array(tmp_path / "pal_t.png") == [255, 128, 0]).all()


def test_load_rgb_16bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit grayscale PNG
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    arr = _rgb_array(path)[0, :, 0]
    assert arr[0] == 0
    assert abs(int(arr[1]) - 128) <= 1
    assert arr[2] == 255
    assert arr[3] == 1


def test_load_rgb_16bit_tiff_big_endian_and_mode_i(tmp_path):
    # (Image.convert("I;16B") clips to 255, so build the big-endian image from bytes.)
    big_endian = np.array([[65535, 0, 32768]], dtype=">u2").tobytes()
    Image.frombytes("I;16B", (3, 1), big_endian).save(tmp_path / "be.tif")
    with Image.open(tmp_path / "be.tif") as img:
        assert img.mode == "I;16B"
    assert list(_rgb_array(tmp_path / "be.tif")[0, :, 0]) == [255, 0, 128]
    img_i = Image.fromarray(np.array([[65535, 32768]], dtype=np.int32), mode="I")
    img_i.save(tmp_path / "i.tif")
    arr = _rgb_array(tmp_path / "i.tif")[0, :, 0]
    assert arr[0] == 255 and abs(int(arr[1]) - 128) <= 1


def test_load_rgb_float(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    unit.save(tmp_path / "unit.tif")
    assert list(_rgb_array(tmp_path / "unit.tif")[0, :, 0]) == [0, 128, 255]
    byte_scale = Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32), mode="F")
    byte_scale.save(tmp_path / "bytes.tif")
    assert list(_rgb_array(tmp_path / "bytes.tif")[0, :, 0]) == [0, 100, 255]


def _truncated_png(tmp_path):
    rng = np.random.default_rng(1)
    full = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["random_bytes", "truncated", "empty", "missing", "text"])
def test_load_rgb_bad_files_raise_data_error_naming_path(tmp_path, kind):
    if kind == "random_bytes":
        path = tmp_path / "noise.png"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path = _truncated_png(tmp_path)
    elif kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    elif kind == "missing":
        path = tmp_path / "nope.png"
    else:
        path = tmp_path / "notes.png"
        path.write_text("this is not an image\n")
    with pytest.raises(DataError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=str(path).replace("\\", "\\\\")):
        load_mask(path)


def test_load_mask_binary(tmp_path):
    arr = np.zeros((10, 10), np.uint8)
    arr[2:4, 2:4] = 1  # a 0/1 mask: binary, every non-zero pixel is defect
    Image.fromarray(arr).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.mode == "L"
    out = np.asarray(mask)
    assert set(np.unique(out)) == {0, 255}
    assert (out > 0).sum() == 4
    # An RGB mask counts any channel.
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[0, 0, 2] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb_mask.png")
    assert (np.asarray(load_mask(tmp_path / "rgb_mask.png")) > 0).sum() == 1


# --------------------------------------------------------------------------
# MVTecDataset
# --------------------------------------------------------------------------


def _save_image(path, value, size=(64, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def _save_mask(path, box, size=(64, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(size[::-1], np.uint8)
    y0, y1, x0, x1 = box
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(path)


@pytest.fixture
def tiny_mvtec(tmp_path):
    """root/widget with 3 train, 2 test good, 2 'scratch' and 1 'dent' image."""
    cat = tmp_path / "widget"
    for i in range(3):
        _save_image(cat / "train" / "good" / f"{i:03d}.png", 100)
    for i in range(2):
        _save_image(cat / "test" / "good" / f"{i:03d}.png", 100)
    for i in range(2):
        _save_image(cat / "test" / "scratch" / f"{i:03d}.png", 50)
        _save_mask(cat / "ground_truth" / "scratch" / f"{i:03d}_mask.png", (20, 40, 20, 40))
    _save_image(cat / "test" / "dent" / "000.png", 50)
    _save_mask(cat / "ground_truth" / "dent" / "000_mask.png", (0, 8, 0, 8))
    # Noise that must be ignored: a hidden file and a non-image file.
    (cat / "train" / "good" / "._000.png").write_bytes(b"junk")
    (cat / "train" / "good" / "notes.txt").write_text("x")
    # A folder that is not a category.
    (tmp_path / "docs").mkdir()
    return tmp_path


def test_list_categories(tiny_mvtec):
    assert list_categories(tiny_mvtec) == ["widget"]
    with pytest.raises(DataError):
        list_categories(tiny_mvtec / "missing")


def test_dataset_train_split(tiny_mvtec):
    ds = MVTecDataset(tiny_mvtec, "widget", "train", resize=64, crop=56)
    assert len(ds) == 3
    assert ds.labels == [0, 0, 0]
    assert ds.defects == ["good"] * 3
    assert [p.split("/")[-1] for p in ds.paths] == ["000.png", "001.png", "002.png"]
    item = ds[0]
    assert item["image"].shape == (3, 56, 56)
    assert item["mask"].shape == (1, 56, 56)
    assert float(item["mask"].sum()) == 0.0
    assert item["label"] == 0 and item["defect"] == "good"
    assert item["path"] == ds.paths[0]


def test_dataset_test_split(tiny_mvtec):
    ds = MVTecDataset(tiny_mvtec, "widget", "test", resize=64, crop=64)
    assert len(ds) == 5
    assert ds.defects == ["good", "good", "dent", "scratch", "scratch"]
    assert ds.labels == [0, 0, 1, 1, 1]
    good = ds[0]
    assert float(good["mask"].abs().sum()) == 0.0
    scratch = ds[3]
    assert scratch["label"] == 1 and scratch["defect"] == "scratch"
    assert float(scratch["mask"].sum()) == 20 * 20
    assert float(scratch["mask"][0, 20:40, 20:40].min()) == 1.0
    # DataLoader collation works on the dict items.
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 3, 64, 64)
    assert batch["label"].tolist() == ds.labels


def test_missing_mask_raises_at_construction(tiny_mvtec):
    missing = tiny_mvtec / "widget" / "ground_truth" / "scratch" / "001_mask.png"
    missing.unlink()
    with pytest.raises(DataError) as info:
        MVTecDataset(tiny_mvtec, "widget", "test")
    assert str(missing) in str(info.value)
    # The train split does not need masks.
    assert len(MVTecDataset(tiny_mvtec, "widget", "train")) == 3


def test_empty_train_good_raises_naming_folder(tiny_mvtec):
    folder = tiny_mvtec / "widget" / "train" / "good"
    for p in folder.glob("*.png"):
        p.unlink()
    for split in ("train", "test"):
        with pytest.raises(DataError, match="no training images") as info:
            MVTecDataset(tiny_mvtec, "widget", split)
        assert str(folder) in str(info.value)


def test_missing_train_good_raises(tiny_mvtec):
    import shutil

    shutil.rmtree(tiny_mvtec / "widget" / "train")
    with pytest.raises(DataError, match="no training images"):
        MVTecDataset(tiny_mvtec, "widget", "train")


def test_missing_category_and_root_raise(tiny_mvtec):
    with pytest.raises(DataError) as info:
        MVTecDataset(tiny_mvtec, "gadget")
    assert str(tiny_mvtec / "gadget") in str(info.value)
    assert "widget" in str(info.value)  # lists what is available
    with pytest.raises(DataError) as info:
        MVTecDataset(tiny_mvtec / "nowhere", "widget")
    assert str(tiny_mvtec / "nowhere") in str(info.value)


def test_corrupt_image_raises_when_loaded(tiny_mvtec):
    bad = tiny_mvtec / "widget" / "train" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = MVTecDataset(tiny_mvtec, "widget", "train")  # construction does not decode
    ds[0]
    with pytest.raises(DataError) as info:
        ds[1]
    assert str(bad) in str(info.value)


def test_mask_size_mismatch_raises(tiny_mvtec):
    mask = tiny_mvtec / "widget" / "ground_truth" / "dent" / "000_mask.png"
    _save_mask(mask, (0, 8, 0, 8), size=(32, 32))
    ds = MVTecDataset(tiny_mvtec, "widget", "test")
    with pytest.raises(DataError, match="mask size"):
        ds[ds.defects.index("dent")]


def test_load_images(tiny_mvtec, tmp_path):
    paths = sorted((tiny_mvtec / "widget" / "train" / "good").glob("0*.png"))
    batch = load_images(paths)
    assert batch.shape == (3, 3, 224, 224)
    small = load_images(paths[:1], image_transform(resize=32, crop=32))
    assert small.shape == (1, 3, 32, 32)
    with pytest.raises(DataError):
        load_images([])
    with pytest.raises(DataError, match="nope.png"):
        load_images([tmp_path / "nope.png"])


# --------------------------------------------------------------------------
# Issue 10: masks that are not binary, data roots that are files, validation
# --------------------------------------------------------------------------


def _mask_file(path, array, **save):
    Image.fromarray(array).save(path, **save)
    return path


@pytest.mark.parametrize("values, dtype", [((0, 255), np.uint8), ((0, 1), np.uint8), ((0, 65535), np.uint16),
                                           ((0, 128), np.uint8), ((255,), np.uint8)])
def test_binary_masks_load_without_a_warning(tmp_path, values, dtype, recwarn):
    array = np.full((8, 8), values[0], dtype)
    array[2:5, 2:5] = values[-1]
    mask = np.asarray(load_mask(_mask_file(tmp_path / "m.png", array)))
    assert (mask > 0).sum() == (64 if values == (255,) else 9)
    assert not [w for w in recwarn if issubclass(w.category, MaskValuesWarning)]


def test_a_background_of_one_warns_names_the_values_and_is_thresholded(tmp_path):
    array = np.ones((8, 8), np.uint8)  # background 1 in a 0..255 mask
    array[2:5, 2:5] = 255
    path = _mask_file(tmp_path / "m.png", array)
    with pytest.warns(MaskValuesWarning) as caught:
        mask = np.asarray(load_mask(path))
    assert str(caught[0].message) == (f"{path}: mask is not binary (values seen: 1, 255); pixels above half "
                                      "the maximum (127.5) count as defect; save masks with only 0 and one "
                                      "other value")
    assert (mask > 0).sum() == 9  # the defect, not the whole image


def test_many_masks_that_are_not_binary_are_one_line_that_counts_them(tmp_path):
    array = np.ones((8, 8), np.uint8)  # a JPEG-like background of 1
    array[2:5, 2:5] = 255
    paths = [_mask_file(tmp_path / f"{i:03d}_mask.png", array) for i in range(5)]
    with pytest.warns(MaskValuesWarning) as caught, collect_notes():
        masks = [np.asarray(load_mask(path)) for path in paths]
    assert [str(w.message) for w in caught if issubclass(w.category, MaskValuesWarning)] == [
        f"5 mask files are not binary; the first: {paths[0]}: mask is not binary (values seen: 1, 255); pixels "
        "above half the maximum (127.5) count as defect; save masks with only 0 and one other value"]
    assert all((mask > 0).sum() == 9 for mask in masks)


def test_jpeg_ringing_warns_and_the_intended_mask_comes_back(tmp_path):
    array = np.zeros((64, 64), np.uint8)
    array[20:40, 16:48] = 255
    path = _mask_file(tmp_path / "m_mask.jpg", array, quality=70)
    with Image.open(path) as jpeg:
        seen = np.unique(np.asarray(jpeg))
    assert len(seen) > 2  # the premise: JPEG rings around the edges
    with pytest.warns(MaskValuesWarning, match=r"m_mask.jpg: mask is not binary \(values seen: 0, 1, .*, 255\)"):
        mask = np.asarray(load_mask(path)) > 0
    assert (mask != (array > 0)).sum() <= 2  # at most a stray pixel on the edge


def test_list_images_is_sorted_skips_hidden_and_other_files_and_names_a_bad_folder(tiny_mvtec, tmp_path):
    train = tiny_mvtec / "widget" / "train" / "good"
    (train / "010.JPG").write_bytes(b"x")
    assert [p.name for p in list_images(train)] == ["000.png", "001.png", "002.png", "010.JPG"]
    with pytest.raises(DataError, match="folder does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataError, match="is a file, not a folder"):
        list_images(train / "000.png")


def test_a_data_root_that_is_a_file_says_so(tmp_path):
    archive = tmp_path / "mvtec.tar"
    archive.write_bytes(b"")
    for call in (lambda: list_categories(archive), lambda: MVTecDataset(archive, "widget")):
        with pytest.raises(DataError, match="is a file; the data root must be the folder"):
            call()


def test_validate_decodes_every_image_and_mask(tiny_mvtec):
    MVTecDataset(tiny_mvtec, "widget", "test").validate()
    mask = tiny_mvtec / "widget" / "ground_truth" / "scratch" / "001_mask.png"
    _save_mask(mask, (0, 8, 0, 8), size=(32, 32))
    with pytest.raises(DataError, match="mask size"):
        MVTecDataset(tiny_mvtec, "widget", "test").validate()
    bad = tiny_mvtec / "widget" / "train" / "good" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match="002.png: cannot read image"):
        MVTecDataset(tiny_mvtec, "widget", "train").validate()
