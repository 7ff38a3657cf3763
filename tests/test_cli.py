"""The command line (``python -m pcnotes``): outputs, numbers, and clean failures.

Everything runs in-process through ``cli.main([...])`` on a tiny generated
data set (6 training images, 11 test images); two calls go through a real
``python -m pcnotes`` subprocess to check the exit status and stderr.
"""

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnotes import cli
from pcnotes.data import MVTecDataset, image_transform, load_images
from pcnotes.model import PatchCore
from pcnotes.synth import CATEGORIES, generate_dataset

CATEGORY = CATEGORIES[0]
RATIO = 0.05
N_TRAIN = 6
METRIC_KEYS = {"image_auroc", "pixel_auroc", "aupro", "n_train", "n_test", "memory_bank_size",
               "fit_seconds", "predict_seconds", "backbone", "weights"}


def run(argv):
    """``cli.main(argv)`` with stdout and stderr captured: ``(code, out, err)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def error_line(err: str) -> str:
    """The failure report: exactly one line, starting with 'error: '."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny"
    return generate_dataset(root, categories=[CATEGORY], n_train=N_TRAIN, n_test_good=3,
                            n_test_per_defect=2, seed=0)


@pytest.fixture(scope="module")
def evaluated(tiny, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / CATEGORY
    code, out, err = run(["evaluate", "--data-root", tiny, "--category", CATEGORY,
                          "--coreset-ratio", RATIO, "--output", output])
    return code, out, output


@pytest.fixture
def broken_copy(tiny, tmp_path):
    """A writable copy of the tiny data set to damage."""
    root = tmp_path / "copy"
    shutil.copytree(tiny, root)
    return root


# -- evaluate ---------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_writes_flat_metrics_in_range(evaluated):
    code, out, output = evaluated
    assert code == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert not any(isinstance(v, (dict, list)) for v in metrics.values())  # flat
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n_train"] == N_TRAIN
    assert metrics["n_test"] == 3 + 2 * 4  # 3 good + 2 per defect kind
    # A greedy coreset keeps int(N * ratio) of the N = 6 * 28 * 28 patches.
    assert metrics["memory_bank_size"] == int(N_TRAIN * 784 * RATIO)
    assert metrics["fit_seconds"] > 0 and metrics["predict_seconds"] > 0
    assert metrics["backbone"] == "mobilenet_v2"
    assert "imagenet" in metrics["weights"]
    assert metrics["category"] == CATEGORY and metrics["coreset_ratio"] == RATIO
    assert metrics["sampler"] == "approximate_greedy" and metrics["seed"] == 0


@pytest.mark.slow
def test_evaluate_prints_the_weights_and_a_table(evaluated):
    _, out, output = evaluated
    assert "weights loaded: imagenet (" in out
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "memory_bank_size"):
        row = next(line for line in out.splitlines() if line.split()[:1] == [key])
        assert float(row.split()[1]) == pytest.approx(metrics[key], abs=1e-4)


@pytest.mark.slow
def test_evaluate_writes_one_three_panel_png_per_test_image(evaluated, tiny):
    _, _, output = evaluated
    test = MVTecDataset(tiny, CATEGORY, "test")
    expected = {f"{d}_{Path(p).stem}.png" for d, p in zip(test.defects, test.paths)}
    assert len(expected) == len(test) == 11
    assert "good_000.png" in expected
    assert {p.name for p in (output / "heatmaps").iterdir()} == expected
    for name in ("good_000.png", sorted(expected)[0]):
        with Image.open(output / "heatmaps" / name) as png:
            png.load()
            width, height = png.size
        assert width > 2.5 * height  # three square panels side by side
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp folders


# -- fit and predict ----------------------------------------------------------------------


