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

from pcnotes.app import cli
from pcnotes.util import folders
from pcnotes.util.folders import MARKER
from pcnotes.data.mvtec import MVTecDataset, image_transform, load_images
from pcnotes.model import PatchCore
from pcnotes.data.synth import CATEGORIES, generate_dataset

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
def test_evaluate_writes_one_overlay_per_test_image_and_panels_of_the_top_ten(evaluated, tiny):
    _, _, output = evaluated
    test = MVTecDataset(tiny, CATEGORY, "test")
    expected = {f"{d}_{Path(p).stem}.png" for d, p in zip(test.defects, test.paths)}
    assert len(expected) == len(test) == 11
    assert "good_000.png" in expected
    assert {p.name for p in (output / "heatmaps").iterdir()} == expected
    for name in ("good_000.png", sorted(expected)[0]):
        with Image.open(output / "heatmaps" / name) as png:
            assert png.size == (224, 224)  # the image with its map blended in, as the model saw it
    top = sorted((output / "top").iterdir())
    assert len(top) == 10 and {p.name[3:] for p in top} < expected  # 01_NAME.png ... 10_NAME.png
    with Image.open(top[0]) as png:
        width, height = png.size
    assert top[0].name.startswith("01_") and width > 2.5 * height  # three square panels side by side
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no temp folders


# -- fit and predict ----------------------------------------------------------------------


@pytest.mark.slow
def test_fit_then_predict_round_trip(tiny, tmp_path):
    model_dir = tmp_path / "model"
    code, out, _ = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good",
                        "--model", model_dir, "--coreset-ratio", RATIO])
    assert code == 0
    assert "weights loaded: imagenet" in out and str(model_dir) in out
    assert {p.name for p in model_dir.iterdir()} == {MARKER, "config.json", "memory_bank.npy"}

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
    assert names == {MARKER, "scores.csv", "000.png", "000_2.png", "001.png", "002.png"}
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
                 "default: mobilenet_v2", "runs/CATEGORY-HASH"):
        assert text in out
    code, out, _ = run(["predict", "--help"])
    assert "scores.csv" in out
    code, out, _ = run(["demo", "--help"])
    assert "overview.png" in out and "runs/demo" in out


def test_choices_match_the_library():
    from pcnotes.stages.s1_features import DEFAULT_LAYERS
    from pcnotes.stages.s5_coreset import SAMPLERS

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
    folders.write_marker(output, "evaluate")  # an earlier evaluate output
    evaluate_fails(broken_copy, output, mask, "missing ground-truth mask")
    assert sorted(p.name for p in output.iterdir()) == [MARKER, "metrics.json"]
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
    for output, message in ((".", "is the current folder"), ("..", "contains the current folder")):
        evaluate_fails(tiny, output, message, "refusing to replace it")
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
    assert code == 2 and "--vmin (2.0) must be below --vmax (1.0)" in error_line(err)

    missing = tmp_path / "missing.png"
    code, _, err = run(["predict", "--model", not_a_model, missing, "--output", output])
    assert code == 1 and str(missing) in error_line(err)
    assert not output.exists()


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


# -- issue 10: never destroy a user's files ------------------------------------------------------
# Each case (numbered as in the issue) keeps a sandbox of user files that must survive byte for byte.


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (hash-free: the bytes themselves)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """A folder of someone's files, including ones with pcnotes' generic output names."""
    user = tmp_path / "V"
    (user / "thesis").mkdir(parents=True)
    (user / "thesis" / "chapter1.tex").write_text("years of work")
    (user / "photo.png").write_bytes(b"\x89PNG not really")
    for generic in ("config.json", "metrics.json", "scores.csv", "memory_bank.npy", "overview.png"):
        (user / generic).write_text("mine, not pcnotes'")
    return user


@pytest.fixture(scope="module")
def model_dir(tiny, tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("models") / "model"
    code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", model,
                        "--coreset-ratio", RATIO])
    assert code == 0, err
    return model


@pytest.fixture
def no_fit(monkeypatch):
    """Makes any fit fail loudly: for problems that must be found before the fit."""
    def fit(self, images):
        raise AssertionError("the fit must not start")

    monkeypatch.setattr(PatchCore, "fit", fit)


