"""The CLI's patch-feature and image-size options: parsed, saved with the model, used by predict."""

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from pcnotes.app import cli
from pcnotes.data.mvtec import image_transform, load_images
from pcnotes.config import PATCH_FEATURES
from pcnotes.model import PatchCore


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def config_of(argv):
    config, _ = cli._config(cli.build_parser().parse_args(["fit", "--train-dir", "x", "--model", "y", *argv]))
    return config


def test_the_cli_lists_the_library_s_patch_features():
    assert cli.PATCH_FEATURES == PATCH_FEATURES


@pytest.mark.parametrize("argv, feature, resize, crop", [
    ([], "pooled_concat", 256, 224),  # mobilenet_v2's default feature, the reference's sizes
    (["--backbone", "wide_resnet50_2", "--weights", "random"], "mean_mapped", 256, 224),
    (["--patch-feature", "mean_mapped"], "mean_mapped", 256, 224),
    (["--resize", "366", "--crop", "320"], "pooled_concat", 366, 320),
    (["--resize", "256x608"], "pooled_concat", (256, 608), None),  # HxW alone: the whole image
    (["--resize", "256X608", "--crop", "224x576"], "pooled_concat", (256, 608), (224, 576)),
    (["--resize", "256x256", "--crop", "none"], "pooled_concat", (256, 256), None),
])
def test_options_become_the_config(argv, feature, resize, crop):
    config = config_of(argv)
    assert (config.patch_feature, config.resize, config.crop) == (feature, resize, crop)


@pytest.mark.parametrize("argv, message", [
    (["--resize", "0"], "--resize: expected N or HxW"),
    (["--resize", "256x"], "--resize: expected N or HxW"),
    (["--crop", "big"], "--crop: expected N or HxW"),
    (["--patch-feature", "mean"], "--patch-feature: invalid choice"),
])
def test_bad_sizes_and_features_are_usage_errors(tmp_path, argv, message):
    code, _, err = run(["fit", "--train-dir", tmp_path, "--model", tmp_path / "m", *argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_crop_that_does_not_fit_fails_before_any_work(tmp_path):
    code, out, err = run(["fit", "--train-dir", tmp_path, "--model", tmp_path / "m", "--crop", "300"])
    assert code == 2 and out == ""  # a bad option
    assert err.strip() == ("error: --crop 300 does not fit inside resize=256 (torchvision would pad the crop "
                           "with zeros): use a smaller crop or a larger resize")
    assert not (tmp_path / "m").exists()


def test_fit_saves_the_options_and_predict_uses_them_on_gray_wide_images(tmp_path):
    rng = np.random.default_rng(0)
    train, new = tmp_path / "train", tmp_path / "new"
    train.mkdir(), new.mkdir()
    for folder, count in ((train, 2), (new, 1)):
        for i in range(count):
            gray = rng.integers(90, 160, (100, 240), dtype=np.uint8)  # 240 x 100 (W x H), 8-bit gray
            Image.fromarray(gray, mode="L").save(folder / f"{i:03d}.png")
    model_dir = tmp_path / "model"
    code, out, err = run(["fit", "--train-dir", train, "--model", model_dir, "--patch-feature", "mean_mapped",
                          "--resize", "96x224", "--coreset-ratio", "0.5"])
    assert code == 0, err
    assert "memory bank 336 x 1024" in out  # 2 images x (12 x 28) patches, half of them kept
    saved = json.loads((model_dir / "config.json").read_text())
    assert (saved["config"]["patch_feature"], saved["config"]["resize"], saved["config"]["crop"]) == (
        "mean_mapped", [96, 224], None)

    output = tmp_path / "predicted"
    code, _, err = run(["predict", "--model", model_dir, new, "--output", output])
    assert code == 0, err
    model = PatchCore.load(model_dir)
    images = load_images([new / "000.png"], image_transform((96, 224), None))
    assert images.shape == (1, 3, 96, 224)
    with open(output / "scores.csv", newline="") as stream:
        assert float(next(csv.DictReader(stream))["score"]) == float(model.predict(images).scores[0])
    with Image.open(output / "000.png") as png:
        assert png.size[0] > png.size[1]