@pytest.mark.slow
def test_fit_then_predict_round_trip(tiny, tmp_path):
    model_dir = tmp_path / "model"
    code, out, _ = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good",
                        "--model", model_dir, "--coreset-ratio", RATIO])
    assert code == 0
    assert "weights loaded: imagenet" in out and str(model_dir) in out
    assert {p.name for p in model_dir.iterdir()} == {"config.json", "memory_bank.npy"}

    good_dir = tiny / CATEGORY / "test" / "good"
    defect = sorted((tiny / CATEGORY / "test").glob("[!g]*/*.png"))[0]
    output = tmp_path / "predicted"
    code, out, _ = run(["predict", "--model", model_dir, defect, good_dir, "--output", output])
    assert code == 0

    paths = [defect] + sorted(good_dir.glob("*.png"))  # a folder expands to its sorted images
    with open(output / "scores.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["path"] for row in rows] == [str(p) for p in paths]

    model = PatchCore.load(model_dir)
    config = model.config
    images = load_images(paths, image_transform(config.resize, config.crop, config.mean, config.std))
    expected = model.predict(images).scores
    assert [float(row["score"]) for row in rows] == [float(s) for s in expected]  # bit-identical
    assert expected[0] > expected[1:].max()  # the defective image scores highest

    # good/000.png and the defect's 000.png share a stem: the second gets _2.
    names = {p.name for p in output.iterdir()}
    assert names == {"scores.csv", "000.png", "000_2.png", "001.png", "002.png"}
    with Image.open(output / "000.png") as png:
        width, height = png.size
    assert 1.5 * height < width < 2.5 * height  # image | overlay, no ground truth


# -- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", ["0", "1.5", "nan", "ten"])
def test_a_bad_ratio_is_a_usage_error(tiny, tmp_path, ratio):
    output = tmp_path / "out"
    code, out, err = run(["evaluate", "--data-root", tiny, "--category", CATEGORY,
                          "--coreset-ratio", ratio, "--output", output])
    assert code == 2
    line = error_line(err)
    assert "--coreset-ratio" in line and "(0, 1]" in line
    assert not output.exists()


def test_help_describes_commands_defaults_and_outputs():
    code, out, _ = run(["--help"])
    assert code == 0
    for command in ("evaluate", "fit", "predict", "demo"):
        assert command in out
    code, out, _ = run(["evaluate", "--help"])
    assert code == 0
    out = " ".join(out.split())  # undo argparse's line wrapping
    for text in ("metrics.json", "heatmaps", "default: 0.1", "default: approximate_greedy",
                 "default: mobilenet_v2", "runs/CATEGORY"):
        assert text in out
    code, out, _ = run(["predict", "--help"])
    assert "scores.csv" in out
    code, out, _ = run(["demo", "--help"])
    assert "overview.png" in out and "runs/demo" in out


def test_choices_match_the_library():
    from pcnotes.backbone import DEFAULT_LAYERS
    from pcnotes.coreset import SAMPLERS

    assert set(cli.SAMPLERS) == set(SAMPLERS)
    assert set(cli.BACKBONES) == set(DEFAULT_LAYERS)


# -- data and model errors: one line, exit 1, nothing written -------------------------------


def evaluate_fails(root, output, *expected_in_message):
    code, _, err = run(["evaluate", "--data-root", root, "--category", CATEGORY,
                        "--coreset-ratio", RATIO, "--output", output])
    assert code == 1
    line = error_line(err)
    for text in expected_in_message:
        assert str(text) in line
    return line


def test_missing_data_root(tmp_path):
    output = tmp_path / "runs" / "out"
    evaluate_fails(tmp_path / "nowhere", output, tmp_path / "nowhere", "does not exist")
    assert not (tmp_path / "runs").exists()  # not even the parent folder it would have made


def test_empty_train_good(broken_copy, tmp_path):
    train = broken_copy / CATEGORY / "train" / "good"
    for image in train.iterdir():
        image.unlink()
    output = tmp_path / "out"
    evaluate_fails(broken_copy, output, train, "no training images")
    assert not output.exists()


def test_missing_mask_leaves_an_existing_output_untouched(broken_copy, tmp_path):
    mask = sorted((broken_copy / CATEGORY / "ground_truth").glob("*/*_mask.png"))[0]
    mask.unlink()
    output = tmp_path / "out"
    output.mkdir()
    (output / "metrics.json").write_text("earlier run")
    evaluate_fails(broken_copy, output, mask, "missing ground-truth mask")
    assert [p.name for p in output.iterdir()] == ["metrics.json"]
    assert (output / "metrics.json").read_text() == "earlier run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "out"]  # no temp folder


@pytest.mark.slow
def test_corrupt_test_image(broken_copy, tmp_path):
    corrupt = broken_copy / CATEGORY / "test" / "good" / "001.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    output = tmp_path / "out"
    evaluate_fails(broken_copy, output, corrupt, "cannot read image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_refuses_to_replace_a_folder_it_did_not_write(tiny, tmp_path):
    output = tmp_path / "precious"
    output.mkdir()
    (output / "thesis.tex").write_text("years of work")
    evaluate_fails(tiny, output, output, "refusing to replace")
    assert (output / "thesis.tex").read_text() == "years of work"


def test_refuses_to_replace_the_current_folder(tiny, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for output in (".", ".."):
        evaluate_fails(tiny, output, "is the current folder or one of its parents")
    assert here.is_dir() and not any(here.iterdir())


def test_fit_errors_name_the_folder_or_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = tmp_path / "model"
    for train_dir, message in ((tmp_path / "missing", "does not exist"), (empty, "no training images")):
        code, _, err = run(["fit", "--train-dir", train_dir, "--model", model])
        assert code == 1
        line = error_line(err)
        assert str(train_dir) in line and message in line
    corrupt = empty / "000.png"
    corrupt.write_bytes(b"not a png")
    code, _, err = run(["fit", "--train-dir", empty, "--model", model])
    assert code == 1 and str(corrupt) in error_line(err)
    assert not model.exists()


def test_predict_errors_name_the_model_or_image(tiny, tmp_path):
    image = tiny / CATEGORY / "test" / "good" / "000.png"
    output = tmp_path / "out"
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    code, _, err = run(["predict", "--model", not_a_model, image, "--output", output])
    assert code == 1
    line = error_line(err)
    assert str(not_a_model) in line and "not a saved PatchCore model" in line

    (not_a_model / "config.json").write_text("{ broken")
    (not_a_model / "memory_bank.npy").write_bytes(b"")
    code, _, err = run(["predict", "--model", not_a_model, image, "--output", output])
    assert code == 1 and "not valid JSON" in error_line(err)

    code, _, err = run(["predict", "--model", not_a_model, image, "--output", output,
                        "--vmin", "2", "--vmax", "1"])
    assert code == 1 and "--vmin (2.0) must be below --vmax (1.0)" in error_line(err)

    missing = tmp_path / "missing.png"
    code, _, err = run(["predict", "--model", not_a_model, missing, "--output", output])
    assert code == 1 and str(missing) in error_line(err)
    assert not output.exists()


def test_staged_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with cli.staged_output(target) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("failed half-way")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with cli.staged_output(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# -- demo ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_writes_the_overview_and_prints_its_path_last(tiny, tmp_path):
    output = tmp_path / "demo"
    code, out, _ = run(["demo", "--data-root", tiny, "--output", output, "--coreset-ratio", RATIO])
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1] == str(output / "overview.png")
    with Image.open(output / "overview.png") as png:
        png.load()
        assert png.format == "PNG"
    metrics = json.loads((output / CATEGORY / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert len(list((output / CATEGORY / "heatmaps").iterdir())) == metrics["n_test"]
    with open(output / "metrics.csv", newline="") as stream:
        assert [row["category"] for row in csv.DictReader(stream)] == [CATEGORY]
    verdict = next(line for line in lines if line.split()[:1] == [CATEGORY] and len(line.split()) <= 3)
    passed = metrics["image_auroc"] >= 0.95 and metrics["pixel_auroc"] >= 0.95
    assert verdict.split()[1:] == (["PASS"] if passed else ["BELOW", "TARGET"])


# -- the real process -------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_dash_m_pcnotes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pcnotes", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "evaluate" in done.stdout

    missing = tmp_path / "no_such_root"
    done = subprocess.run([sys.executable, "-m", "pcnotes", "evaluate", "--data-root", str(missing),
                           "--category", CATEGORY, "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and str(missing) in done.stderr
    assert not (tmp_path / "out").exists()
