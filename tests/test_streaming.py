"""Your own photographs at any shape and count (issue 22).

The default image size follows the training photographs; evaluate streams the
test set and computes its metrics from a compact store, with the values of the
in-memory computation; the approximate index finds the exact neighbour almost
always; benchmarks/scale.py's functions run.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnotes.app import cli
from pcnotes.app.evaluation import evaluate_category
from pcnotes.config import PatchCoreConfig
from pcnotes.data.mvtec import default_image_size, load_split, mask_transform, stack
from pcnotes.fast.ann import recall_at_1
from pcnotes.fast.metrics import MetricStore
from pcnotes.model import PatchCore
from pcnotes.stages.s5_coreset import coreset_size
from pcnotes.stages.s6_scoring import NearestNeighbours
from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import compute_metrics

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HEIGHT, WIDTH = 160, 400  # a wide photograph
DEFECT = (slice(60, 90), slice(350, 385))  # near the right end: a centre crop cuts it away


def texture(seed: int, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2)
    return (128 + 50 * noise / noise.std()).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A tiny MVTec-layout category ``plate`` of grayscale 400 x 160 PNGs, one spot near the right end."""
    root = tmp_path_factory.mktemp("wide")
    category = root / "plate"
    for folder in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (category / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(texture(i)).save(category / "train" / "good" / f"{i:03d}.png")
    for i in range(3):
        Image.fromarray(texture(10 + i)).save(category / "test" / "good" / f"{i:03d}.png")
    for i in range(2):
        spotted, mask = texture(20 + i), np.zeros((HEIGHT, WIDTH), np.uint8)
        spotted[DEFECT], mask[DEFECT] = 250, 255
        mask[20:30, 190:200] = 255  # and a small one in the middle, which the crop keeps
        spotted[20:30, 190:200] = 5
        Image.fromarray(spotted).save(category / "test" / "spot" / f"{i:03d}.png")
        Image.fromarray(mask).save(category / "ground_truth" / "spot" / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def scale():
    """benchmarks/scale.py as a module."""
    spec = importlib.util.spec_from_file_location("scale_benchmark", BENCHMARKS / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the default image size -------------------------------------------------------------------


@pytest.mark.parametrize("sizes, expected", [
    ([(192, 192)] * 3, (256, 224)),  # square: the reference's resize 256 / crop 224
    ([(258, 256), (256, 256)], (256, 224)),  # an aspect ratio that rounds to 1 at the stride is square
    ([(400, 160)], ((256, 640), None)),  # wide: the whole image, shorter side 256
    ([(160, 400)], ((640, 256), None)),  # tall
    ([(500, 1260), (500, 1250), (510, 1270)], ((640, 256), None)),  # commutator-like: 1260/500 -> 640
    ([(600, 250), (580, 240), (250, 600)], ((256, 608), None)),  # mixed sizes: the median aspect ratio
])
def test_the_default_size_follows_the_training_photographs(sizes, expected):
    assert default_image_size(sizes) == expected
    resize, crop = expected
    if crop is None:
        assert all(side % 16 == 0 for side in resize) and min(resize) == 256


def test_fit_prints_the_size_it_chose_and_saves_it_with_the_model(wide, tmp_path, capsys):
    code = cli.main(["fit", "--train-dir", str(wide / "plate" / "train" / "good"), "--model",
                     str(tmp_path / "model"), "--coreset-ratio", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "image size: 256x640, the whole image (median width/height 2.50 of 3 training images" in out
    config = json.loads((tmp_path / "model" / "config.json").read_text())["config"]
    assert config["resize"] == [256, 640] and config["crop"] is None
    assert PatchCore.load(tmp_path / "model").config.resize == (256, 640)


def test_an_explicit_crop_that_cuts_defect_pixels_is_counted_once(wide, tmp_path, capsys):
    code = cli.main(["evaluate", "--data-root", str(wide), "--category", "plate", "--output",
                     str(tmp_path / "run"), "--resize", "256", "--crop", "224", "--coreset-ratio", "0.5",
                     "--heatmaps", "none"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    masks = [Image.open(path) for path in sorted((wide / "plate" / "ground_truth" / "spot").glob("*.png"))]
    whole = sum(int(mask_transform(256, None)(mask).sum()) for mask in masks)
    kept = sum(int(mask_transform(256, 224)(mask).sum()) for mask in masks)
    assert 0 < kept < whole
    lines = [line for line in captured.err.splitlines() if "cut away" in line]
    assert lines == [f"warning: the centre crop 224 cut away {whole - kept:,} of {whole:,} defect pixels "
                     f"({100 * (whole - kept) / whole:.1f}%) in 2 test images; the metrics score only what it "
                     "keeps (--crop none keeps the whole image)"]
    assert "image size: resize 256, centre crop 224 (from --resize/--crop" in captured.out


def test_evaluate_prints_one_phase_table_and_writes_overlays_and_top_panels(wide, scale, tmp_path, capsys):
    code = cli.main(["evaluate", "--data-root", str(wide), "--category", "plate", "--output",
                     str(tmp_path / "run"), "--coreset-ratio", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    phases = [line.split()[0] for line in out.splitlines()[out.splitlines().index("  phase      seconds  share")
                                                            + 1:] if line.startswith("  ")][:9]
    assert phases == ["validate", "extract", "coreset", "search", "maps", "metrics", "writing", "other", "wall"]
    seconds = scale.parse_phases(out)  # as benchmarks/scale.py --phases reads it
    assert list(seconds) == phases and abs(sum(seconds.values()) - 2 * seconds["wall"]) <= 0.5  # rows add up to the wall
    overlays = sorted((tmp_path / "run" / "heatmaps").glob("*.png"))
    assert len(overlays) == 5 and Image.open(overlays[0]).size == (640, 256)  # the whole image, as the model saw it
    assert len(list((tmp_path / "run" / "top").glob("*.png"))) == 5


# -- streaming equals in-memory ----------------------------------------------------------------


def test_the_compact_store_gives_the_metrics_of_the_full_maps():
    rng = np.random.default_rng(0)
    grids = rng.gamma(2.0, 1.0, size=(12, 8, 10)).astype(np.float32)
    masks = np.zeros((12, 64, 80), dtype=bool)
    labels = np.array([0] * 5 + [1] * 7)
    for i in range(5, 12):
        top, left = rng.integers(0, 50), rng.integers(0, 60)
        masks[i, top : top + 10, left : left + 14] = True
        grids[i, top // 8, left // 8] += 3.0  # defects score higher, but not perfectly
    maps = anomaly_map(grids, size=(64, 80), sigma=4.0)
    scores = maps.reshape(12, -1).max(axis=1)
    store = MetricStore((64, 80), sigma=4.0)
    for start in range(0, 12, 5):  # batches of 5, 5, 2
        part = slice(start, start + 5)
        store.add(scores[part], labels[part], grids[part], masks[part])
    exact = compute_metrics(labels, scores, masks, maps)
    streamed = store.metrics()
    for key in exact:
        assert abs(streamed[key] - exact[key]) < 1e-6, (key, streamed[key], exact[key])
    assert abs(streamed["pixel_auroc"] - exact["pixel_auroc"]) <= store.pixel_auroc_bound < 1e-5


def test_evaluate_streams_to_the_scores_and_metrics_of_predicting_everything_at_once(wide):
    config = PatchCoreConfig(resize=(256, 640), crop=None, coreset_ratio=0.5, batch_size=2)  # 3 test batches
    model, result = evaluate_category(wide, "plate", config)
    test = load_split(wide, "plate", "test", config)
    images, masks = stack(test)
    scores, maps = model.predict(images)  # everything held at once, as before
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)
    np.testing.assert_allclose(result.maps(), maps, atol=1e-6)
    exact = compute_metrics(np.asarray(test.labels), scores, masks, maps)
    for key in exact:
        assert abs(result.metrics[key] - exact[key]) < 1e-6, key
    assert set(result.phases) == {"validate", "extract", "coreset", "search", "maps", "metrics"}


def test_the_metric_store_holds_a_grid_and_a_packed_mask_per_image_not_its_map():
    size, grid = (224, 224), (28, 28)
    store = MetricStore(size, sigma=4.0)
    masks = np.zeros((8, *size), dtype=bool)
    masks[4:, 100:120, 30:60] = True  # half of each batch defective
    for _ in range(25):  # 200 images
        store.add(np.ones(8), np.array([0] * 4 + [1] * 4), np.ones((8, *grid), np.float32), masks)
    per_image = store.nbytes / len(store)
    assert per_image == 4 + 8 + 28 * 28 * 4 + 0.5 * 224 * 224 / 8  # score, label, grid, half a packed mask
    assert 224 * 224 * 4 > 30 * per_image  # one float32 map is more than 30 times that


def test_evaluate_holds_no_map_of_a_scored_batch(scale, tmp_path):
    """Memory that stays after each batch grows by far less than one map per image (tracemalloc)."""
    import tracemalloc

    from pcnotes.data.synth import ensure_default_dataset

    root = scale.make_set(ensure_default_dataset() / scale.CATEGORY, tmp_path / "set", 2, 32)
    config = PatchCoreConfig(resize=(96, 96), crop=None, batch_size=4)  # 8 test batches
    held = []  # (images scored, bytes traced) after each batch
    tracemalloc.start()
    try:
        evaluate_category(root, scale.CATEGORY, config,
                          on_batch=lambda batch: held.append((batch.first + len(batch.maps),
                                                              tracemalloc.get_traced_memory()[0])))
    finally:
        tracemalloc.stop()
    assert len(held) == 8
    (first, before), (last, after) = held[1], held[-1]  # from the second batch: first-call caches are made
    per_image = (after - before) / (last - first)
    assert per_image < 96 * 96 * 4 / 8, per_image  # an eighth of a float32 map


# -- the approximate index ---------------------------------------------------------------------


def test_hnsw_finds_the_exact_nearest_neighbour_almost_always():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(50, 32))
    bank = (centres[rng.integers(0, 50, 5000)] + rng.normal(size=(5000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 50, 1000)] + rng.normal(size=(1000, 32))).astype(np.float32)
    exact_d, exact_i = NearestNeighbours(bank).search(queries)
    hnsw_d, hnsw_i = NearestNeighbours(bank, approximate="hnsw").search(queries)
    assert recall_at_1(exact_i, hnsw_i) >= 0.95
    assert np.all(hnsw_d >= exact_d - 1e-4)  # a miss can only find a farther entry
    assert PatchCore(index="hnsw").config.index == "hnsw"
    with pytest.raises(ValueError, match="index"):
        PatchCoreConfig(index="hnsw", knn_backend="torch")


def test_the_ann_benchmark_finds_where_hnsw_pays_off():
    spec = importlib.util.spec_from_file_location("ann_benchmark", BENCHMARKS / "ann.py")
    ann = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ann)
    rng = np.random.default_rng(1)
    bank, queries = rng.normal(size=(3000, 16)).astype(np.float32), rng.normal(size=(500, 16)).astype(np.float32)
    rows = ann.break_even(bank, queries, [1000, 2000, 5000], n_queries=400, test_patches=10**9)
    assert [row["bank"] for row in rows] == [1000, 2000]  # no subset bigger than the bank
    for row in rows:
        assert row["queries"] == 400 and 0.5 <= row["recall_at_1"] <= 1
        after = row["pays_off_after_queries"]
        assert row["faster_for_test_set"] == (after is not None)  # 10**9 queries: any finite break-even
        assert (after is None) == (row["hnsw_ms_per_1000"] >= row["exact_ms_per_1000"])


# -- benchmarks/scale.py ---------------------------------------------------------------------


def test_scale_benchmark_measures_one_small_point(scale, tmp_path):
    from pcnotes.data.synth import ensure_default_dataset

    source = ensure_default_dataset() / scale.CATEGORY
    root = scale.make_set(source, tmp_path / "set", 3, 5)
    assert len(list((root / "wood" / "train" / "good").iterdir())) == 3
    assert len(list((root / "wood" / "test").rglob("*.png"))) == 5
    row = scale.measure(source, 2, 4, 48)
    assert row["n_train"] == 2 and row["n_test"] == 4 and row["peak_mb"] > 0
    assert row["memory_bank_size"] == coreset_size(2 * 6 * 6, 0.1)  # 48 x 48 images: a 6 x 6 grid (stride 8)
    assert scale.markdown([row]).splitlines()[-1].startswith("| 2 | 4 |")