def test_case1_dot_dot_does_not_get_past_the_guard(tiny, sandbox, model_dir, no_fit):
    before = snapshot(sandbox.parent)
    image = tiny / CATEGORY / "test" / "good" / "000.png"
    sneaky = sandbox / "nonexistent" / ".."
    for argv in (["predict", "--model", model_dir, image, "--output", sneaky],
                 ["evaluate", "--data-root", tiny, "--category", CATEGORY, "--output", sneaky],
                 ["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", sneaky]):
        code, _, err = run(argv)
        assert code == 1
        line = error_line(err)
        assert f"(that is {sandbox})" in line and "refusing to replace it" in line
    assert snapshot(sandbox.parent) == before


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict"])
def test_case2_a_generic_file_name_proves_nothing(tiny, sandbox, model_dir, no_fit, command):
    before = snapshot(sandbox.parent)
    argv = {"fit": ["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", sandbox],
            "evaluate": ["evaluate", "--data-root", tiny, "--category", CATEGORY, "--output", sandbox],
            "predict": ["predict", "--model", model_dir, tiny / CATEGORY / "test" / "good",
                        "--output", sandbox]}[command]
    code, _, err = run(argv)
    assert code == 1 and f"{MARKER} marker" in error_line(err)
    assert snapshot(sandbox.parent) == before


def test_case2_an_absolute_category_keeps_its_data(tiny, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    before = snapshot(data)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["evaluate", "--data-root", data, "--category", data / CATEGORY,
                          "--coreset-ratio", RATIO, "--weights", "random", "--sampler", "random"])
    assert code == 0, err
    output = cli.default_output((data / CATEGORY).resolve())
    assert output.parent == Path("runs") and output.name.startswith(f"{CATEGORY}-")  # runs/NAME-HASH
    metrics = json.loads((tmp_path / output / "metrics.json").read_text())  # not the category itself
    assert metrics["data_root"] == str(data.resolve()) and metrics["category"] == CATEGORY
    assert snapshot(data) == before
    # and an output inside the data, or one holding it, is refused
    for output in (data / CATEGORY / "runs", data, data / CATEGORY):
        code, _, err = run(["evaluate", "--data-root", data, "--category", CATEGORY, "--output", output])
        assert code == 1 and "input" in error_line(err)
    assert snapshot(data) == before


