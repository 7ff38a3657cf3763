"""Issue 23: messy real-world files give a right result or one clear line, never a silent wrong one.

The issue's closing note has the table of its 42 cases, each with the tests here that pin it.
The CLI runs in-process (``cli.main``) on small PNGs at ``--resize 64x64``, or on
test_cli's tiny generated data set for ``evaluate``.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pcnotes.app import cli
from pcnotes.app.evaluation import evaluate_category
from pcnotes.config import ConfigError, PatchCoreConfig
from pcnotes.data.mvtec import (DataError, DataWarning, MVTecDataset, image_transform, list_images, load_images,
                                load_mask, load_rgb, stack)
from pcnotes.data.synth import generate_dataset
from pcnotes.model import PatchCore
from pcnotes.stages.s1_features import load_backbone
from pcnotes.util import folders
from pcnotes.util.folders import UnsafeTargetError, replace_folder
from test_cli import CATEGORY, N_TRAIN, RATIO, error_line, run

SIZE = ["--resize", "64x64"]
FAST = ["--coreset-ratio", "0.5", "--sampler", "random"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small generated data set of one category, as test_cli's."""
    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", categories=[CATEGORY], n_train=N_TRAIN,
                            n_test_good=3, n_test_per_defect=2, seed=0)


def texture(seed: int, size=(64, 64)) -> np.ndarray:
    """A smooth random RGB texture ``(H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8 + 1, size[1] // 8 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.BILINEAR))


def write_image(path: Path, seed: int = 0, size=(64, 64)) -> Path:
    Image.fromarray(texture(seed, size)).save(path)
    return path


def image_folder(folder: Path, n: int = 3, suffix: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(folder / f"{i:03d}{suffix}", seed=i)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A model fitted by the CLI on three 64 x 64 textures."""
    place = tmp_path_factory.mktemp("fitted")
    train = image_folder(place / "train")
    code, _, err = run(["fit", "--train-dir", train, "--model", place / "model", *SIZE, *FAST])
    assert code == 0, err
    return place / "model"


@pytest.fixture(scope="module")
def fitted():
    images = torch.stack([image_transform((64, 64), None)(Image.fromarray(texture(i))) for i in range(3)])
    return PatchCore(resize=(64, 64), crop=None, coreset_ratio=1.0).fit(images), images


# -- outputs keep the user's edits; OS junk is ignored -------------------------------


def test_an_edited_output_is_the_users_until_force(model_dir, tmp_path):
    image = write_image(tmp_path / "a.png")
    argv = ["predict", "--model", model_dir, image, "--output", tmp_path / "out"]
    assert run(argv)[0] == 0
    with open(tmp_path / "out" / "scores.csv", "a") as stream:
        stream.write("my,note\n")
    edited = (tmp_path / "out" / "scores.csv").read_bytes()
    code, _, err = run(argv)
    line = error_line(err)
    assert code == 1 and "scores.csv, which was changed since pcnotes wrote it" in line and "--force" in line
    assert (tmp_path / "out" / "scores.csv").read_bytes() == edited  # kept
    assert run([*argv, "--force"])[0] == 0
    assert b"my,note" not in (tmp_path / "out" / "scores.csv").read_bytes()


