"""The benchmark scripts run, and write what benchmarks/README.md quotes.

They are timed by hand (``make benchmark``), never in the test suite; here
they only run on tiny stand-in features, so that a change to the library
cannot silently break them.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def coreset_benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("coreset_benchmark", BENCHMARKS / "coreset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(20, module.FEATURE_DIM))

    def stand_in(kind, n):  # clustered points instead of MobileNet features of images
        return (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, module.FEATURE_DIM))).astype(np.float32)

    monkeypatch.setattr(module, "load_features", stand_in)
    return module


def test_coreset_benchmark_writes_its_table_to_the_results_file(coreset_benchmark, tmp_path, capsys):
    output = tmp_path / "coreset.json"
    coreset_benchmark.main(["--features", "textures", "grass", "--n", "900", "--greedy-n", "300", "--rounds", "2",
                            "--output", str(output)])  # fmt: skip
    results = json.loads(output.read_text())
    assert results["rounds"] == 2
    assert [row["features"] for row in results["rows"]] == ["textures", "grass"]
    for row in results["rows"]:
        assert (row["n"], row["m"]) == (900, 90)
        assert set(row["seconds"]) == {"reference", "brute_force", "fast", "fast_one_thread", "lower_bound"}
        assert row["same_indices_as_fast"] == {"one_thread": True, "brute_force": True, "forced_ways": True}
        assert set(row["forced_ways_seconds"]) == {"flat", "flat32", "prune"}
        assert row["auto_over_best_way"] == pytest.approx(row["seconds"]["fast"] / min(row["forced_ways_seconds"].values()))
        agreement = row["reference_agreement"]
        assert 0.9 <= agreement["same_position"] <= agreement["same_set"] <= 1.0
        assert agreement["radius_relative_difference"] < 1e-4
        assert row["speed_up_over_reference"]["fast"] == pytest.approx(row["seconds"]["reference"] / row["seconds"]["fast"])
        work = row["fast_work"]
        assert work["flat_steps"] + work["prune_steps"] == 90
        assert 0 < work["exact_distances"] <= work["plain_distances"] == 900 * 90
    assert results["greedy"]["identical"] is True and results["greedy"]["m"] == 30
    out = capsys.readouterr().out
    # the printed table is the markdown that benchmarks/README.md quotes
    assert re.search(r"^\| grass \| 900 \| 90 \| [\d.]+ \| [\d.]+ \([\d.]+x\) \|.* \| yes \|$", out, re.M), out
    assert re.search(r"^\| grass( \| [\d.]+){5} \| \d+, \d+, \d+ \| [\d.]+% \|$", out, re.M), out
    assert f"written to {output} and coreset.md" in out
    assert (tmp_path / "coreset.md").read_text() == coreset_benchmark.report(results)  # the printed report


def test_the_coreset_report_and_the_readme_tables_are_those_of_the_committed_results_file(coreset_benchmark):
    results = json.loads((BENCHMARKS / "results" / "coreset.json").read_text())
    assert (BENCHMARKS / "results" / "coreset.md").read_text() == coreset_benchmark.report(results)
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    assert coreset_benchmark.table(results) in readme  # paste the new tables into the README after a run
    assert coreset_benchmark.ways_table(results) in readme


def _load(name: str):
    """A benchmark script as a module (registered, so that its dataclasses can resolve their types)."""
    if f"benchmark_{name}" not in sys.modules:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[f"benchmark_{name}"]


@pytest.mark.parametrize("kind", ["paste", "blur", "shift", "scratch"])
@pytest.mark.parametrize("colour", [False, True])
def test_photo_set_defects_change_exactly_their_mask(kind, colour):
    photos = _load("make_photo_set")
    rng = np.random.default_rng(3)
    image = rng.integers(60, 200, (120, 300, 3) if colour else (120, 300), dtype=np.uint8)
    donor = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    out, mask = photos.add_defect(rng, image, kind, photos._donor_like(donor, image))
    assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == (120, 300)
    assert 0 < mask.sum() < 0.1 * mask.size
    assert np.array_equal(out[~mask], image[~mask])  # nothing changes outside the mask
    changed = np.any(out != image, axis=-1) if colour else out != image
    assert changed[mask].mean() > 0.5  # and most of the mask does change


def test_photo_set_writes_gray_and_wide_categories_in_the_mvtec_layout(tmp_path):
    from pcnotes.data.mvtec import MVTecDataset

    photos = _load("make_photo_set")
    root = photos.make_photo_set(tmp_path / "photos", ["grass", "hubble_wide"], n_train=2, n_test_good=1,
                                 n_per_defect=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no staging folder left
    with Image.open(root / "grass" / "train" / "good" / "000.png") as png:
        assert png.mode == "L" and png.size == (192, 192)
    with Image.open(root / "hubble_wide" / "test" / "scratch" / "000.png") as png:
        assert png.mode == "RGB" and png.size == (600, 250)
    test = MVTecDataset(root, "hubble_wide", "test", resize=(256, 608), crop=None)
    assert test.defects == ["good", "blur", "paste", "scratch", "shift"]
    assert all(test[i]["mask"].sum() > 0 for i in range(1, 5))
    with pytest.raises(FileExistsError, match="not a photo set"):
        photos.make_photo_set(tmp_path)  # a folder that is not a photo set is left alone


def test_real_data_benchmark_prints_and_writes_one_table(tmp_path, capsys):
    from pcnotes.data.synth import generate_dataset

    root = generate_dataset(tmp_path / "tiny", categories=["tiles"], n_train=2, n_test_good=1, n_test_per_defect=1)
    real_data = _load("real_data")
    assert real_data.main(["--data-root", str(root), "--options", "2", "3", "--coreset-ratio", "0.25",
                           "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\[1/2\] pooled_concat 256/224 +tiles +input 256/224 +image AUROC", out, re.M), out
    assert re.search(r"^\[2/2\] mean_mapped whole +tiles +input 256x256 whole", out, re.M), out
    row = r"\| {} \| {} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| {} \| [\d.]+ \| [\d.]+ \| \d+ \|"
    assert re.search(row.format("pooled_concat 256/224", 128, "392"), out), out  # 2 images x 784 patches x 0.25
    assert re.search(row.format("mean_mapped whole", 1024, r"[\d,]+"), out), out
    record = json.loads((tmp_path / "results" / "real_data_tiny.json").read_text())
    assert [r["option"] for r in record["results"]] == ["pooled_concat 256/224", "mean_mapped whole"]
    assert record["results"][1]["categories"][0]["input_size"] == "256x256"
    assert (tmp_path / "results" / "real_data_tiny.md").read_text().count("| tiles |") == 2


@pytest.fixture
def layers_benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("layers_benchmark", BENCHMARKS / "mobilenet_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "warm_up", lambda: None)
    return module


def test_layers_benchmark_writes_every_candidate_to_its_results_file(layers_benchmark, monkeypatch, tmp_path):
    root = tmp_path / "data"  # two categories in the MVTec layout, no manifest: outside data, left alone
    for category in ("bottle", "tile"):
        (root / category / "train" / "good").mkdir(parents=True)

    def fake_evaluation(data_root, category, config):  # stand-in metrics that name the layers and category
        offset = 0.01 * len(config.layers) + (0.002 if category == "tile" else 0.0)
        metrics = {"image_auroc": 0.9 + offset, "pixel_auroc": 0.8 + offset, "aupro": 0.7 + offset,
                   "memory_bank_size": 100 * len(config.layers), "fit_seconds": 1.0, "predict_seconds": 0.5}
        return None, SimpleNamespace(metrics=metrics)

    monkeypatch.setattr(layers_benchmark, "evaluate_category", fake_evaluation)
    output = tmp_path / "results" / "layers.json"
    (tmp_path / "results").mkdir()
    output.write_text("the previous results")
    assert layers_benchmark.main(["--root", str(root), "--ratio", "0.1", "--output", str(output)]) == 0

    record = json.loads(output.read_text())
    assert [tuple(c["layers"]) for c in record["candidates"]] == layers_benchmark.CANDIDATES
    assert [c["default"] for c in record["candidates"]].count(True) == 1
    assert record["config"]["coreset_ratio"] == 0.1 and "layers" not in record["config"]
    assert record["data"]["generator"] is None  # not drawn by pcnotes.data.synth: no manifest
    pair = record["candidates"][0]
    assert pair["strides"] == [8, 16] and sorted(pair["categories"]) == ["bottle", "tile"]
    assert pair["mean"]["aupro"] == pytest.approx(0.7 + 0.02 + 0.001)
    assert pair["mean"]["seconds"] == pytest.approx(2 * 1.5)
    assert sorted(p.name for p in output.parent.iterdir()) == ["layers.json"]  # no temporary file left


def test_layers_benchmark_refuses_a_folder_as_output(layers_benchmark, tmp_path, capsys):
    with pytest.raises(SystemExit):
        layers_benchmark.main(["--root", str(tmp_path), "--output", str(tmp_path)])
    assert "is a folder" in capsys.readouterr().err


def test_the_committed_results_cover_easy_and_hard_features_with_the_same_indices():
    results = json.loads((BENCHMARKS / "results" / "coreset.json").read_text())
    assert {row["features"] for row in results["rows"]} == {"textures", "embedded", "grass", "gravel", "brick"}
    for row in results["rows"]:
        assert row["same_indices_as_fast"] and all(row["same_indices_as_fast"].values()), row["features"]