def test_replacing_an_earlier_output_only_when_nothing_was_added(evaluated, tiny, tmp_path):
    _, _, output = evaluated
    copy = tmp_path / "out"
    shutil.copytree(output, copy)
    (copy / "heatmaps" / "my_notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = run(["evaluate", "--data-root", tiny, "--category", CATEGORY, "--output", copy])
    assert code == 1 and "heatmaps/my_notes.txt" in error_line(err)
    assert snapshot(tmp_path) == before
    # an output of another command is not replaced either
    code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", output])
    assert code == 1 and "is a pcnotes 'evaluate' output, not a 'fit' one" in error_line(err)


def _wait_for(condition, what, process, timeout=120.0):
    """Poll ``condition()`` until it holds: no fixed sleep, a deadline only for a hung run."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def _earlier_output(tmp_path: Path) -> Path:
    output = tmp_path / "out"
    output.mkdir()
    (output / "metrics.json").write_text("earlier run")
    folders.write_marker(output, "evaluate")
    return output


def _start_evaluate(tiny, output, signal_dispositions, dispositions):
    """A real ``python -m pcnotes evaluate``, started with these signal dispositions, once it is staging."""
    import os

    with signal_dispositions(dispositions):  # the child inherits them; ours come back right after
        process = subprocess.Popen(
            [sys.executable, "-m", "pcnotes", "evaluate", "--data-root", str(tiny), "--category", CATEGORY,
             "--output", str(output), "--weights", "random"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2])})
    _wait_for(lambda: any(".pcnotes-tmp-" in p.name for p in output.parent.iterdir()), "staging folder", process)
    return process


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_case4_a_signal_leaves_no_staging_folder_and_the_old_output(tiny, tmp_path, signum, signal_dispositions):
    import signal

    output = _earlier_output(tmp_path)
    before = snapshot(tmp_path)
    # both at their default, as in a terminal, whatever this test run inherited (nohup ignores SIGHUP)
    process = _start_evaluate(tiny, output, signal_dispositions,
                              {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL})
    process.send_signal(getattr(signal, signum))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + getattr(signal, signum), err
    assert error_line(err) == f"error: interrupted by {signum} (nothing half-written was left)"
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_under_nohup_a_sighup_interrupts_nothing(tiny, tmp_path, signal_dispositions):
    import signal

    output = _earlier_output(tmp_path)
    # as nohup starts a command: SIGHUP ignored
    process = _start_evaluate(tiny, output, signal_dispositions,
                              {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_IGN})
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "interrupted" not in err
    metrics = json.loads((output / "metrics.json").read_text())  # the new output replaced the earlier one
    assert METRIC_KEYS <= set(metrics)
    assert len(list((output / "heatmaps").iterdir())) == metrics["n_test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _dead_run_staging(target: Path) -> Path:
    """A staging folder of a run killed with SIGKILL (no clean-up possible)."""
    code = ("import sys; from pcnotes.util.folders import replace_folder\n"
            f"with replace_folder({str(target)!r}, 'evaluate') as staging:\n"
            "    (staging / 'partial.png').write_bytes(b'half')\n"
            "    print(staging, flush=True); sys.stdin.read()\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={"PYTHONPATH": str(Path(cli.__file__).parents[2])})
    staging = Path(process.stdout.readline().strip())
    process.kill()
    process.wait(timeout=60)
    assert staging.is_dir() and (staging / "partial.png").is_file()
    return staging


def test_case5_heat_map_names_never_collide_and_the_count_is_true(broken_copy, tmp_path):
    import os

    hole = broken_copy / CATEGORY / "test" / "hole"
    with Image.open(hole / "000.png") as png:
        png.convert("RGB").save(hole / "000.jpg", quality=95)  # uses ground_truth/hole/000_mask.png too
    output = tmp_path / "runs" / "out"
    umask = os.umask(0o027)  # case 8: folders follow the umask
    try:
        stale = _dead_run_staging(output)  # case 4: removed by the next run
        code, out, err = run(["evaluate", "--data-root", broken_copy, "--category", CATEGORY, "--output",
                              output, "--coreset-ratio", RATIO, "--weights", "random", "--sampler", "random"])
    finally:
        os.umask(umask)
    assert code == 0, err
    names = sorted(p.name for p in (output / "heatmaps").iterdir())
    assert "hole_000.png" in names and "hole_000_2.png" in names
    metrics = json.loads((output / "metrics.json").read_text())
    assert len(names) == metrics["n_test"] == 12
    assert f"and 12 heat maps in {output / 'heatmaps'}" in out
    assert not stale.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == ["out"]
    for folder in (output.parent, output, output / "heatmaps"):
        assert folder.stat().st_mode & 0o777 == 0o750


def test_case5_predict_names_are_unique_against_every_name_given(tiny, model_dir, tmp_path):
    source = tiny / CATEGORY / "test" / "good" / "000.png"
    images = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "c" / "x_2.png",
              tmp_path / "d" / "X.png"]
    for image in images:
        image.parent.mkdir()
        shutil.copy(source, image)
    output = tmp_path / "out"
    code, out, err = run(["predict", "--model", model_dir, *images, "--output", output])
    assert code == 0, err
    assert sorted(p.name for p in output.glob("*.png")) == ["X_3.png", "x.png", "x_2.png", "x_2_2.png"]
    assert f"and 4 heat maps in {output}" in out
    assert cli.unique_names(["x", "x", "x_2", "X"]) == ["x", "x_2", "x_2_2", "X_3"]


# -- issue 10: other bugs ----------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, message", [
    ("--reweight", "4", "--reweight (4) needs a memory bank of at least 5 entries, not the 4 that 6 "
                        "training images give at a coreset ratio of 0.001: lower it or raise the coreset ratio"),
    ("--num-neighbors", "5", "--num-neighbors (5) is larger than the memory bank of 4 entries that 6 "
                             "training images give at a coreset ratio of 0.001: lower it or raise the "
                             "coreset ratio"),
])
def test_case6_reweight_and_k_are_checked_before_the_fit(tiny, tmp_path, no_fit, option, value, message):
    # 6 images x 28 x 28 patches x 0.001 -> a bank of 4
    model = tmp_path / "model"
    code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", model,
                        "--coreset-ratio", "0.001", option, value])
    assert code == 2 and error_line(err) == f"error: {message}"
    code, _, err = run(["evaluate", "--data-root", tiny, "--category", CATEGORY, "--output", tmp_path / "o",
                        "--coreset-ratio", "0.001", option, value])
    assert code == 2 and error_line(err) == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def model_copy(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


@pytest.mark.parametrize("config_text, message", [
    ("[]", "holds a JSON list"),
    ("null", "holds a JSON NoneType"),
    ('{"format_version": 2}', "lacks config, weights, grid"),
])
def test_case7_a_bad_config_json_is_one_line(tiny, model_copy, tmp_path, config_text, message):
    (model_copy / "config.json").write_text(config_text)
    code, _, err = run(["predict", "--model", model_copy, tiny / CATEGORY / "test" / "good" / "000.png",
                        "--output", tmp_path / "out"])
    assert code == 1 and message in error_line(err) and str(model_copy / "config.json") in err


@pytest.mark.parametrize("bank", ["zero bytes", "1-D", "huge header"])
def test_case7_a_bad_memory_bank_is_one_line(tiny, model_copy, tmp_path, bank):
    path = model_copy / "memory_bank.npy"
    if bank == "zero bytes":
        path.write_bytes(b"")
    elif bank == "1-D":
        np.save(path, np.arange(3, dtype=np.float32))
    else:  # only the header of a 4 TB array, as a damaged file might claim
        import io
        stream = io.BytesIO()
        np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**9, 1024)})
        path.write_bytes(stream.getvalue() + b"\0" * 16)
    code, _, err = run(["predict", "--model", model_copy, tiny / CATEGORY / "test" / "good" / "000.png",
                        "--output", tmp_path / "out"])
    assert code == 1 and str(path) in error_line(err) and "not the memory bank of this model" in err


class _Payload:
    """Pickling this would run ``open(path, 'w')`` on load: the payload that must never run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_case7_weights_that_are_not_a_state_dict_are_one_line(tiny, tmp_path):
    import pickle

    import torch

    ran = tmp_path / "payload_ran"
    files = {"pickle.pt": lambda p: p.write_bytes(pickle.dumps(_Payload(str(ran)))),
             "tensor.pt": lambda p: torch.save(torch.zeros(3), p),
             "list.pt": lambda p: torch.save([1, 2], p),
             "text.pt": lambda p: p.write_text("not torch at all")}
    for name, write in files.items():
        weights = tmp_path / name
        write(weights)
        code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model",
                            tmp_path / "model", "--weights", weights])
        line = error_line(err)
        assert code == 1 and str(weights) in line and "torch.save(model.state_dict(), path)" in line
    assert not ran.exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "error: --seed must be an integer from 0 to 4294967295, got -1"),
    (["--seed", str(2**70)], "error: --seed must be an integer from 0 to 4294967295, got 1180591620717411303424"),
    (["--layers", ""], "error: --layers must be layer names such as ('features.6', 'features.13'), got ''"),
    (["--layers", "features.6", "features.6"], "error: --layers must each be named once, got features.6 twice"),
    (["--layers", "features.99"], "error: --layers must be feature layers of mobilenet_v2 (features.0 to features.18), got features.99"),
    (["--layers", "features.6", "classifier.1"], "error: --layers must be feature layers of mobilenet_v2 (features.0 to features.18), got classifier.1"),
])
def test_case9_bad_options_are_usage_errors(tiny, tmp_path, no_fit, argv, message):
    code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model",
                        tmp_path / "model", *argv])
    assert code == 2 and error_line(err).startswith(message)
    assert not (tmp_path / "model").exists()