def test_files_that_operating_systems_add_do_not_block_a_rerun(tmp_path):
    with replace_folder(tmp_path / "out", "predict") as staging:
        (staging / "scores.csv").write_text("path,score\n")
    for junk in (".DS_Store", "._scores.csv", "Thumbs.db", "desktop.ini"):
        (tmp_path / "out" / junk).write_bytes(b"\0junk")
    with replace_folder(tmp_path / "out", "predict") as staging:
        (staging / "scores.csv").write_text("path,score\nnew\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [folders.MARKER, "scores.csv"]
    (tmp_path / "out" / "notes.txt").write_text("mine")  # anything else still makes it the user's
    with pytest.raises(UnsafeTargetError, match="notes.txt"):
        folders.check_target(tmp_path / "out", "predict")


# -- outputs per data set; the category option ---------------------


def test_default_outputs_differ_for_categories_of_the_same_name(tmp_path):
    outputs = {cli.default_output(tmp_path / parent / "cat") for parent in ("a", "b", "x", "y")}
    assert len(outputs) == 4 and all(o.parent == Path("runs") and o.name.startswith("cat-") for o in outputs)
    assert cli.default_output(tmp_path / "a" / "cat") == cli.default_output(tmp_path / "a" / "cat")


@pytest.mark.parametrize("category", [".", "", " ", "sub/.."])
def test_the_root_or_nothing_as_category_is_a_usage_error(tiny, category, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["evaluate", "--data-root", tiny, "--category", category])
    assert code == 2 and "--category must name a category folder" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_two_data_roots_keep_two_outputs_and_a_latin1_name_is_shown(tiny, tmp_path, monkeypatch):
    """Two copies of one category: two outputs; a test image and mask named with a Latin-1 byte."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        shutil.copytree(tiny, tmp_path / name)
    defect = sorted(p for p in (tmp_path / "a" / CATEGORY / "test").iterdir() if p.name != "good")[0]
    latin1 = os.fsdecode(b"\xe9t\xe9")
    (defect / "000.png").rename(defect / f"{latin1}.png")
    masks = tmp_path / "a" / CATEGORY / "ground_truth" / defect.name
    (masks / "000_mask.png").rename(masks / f"{latin1}_mask.png")
    written = []
    for name in ("a", "b"):
        category = tmp_path / name / CATEGORY if name == "a" else CATEGORY  # absolute, then relative
        code, out, err = run(["evaluate", "--data-root", tmp_path / name, "--category", category,
                              "--coreset-ratio", RATIO, "--weights", "random", "--sampler", "random"])
        assert code == 0, err
        output = cli.default_output((tmp_path / name / CATEGORY).resolve())
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["data_root"] == str((tmp_path / name).resolve()) and metrics["category"] == CATEGORY
        written.append(output)
    assert written[0] != written[1] and all(o.is_dir() for o in written)
    assert (written[0] / "heatmaps" / f"{defect.name}_{latin1}.png").is_file()


# -- EXIF orientation, and a property over orientations 1 to 8 -------------------

#: For each EXIF orientation, how to store a picture so that a viewer shows the original.
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def save_as_phone(picture: Image.Image, path: Path, orientation: int) -> Path:
    """Store ``picture`` the way a phone does: sensor pixels plus the EXIF orientation that turns them back."""
    method = STORED[orientation]
    stored = picture if method is None else picture.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif)
    return path


def defect_scene(height=64, width=96, top=8, left=56):
    """A texture with a bright 16 x 16 square, and its mask, both ``(H, W)`` as a viewer shows them."""
    picture = texture(7, (height, width)).copy()
    mask = np.zeros((height, width), np.uint8)
    picture[top:top + 16, left:left + 16] = 255
    mask[top:top + 16, left:left + 16] = 255
    return Image.fromarray(picture), Image.fromarray(mask)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orientation=st.integers(1, 8), suffix=st.sampled_from([".png", ".jpg"]))
def test_exif_orientations_keep_maps_and_masks_on_the_image_as_shown(fitted, tmp_path_factory,
                                                                               orientation, suffix):
    model, _ = fitted
    folder = tmp_path_factory.mktemp("exif")
    picture, mask = defect_scene()
    image_path = save_as_phone(picture, folder / f"photo{suffix}", orientation)
    mask_path = save_as_phone(mask, folder / "photo_mask.png", orientation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shown, shown_mask = load_rgb(image_path), load_mask(mask_path)
    assert shown.size == picture.size and shown_mask.size == mask.size  # (96, 64): as a viewer shows it
    assert np.array_equal(np.asarray(shown_mask) > 0, np.asarray(mask) > 0)
    assert (orientation != 1) == any("EXIF orientation" in str(w.message) for w in caught)
    if suffix == ".png":
        assert np.array_equal(np.asarray(shown), np.asarray(picture))
    # the anomaly map peaks inside the mask, which lies where the viewer shows the square
    batch = image_transform((64, 64), None)(shown.resize((64, 64)))[None]
    amap = model.predict(batch).maps[0]
    truth = np.asarray(shown_mask.resize((64, 64), Image.NEAREST)) > 0
    peak = np.unravel_index(np.argmax(amap), amap.shape)
    assert truth[peak]


# -- every number finite --------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_bank_that_is_not_finite_is_refused_at_load(fitted, tmp_path, value):
    model, images = fitted
    clean = model.memory_bank.copy()
    try:
        model.memory_bank[3, 1] = value
        path = model.save(tmp_path / "model")  # as a fit on a NaN image once did
    finally:
        model._set_bank(clean)
    with pytest.raises(ValueError, match="memory_bank.npy: 1 memory bank entries are not finite"):
        PatchCore.load(path)


def test_a_nan_pixel_is_refused_at_fit_and_predict(fitted):
    model, images = fitted
    spoiled = images.clone()
    spoiled[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"images \[1\] hold NaN or inf values"):
        model.predict(spoiled)
    with pytest.raises(ValueError, match=r"images \[1\] hold NaN or inf values"):
        PatchCore(resize=(64, 64), crop=None).fit(spoiled)


# -- every image file used or named -----------------------------------------------


def test_webp_and_gif_are_read_and_other_files_named(model_dir, tmp_path):
    train = image_folder(tmp_path / "train", 2)
    for i, suffix in enumerate([".webp", ".webp", ".gif"]):
        write_image(train / f"{10 + i}{suffix}", seed=10 + i)
    (train / "notes.txt").write_text("not an image")
    (train / ".DS_Store").write_bytes(b"\0")
    code, out, err = run(["fit", "--train-dir", train, "--model", tmp_path / "model", *SIZE, *FAST])
    assert code == 0, err
    assert "fitted on 5 images" in out
    assert err.count("warning:") == 1 and "1 file skipped" in err and "(extensions: .txt;" in err
    assert ".webp, .gif" in err  # the accepted ones are said too


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_a_folder_of_only_gif_or_webp_is_used(tmp_path, suffix):
    folder = image_folder(tmp_path / "only", 2, suffix)
    images = load_images(list_images(folder), image_transform((64, 64), None))
    assert images.shape == (2, 3, 64, 64)


def test_no_images_names_the_accepted_and_the_found_extensions(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    (train / "a.heic").write_bytes(b"x")
    (train / "b.txt").write_bytes(b"x")
    code, _, err = run(["fit", "--train-dir", train, "--model", tmp_path / "model"])
    line = error_line(err)
    assert code == 1 and ".png, .jpg" in line and ".webp, .gif" in line and "it holds only .heic, .txt files" in line


# -- the model knows what it was made from ------------------------------------


def test_weights_file_hashed_stored_absolute_and_config_covered(model_dir, tmp_path, monkeypatch):
    backbone, _ = load_backbone("mobilenet_v2", "random", seed=3)
    (tmp_path / "fit_here").mkdir()
    torch.save(backbone.state_dict(), tmp_path / "fit_here" / "weights.pt")
    monkeypatch.chdir(tmp_path / "fit_here")
    train = image_folder(tmp_path / "train")
    code, _, err = run(["fit", "--train-dir", train, "--model", tmp_path / "model", "--weights", "weights.pt",
                        *SIZE, *FAST])
    assert code == 0, err
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["config"]["weights"] == str(tmp_path / "fit_here" / "weights.pt")  # stored absolute
    monkeypatch.chdir(tmp_path)  # predict from another folder: case 33
    argv = ["predict", "--model", tmp_path / "model", train / "000.png", "--output", tmp_path / "out"]
    assert run(argv)[0] == 0
    other, _ = load_backbone("mobilenet_v2", "random", seed=4)
    torch.save(other.state_dict(), tmp_path / "fit_here" / "weights.pt")  # replaced: case 16
    code, _, err = run(argv)
    assert code == 1 and "is not the weights file the model" in error_line(err) and "weights.pt" in err


def test_an_edited_config_json_is_refused(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["layers"] = ["features.5", meta["config"]["layers"][1]]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json: was changed since the model was saved"):
        PatchCore.load(tmp_path / "model")


# -- one-sided colour scales -------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--vmin", "1000", "--vmin (1000) must be below the highest map value"),
    ("--vmax", "-5", "--vmax (-5) must be above the lowest map value"),
])
def test_a_one_sided_scale_that_inverts_is_refused(model_dir, tmp_path, option, value, message):
    code, _, err = run(["predict", "--model", model_dir, write_image(tmp_path / "a.png"),
                        "--output", tmp_path / "out", option, value])
    assert code == 2 and message in error_line(err) and not (tmp_path / "out").exists()


def test_a_one_sided_scale_on_its_side_is_kept():
    assert cli._colour_scale((0.5, 2.0), 1.0, None) == (1.0, 2.0)
    assert cli._colour_scale((0.5, 2.0), None, 1.0) == (0.5, 1.0)


# -- sizes checked before any work ----------------------------------------


@pytest.mark.parametrize("resize, message", [
    ("1x1", "--resize 1x1 gives 1x1 inputs, smaller than one 3x3 patch of features.13 (stride 16): "
            "use at least 48 pixels a side"),
    ("7x7", "--resize 7x7 gives 7x7 inputs"),
    ("100000", "--resize 100000 (crop 224) needs about"),
    ("100000x100000", "--resize 100000x100000 (crop none) needs about"),
])
def test_sizes_too_small_or_too_large_are_refused_before_reading(tmp_path, resize, message):
    train = image_folder(tmp_path / "train", 1)
    code, out, err = run(["fit", "--train-dir", train, "--model", tmp_path / "model", "--resize", resize])
    assert code == 2 and message in error_line(err) and "weights loaded" not in out


def test_the_size_limit_follows_the_deepest_layer():
    assert PatchCore(layers=("features.6",)).deepest_stride() == ("features.6", 8)
    PatchCore(layers=("features.6",), resize=(24, 24), crop=None).check_input_size()  # 8 x 3
    with pytest.raises(ConfigError, match="use at least 48 pixels"):
        PatchCore(resize=(47, 64), crop=None).check_input_size()


def test_predicting_on_another_grid_than_the_fit_is_refused(fitted):
    model, _ = fitted
    with pytest.raises(ValueError, match="give a 16x16 patch grid, but the model was fitted on a 8x8 grid"):
        model.predict(torch.zeros(1, 3, 128, 128))


# -- empty masks, near-miss mask names -------------------------------------


def _zero_masks(root: Path, how_many: int | None = None) -> list[Path]:
    masks = sorted((root / CATEGORY / "ground_truth").rglob("*_mask.png"))[:how_many]
    for mask in masks:
        Image.new("L", Image.open(mask).size).save(mask)
    return masks


def test_an_empty_defect_mask_is_one_warning_line(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "data")
    zeroed = _zero_masks(tmp_path / "data", 2)
    test = MVTecDataset(tmp_path / "data", CATEGORY, "test", resize=(256, 256), crop=None)
    with pytest.warns(DataWarning, match=r"^2 defective test images have an all-zero mask") as caught:
        stack(test)
    lines = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(lines) == 1 and str(zeroed[0]) in lines[0]


def test_all_masks_empty_is_refused_before_the_fit(tiny, tmp_path, monkeypatch):
    shutil.copytree(tiny, tmp_path / "data")
    _zero_masks(tmp_path / "data")
    monkeypatch.setattr(PatchCore, "fit", lambda *_: pytest.fail("no fit should start"))
    with pytest.raises(DataError, match="every defect mask is empty .* pixel AUROC and AUPRO need defect pixels"):
        evaluate_category(tmp_path / "data", CATEGORY, PatchCoreConfig(weights="random"))


@pytest.mark.parametrize("near", ["000.png", "000_mask.PNG", "000_mask.jpg"])
def test_a_near_miss_mask_name_is_named(tiny, tmp_path, near):
    shutil.copytree(tiny, tmp_path / "data")
    mask = sorted((tmp_path / "data" / CATEGORY / "ground_truth").rglob("000_mask.png"))[0]
    Image.open(mask).save(mask.with_name(near), format="PNG" if near.lower().endswith("png") else "JPEG")
    mask.unlink()
    with pytest.raises(DataError, match=rf"missing ground-truth mask: .*000_mask.png .*\({near} is there: "
                                        r"rename it to 000_mask.png\)"):
        MVTecDataset(tmp_path / "data", CATEGORY, "test")


# -- names -------------------------------------------------------------------


def test_a_long_file_name_gives_a_short_output_name(model_dir, tmp_path):
    long = write_image(tmp_path / ("é" * 120 + ".png"))  # 240 bytes
    code, _, err = run(["predict", "--model", model_dir, long, "--output", tmp_path / "out"])
    assert code == 0, err
    written = [p for p in (tmp_path / "out").iterdir() if p.suffix == ".png"]
    assert len(written) == 1 and len(os.fsencode(written[0].stem)) <= cli.MAX_STEM_BYTES


def test_a_file_named_like_an_option_gets_a_hint(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "-x.png")
    code, _, err = run(["predict", "--model", model_dir, "-x.png", "--output", "out"])
    assert code == 2 and "-x.png is a file, not an option: write ./-x.png, or put -- before" in error_line(err)
    assert run(["predict", "--model", model_dir, "--output", "out", "--", "-x.png"])[0] == 0


NAMES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=80),
    st.binary(min_size=1, max_size=60).map(os.fsdecode),  # bytes that need not be UTF-8 (case 31)
    st.text("ab-é", min_size=1, max_size=5).map(lambda text: "-" + text),
    st.integers(100, 240).map(lambda n: "x" * n),
).filter(lambda name: "/" not in name and "\0" not in name and not name.startswith(".")
         and len(os.fsencode(name + ".png")) <= 255)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_property_any_file_name_is_scored_and_written(model_dir, tmp_path_factory, name):
    place = tmp_path_factory.mktemp("names")
    (place / "in").mkdir()
    image = write_image(place / "in" / f"{name}.png")
    code, _, err = run(["predict", "--model", model_dir, place / "in", "--output", place / "out"])
    assert code == 0, err
    with open(place / "out" / "scores.csv", newline="", encoding="utf-8", errors="surrogateescape") as stream:
        rows = list(csv.reader(stream))
    assert rows[1][0] == str(image)  # the row names the very file, byte for byte
    [written] = [p for p in (place / "out").iterdir() if p.suffix == ".png"]
    assert len(os.fsencode(written.stem)) <= cli.MAX_STEM_BYTES


# -- decompression bombs ----------------------------------------------------------------


def test_an_image_over_pillows_limit_is_one_line_naming_it(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64 x 64 = 4096: over the limit, under twice it
    with pytest.warns(DataWarning) as caught:
        load_rgb(path)
    assert len(caught) == 1 and str(caught[0].message).startswith("1 image larger than Pillow's")
    assert f"e.g. {path}, 64 x 64" in str(caught[0].message)


# -- loading while another process saves -----------------------------------------------


def test_loading_while_another_process_saves_always_succeeds(fitted, tmp_path):
    model, _ = fitted
    path = model.save(tmp_path / "model")
    code = (
        "import sys, numpy as np\n"
        "from pcnotes.model import PatchCore\n"
        f"model = PatchCore.load({str(path)!r})\n"
        "print('ready', flush=True)\n"
        "bank = model.memory_bank.copy()\n"
        "for i in range(40):\n"
        "    model._set_bank(bank + i % 2)  # two contents in turn: every save replaces the folder\n"
        "    model.save(sys.argv[1])\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2])})
    assert writer.stdout.readline().strip() == "ready"
    loads = 0
    while writer.poll() is None or loads == 0:
        bank = PatchCore.load(path).memory_bank
        assert np.array_equal(bank, model.memory_bank) or np.array_equal(bank, model.memory_bank + 1)
        loads += 1
    assert writer.wait() == 0 and loads >= 1


# -- the API names wrong inputs -------------------------------------------------------


@pytest.mark.parametrize("images, error, message", [
    (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), TypeError, "must be a float tensor .* got torch.uint8"),
    (torch.zeros(0, 3, 64, 64), ValueError, r"no images given: the tensor's shape is \(0, 3, 64, 64\)"),
    (torch.zeros(2, 1, 64, 64), ValueError, r"must have the shape \(B, 3, H, W\), got \(2, 1, 64, 64\)"),
    (np.zeros((2, 3, 64, 64), np.float32), TypeError, "must be a torch.Tensor"),
])
def test_wrong_inputs_are_named_in_one_line(fitted, images, error, message):
    model, _ = fitted
    for call in (model.predict, PatchCore(resize=(64, 64), crop=None).fit):
        with pytest.raises(error, match=message):
            call(images)
