"""The explorer's state, without any widget: features, caches, one update per setting.

Runs on a tiny generated data set (fabric: 6 training and 11 test images;
tiles: 2 and 5), so features are extracted in a few seconds.
"""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

import pcnotes.app.explorer_state as explorer_state
from pcnotes.stages.s5_coreset import coverage_radius, select_coreset
from pcnotes.config import PatchCoreConfig
from pcnotes.model import PatchCore

# A small K, so that the tables miss often and their fallback searches run too.
NEIGHBOURS = 8


@pytest.fixture(scope="module")
def state(explorer_root):
    return explorer_state.prepare(explorer_root, neighbours=NEIGHBOURS)


@pytest.fixture
def fresh_state(state):
    """The module's state with empty caches (the features stay: extraction is the slow part)."""
    state.clear_caches()
    return state


def plain_scores(data, indices, config=None):
    """What a plain PatchCore with the bank ``train_features[indices]`` gives: its prediction and metrics.

    Through PatchCore's own seam (fit_features, score_features, metrics), with the whole given bank kept.
    """
    config = dataclasses.replace(config or PatchCoreConfig(), coreset_ratio=1.0)
    model = PatchCore(config).fit_features(data.train_features[indices], data.grid)
    prediction = model.score_features(data.test_features, data.grid, size=data.masks.shape[-2:])
    return prediction, model.metrics(data.labels, prediction.scores, data.masks, prediction.maps)


@pytest.mark.slow
def test_the_state_module_needs_no_widgets():
    code = "import sys, pcnotes.app.explorer_state; print('ipywidgets' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow  # features are extracted: seconds
def test_prepare_extracts_the_first_category_and_lists_all(explorer_root):
    state = explorer_state.prepare(explorer_root, neighbours=NEIGHBOURS)
    assert state.categories == ["fabric", "tiles"]
    assert state.is_loaded("fabric") and not state.is_loaded("tiles")
    data = state.data("fabric")
    assert data.train_features.shape == (6 * 784, 128)  # mobilenet_v2's default pooled_concat: 32 + 96
    assert data.test_features.shape == (data.num_test * 784, 128)
    assert data.grid == (28, 28)
    assert data.masks.shape == (data.num_test, 224, 224) and data.masks.dtype == bool
    assert data.labels.tolist() == [0, 0, 0] + [1] * (data.num_test - 3)
    assert data.image_labels[0] == "good/000.png"


@pytest.mark.slow  # features are extracted: seconds
def test_prepare_rejects_what_it_cannot_explore(explorer_root):
    with pytest.raises(ValueError, match="num_neighbors=1"):
        explorer_state.prepare(explorer_root, config=PatchCoreConfig(num_neighbors=3))
    with pytest.raises(ValueError, match="no category"):
        explorer_state.prepare(explorer_root, categories=["carpet"])


@pytest.mark.slow  # features are extracted: seconds
def test_update_equals_a_plain_patchcore_with_that_bank(fresh_state):
    data = fresh_state.data("fabric")
    stats = explorer_state.update(0.05, "random", image_index=5, cache=fresh_state)
    indices = select_coreset(data.train_features, 0.05, "random")
    assert np.array_equal(stats.indices, indices)
    assert stats.bank_size == len(indices) == int(data.num_train * 0.05)

    prediction, metrics = plain_scores(data, indices)
    for name in ("image_auroc", "pixel_auroc", "aupro"):
        assert getattr(stats, name) == pytest.approx(metrics[name], abs=1e-4)
    np.testing.assert_allclose(stats.amap, prediction.maps[5], rtol=1e-4, atol=1e-4)
    assert stats.image_score == pytest.approx(float(prediction.patch_scores[5].max()), rel=1e-5)
    np.testing.assert_allclose(stats.image_scores, prediction.scores, rtol=1e-5)
    # The radius is in the space the scores are in: the full D-dim features, not a projection.
    assert stats.coverage_radius == pytest.approx(coverage_radius(data.train_features, indices), rel=1e-4)
    assert stats.radius_score == stats.coverage_radius
    assert stats.image_label == data.image_labels[5]
    assert stats.num_pixels == data.masks.size