def test_case9_a_data_root_that_is_a_file(tiny, tmp_path):
    not_a_folder = tmp_path / "data.zip"
    not_a_folder.write_bytes(b"PK")
    for command in (["evaluate", "--category", CATEGORY, "--output", tmp_path / "o"], ["demo", "--output", tmp_path / "d"]):
        code, _, err = run([*command, "--data-root", not_a_folder])
        assert code == 1 and error_line(err) == (
            f"error: {not_a_folder}: is a file; the data root must be the folder that holds the category folders")
    code, _, err = run(["fit", "--train-dir", not_a_folder, "--model", tmp_path / "m"])
    assert code == 1 and error_line(err) == f"error: {not_a_folder}: is a file, not a folder"


def test_case9_a_full_disk_is_one_line_without_byte_counts(tiny, model_copy, monkeypatch):
    import errno

    before = snapshot(model_copy)
    real_write = Path.write_bytes

    def full_disk(path, data):  # what the OS does: part of the file, then ENOSPC
        if path.name == "memory_bank.npy":
            real_write(path, bytes(data)[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    code, _, err = run(["fit", "--train-dir", tiny / CATEGORY / "train" / "good", "--model", model_copy,
                        "--coreset-ratio", RATIO, "--weights", "random", "--sampler", "random"])
    line = error_line(err)
    assert code == 1 and line == (f"error: no space left on the device while writing {model_copy}; free some "
                                  f"space or choose another folder ({model_copy} was left as it was)")
    assert snapshot(model_copy) == before
    assert sorted(p.name for p in model_copy.parent.iterdir()) == ["model"]


def test_debug_adds_the_traceback(tmp_path):
    code, _, err = run(["evaluate", "--data-root", tmp_path / "nowhere", "--category", CATEGORY,
                        "--output", tmp_path / "out", "--debug"])
    assert code == 1 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


# -- issue 10: problems found before the fit ------------------------------------------------------


def test_case10_a_test_set_with_one_class_is_refused_before_the_fit(broken_copy, tmp_path, no_fit):
    test = broken_copy / CATEGORY / "test"
    for folder in test.iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    evaluate_fails(broken_copy, tmp_path / "out", test, "holds only good images")


def test_case10_a_corrupt_image_or_a_wrong_mask_is_found_before_the_fit(broken_copy, tmp_path, no_fit):
    mask = sorted((broken_copy / CATEGORY / "ground_truth").glob("*/*_mask.png"))[0]
    Image.new("L", (64, 64)).save(mask)
    evaluate_fails(broken_copy, tmp_path / "out", mask, "mask size (64, 64) differs")
    image = broken_copy / CATEGORY / "test" / "good" / "002.png"
    image.write_bytes(image.read_bytes()[:200])  # truncated
    evaluate_fails(broken_copy, tmp_path / "out", image, "cannot read image")
    train = broken_copy / CATEGORY / "train" / "good" / "005.png"
    train.write_bytes(b"")
    code, _, err = run(["fit", "--train-dir", train.parent, "--model", tmp_path / "m"])
    assert code == 1 and error_line(err) == f"error: {train}: file is empty"
    code, _, err = run(["predict", "--model", tmp_path, train, "--output", tmp_path / "p"])
    assert code == 1


def test_case10_a_mask_that_is_not_binary_warns_and_keeps_the_metrics(evaluated, broken_copy, tmp_path):
    _, _, clean_output = evaluated
    mask = sorted((broken_copy / CATEGORY / "ground_truth").glob("*/*_mask.png"))[0]
    values = np.asarray(Image.open(mask))
    Image.fromarray(np.where(values > 0, 255, 1).astype(np.uint8)).save(mask)  # background 1, not 0
    output = tmp_path / "out"
    code, out, err = run(["evaluate", "--data-root", broken_copy, "--category", CATEGORY,
                          "--coreset-ratio", RATIO, "--output", output])
    assert code == 0
    assert err.splitlines() == [f"warning: {mask}: mask is not binary (values seen: 1, 255); pixels above "
                                "half the maximum (127.5) count as defect; save masks with only 0 and one "
                                "other value"]
    clean = json.loads((clean_output / "metrics.json").read_text())
    warned = json.loads((output / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert warned[key] == clean[key]


@pytest.mark.slow
def test_only_pcnotes_own_warnings_become_warning_lines():
    # in a fresh interpreter, with Python's own warning filters (pytest installs its own)
    code = ("import warnings\n"
            "from pcnotes.app import cli\n"
            "from pcnotes.data.mvtec import MaskValuesWarning\n"
            "with cli._warnings_as_lines():\n"
            # a ResourceWarning of an import cut short by a signal: Python hides it, and so do we
            "    warnings.warn_explicit('unclosed file', ResourceWarning, '<frozen>', 1,\n"
            "                           module='importlib._bootstrap_external')\n"
            "    for _ in range(2):\n"  # each of pcnotes' own texts, once
            "        warnings.warn_explicit('m.png: mask is not binary', MaskValuesWarning, 'data.py', 1,\n"
            "                               module='pcnotes.data.mvtec')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "warning: m.png: mask is not binary\n", result.stderr


def test_help_imports_no_torch():
    code = ("import sys, contextlib, io\n"
            "from pcnotes.app import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['fit', '--help'], ['predict', '--help']):\n"
            "        assert cli.main(argv) == 0\n"
            "print(sorted(m for m in ('torch', 'numpy', 'faiss', 'matplotlib') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(Path(cli.__file__).parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