@pytest.mark.slow  # features are extracted: seconds
@pytest.mark.parametrize("ratio", [0.002, 0.05, 0.1, 0.3])
def test_a_greedy_bank_equals_a_plain_patchcore_with_it(fresh_state, ratio):
    """Up to 10 %: the prefix look-ups; above: the neighbour tables. The same numbers."""
    data = fresh_state.data("fabric")
    stats = explorer_state.update(ratio, "approximate_greedy", image_index=7, cache=fresh_state)
    assert stats.table_misses == 0 or ratio > 0.1
    indices = select_coreset(data.train_features, ratio, "approximate_greedy")
    assert np.array_equal(stats.indices, indices)
    prediction, metrics = plain_scores(data, indices)
    for name in ("image_auroc", "pixel_auroc", "aupro"):
        assert getattr(stats, name) == pytest.approx(metrics[name], abs=1e-4)
    np.testing.assert_allclose(stats.amap, prediction.maps[7], rtol=1e-4, atol=1e-4)
    assert stats.coverage_radius == pytest.approx(coverage_radius(data.train_features, indices), rel=1e-4)


@pytest.mark.slow  # features are extracted: seconds
@pytest.mark.parametrize("sampler", ["approximate_greedy", "greedy"])
def test_greedy_prefixes_equal_fresh_runs(fresh_state, sampler):
    data = fresh_state.data("fabric")
    for ratio in [0.01, 0.1, 0.003, 0.05]:  # all prefixes of one run to 10 %
        stats = explorer_state.update(ratio, sampler, cache=fresh_state)
        assert np.array_equal(stats.indices, select_coreset(data.train_features, ratio, sampler))
        assert stats.run_size == int(data.num_train * 0.1)
    assert fresh_state.cache_info()["sampler_runs"] == 1


@pytest.mark.slow  # features are extracted: seconds
def test_a_ratio_above_10_percent_runs_the_greedy_sampler_to_100_percent(fresh_state):
    data = fresh_state.data("fabric")
    assert fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.01)
    assert explorer_state.update(0.01, "approximate_greedy", cache=fresh_state).greedy_ran
    assert not fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.1)
    assert fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.3)
    assert not fresh_state.will_run_sampler("fabric", "random", 0.3)
    assert not explorer_state.update(0.1, "approximate_greedy", cache=fresh_state).greedy_ran
    for ratio in [0.3, 0.02, 0.7]:
        stats = explorer_state.update(ratio, "approximate_greedy", cache=fresh_state)
        assert stats.greedy_ran == (ratio == 0.3)
        assert np.array_equal(stats.indices, select_coreset(data.train_features, ratio, "approximate_greedy"))
        assert stats.run_size == data.num_train
    assert fresh_state.cache_info()["sampler_runs"] == 2


@pytest.mark.slow  # features are extracted: seconds
def test_greedy_coverage_radius_shrinks_as_the_ratio_grows(fresh_state):
    data = fresh_state.data("fabric")
    ratios = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    # Asked for largest first, so the sampler runs once; the values do not depend on the order.
    radii = {r: explorer_state.update(r, "greedy", cache=fresh_state).coverage_radius for r in ratios[::-1]}
    radii = [radii[r] for r in ratios]
    assert all(later <= earlier for earlier, later in zip(radii, radii[1:])), radii
    assert radii[0] > 2 * radii[-1]
    last = explorer_state.update(0.01, "greedy", cache=fresh_state)
    assert last.coverage_radius == pytest.approx(coverage_radius(data.train_features, last.indices), rel=1e-4)
    # The whole bank covers itself, whichever sampler picked it.
    assert explorer_state.update(1.0, "random", cache=fresh_state).coverage_radius == 0.0


@pytest.mark.slow  # features are extracted: seconds
def test_a_repeated_value_hits_the_cache(fresh_state, monkeypatch):
    calls = []

    def counting_select(*args, **kwargs):
        calls.append(kwargs["size"])
        return select_coreset(*args, **kwargs)

    monkeypatch.setattr(explorer_state, "select_coreset", counting_select)
    first = explorer_state.update(0.02, "random", cache=fresh_state)
    info = fresh_state.cache_info()
    assert len(calls) == 1 and info["coreset_misses"] == 1 and info["score_misses"] == 1
    again = explorer_state.update(0.02, "random", image_index=3, cache=fresh_state)
    info = fresh_state.cache_info()
    assert len(calls) == 1, "the repeated ratio ran the sampler again"
    assert info["coreset_hits"] == 1 and info["score_hits"] == 1
    assert again.coreset_cached and again.scores_cached and not first.scores_cached
    assert again.image_auroc == first.image_auroc and np.array_equal(again.indices, first.indices)
    history = fresh_state.history("fabric")
    assert list(history) == ["random"] and len(history["random"]) == 1


@pytest.mark.slow  # features are extracted: seconds
def test_update_opens_on_the_defect_that_stands_out_most(fresh_state):
    data = fresh_state.data("fabric")
    stats = explorer_state.update(0.01, "random", cache=fresh_state)
    prediction, _ = plain_scores(data, np.arange(data.num_train))  # measured with the whole bank
    contrast = explorer_state.defect_contrast(prediction.maps, data.masks)
    assert stats.image_index == data.default_image == int(np.argmax(contrast))
    assert data.labels[stats.image_index] == 1 and not stats.image_label.startswith("good/")
    assert contrast[data.labels == 0].tolist() == [0.0] * 3
    assert contrast.max() > 0.2  # a fifth of the colour scale brighter than its background, at least


def test_defect_contrast_is_the_mask_against_its_background_as_a_fraction_of_the_scale():
    maps = np.zeros((3, 4, 4))
    maps[0, :2] = 10.0  # defect at 10 on a background of 0: the whole scale
    maps[1, :2], maps[1, 2:] = 6.0, 4.0  # 2 of the scale's 10
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:2, :2] = True  # the third image is good: no mask
    assert explorer_state.defect_contrast(maps, masks).tolist() == pytest.approx([1.0, 0.2, 0.0])


@pytest.mark.slow  # features are extracted: seconds
def test_the_radius_is_on_the_scale_of_squared_scores_when_they_are_squared(explorer_root):
    config = PatchCoreConfig(squared=True)
    state = explorer_state.prepare(explorer_root, config=config, neighbours=NEIGHBOURS)
    stats = explorer_state.update(0.05, "random", image_index=5, cache=state)
    data = state.data("fabric")
    assert stats.radius_score == pytest.approx(coverage_radius(data.train_features, stats.indices) ** 2, rel=1e-4)
    prediction, _ = plain_scores(data, stats.indices, config)
    np.testing.assert_allclose(stats.image_scores, prediction.scores, rtol=1e-5)


@pytest.mark.slow  # features are extracted: seconds
@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, math.nan, math.inf, "0.1", True, None])
def test_update_rejects_a_ratio_outside_0_1(state, ratio):
    with pytest.raises(ValueError, match=r"coreset ratio must be in \(0, 1\]"):
        explorer_state.update(ratio, "random", cache=state)


@pytest.mark.slow  # features are extracted: seconds
def test_update_rejects_unknown_sampler_category_and_image(state):
    with pytest.raises(ValueError, match="unknown sampler 'kmeans'"):
        explorer_state.update(0.1, "kmeans", cache=state)
    with pytest.raises(ValueError, match="unknown category 'carpet'"):
        explorer_state.update(0.1, "random", "carpet", cache=state)
    with pytest.raises(ValueError, match=r"image_index must be in \[0, 11\)"):
        explorer_state.update(0.1, "random", image_index=11, cache=state)


@pytest.mark.slow  # features are extracted: seconds
def test_stats_rows_say_what_the_numbers_are(fresh_state):
    stats = explorer_state.update(0.0316, "approximate_greedy", image_index=4, cache=fresh_state)
    rows = dict(explorer_state.stats_rows(stats))
    assert rows["sampler"] == "approximate greedy"
    assert rows["coreset ratio"] == "0.0316"
    assert rows["bank size"] == "148 of 4,704 patches (3.15%)"
    assert rows["selection time"].endswith("for a 470-pick run; this bank is its first 148 picks")
    assert rows["pixel AUROC"] == f"{stats.pixel_auroc:.3f} (all {11 * 224 * 224:,} pixels)"
    assert rows["scoring time"].endswith("per image (784 × 148 distances)")
    assert rows["test image"].startswith(stats.image_label)
    assert rows["coverage radius"] == f"{stats.coverage_radius:.2f} (128-d, the space of the scores)"
