"""The coreset explorer: exact fast paths, caches, the widget, busy state and coalescing.

Runs on a tiny generated data set (fabric: 6 training and 11 test images;
tiles: 2 and 5), so features are extracted in a few seconds.
"""

import base64
import io
import math
import shutil

import numpy as np
import pytest
from PIL import Image

import pcnotes.explorer as explorer
from pcnotes.coreset import coverage_radius, select_coreset
from pcnotes.evaluation import compute_metrics
from pcnotes.maps import anomaly_map
from pcnotes.model import PatchCoreConfig
from pcnotes.scoring import NearestNeighbours, image_scores
from pcnotes.synth import generate_dataset

# A small K, so that the tables miss often and the fallback search is exercised too.
NEIGHBOURS = 8


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """fabric (6 training, 11 test images) and a smaller tiles (2 and 5), to switch to."""
    folder = tmp_path_factory.mktemp("explorer")
    root = generate_dataset(folder / "data", categories=["fabric"], n_train=6, n_test_good=3,
                            n_test_per_defect=2)
    other = generate_dataset(folder / "other", categories=["tiles"], n_train=2, n_test_good=1,
                             n_test_per_defect=1)
    shutil.copytree(other / "tiles", root / "tiles")
    return root


@pytest.fixture(scope="module")
def state(root):
    return explorer.prepare(root, neighbours=NEIGHBOURS)


@pytest.fixture
def fresh_state(state):
    """The module's state with empty caches (the features stay: extraction is the slow part)."""
    state.clear_caches()
    return state


def test_prepare_extracts_the_first_category_and_lists_all(root):
    state = explorer.prepare(root, neighbours=NEIGHBOURS)
    assert state.categories == ["fabric", "tiles"]
    assert state.is_loaded("fabric") and not state.is_loaded("tiles")
    data = state.data("fabric")
    assert data.train_features.shape == (6 * 784, 128)  # mobilenet_v2's default pooled_concat: 32 + 96
    assert data.test_features.shape == (data.num_test * 784, 128)
    assert data.grid == (28, 28)
    assert data.masks.shape == (data.num_test, 224, 224) and data.masks.dtype == bool
    assert data.projected.shape == (6 * 784, 128)
    assert data.labels.tolist() == [0, 0, 0] + [1] * (data.num_test - 3)
    assert data.image_labels[0] == "good/000.png"
    assert data.image_labels == state.image_labels("fabric")


def test_prepare_rejects_what_it_cannot_explore(root):
    with pytest.raises(ValueError, match="num_neighbors=1"):
        explorer.prepare(root, config=PatchCoreConfig(num_neighbors=3))
    with pytest.raises(ValueError, match="no category"):
        explorer.prepare(root, categories=["carpet"])


@pytest.mark.parametrize("size", [1, 5, 60, 700, 4704])
def test_neighbour_table_gives_the_plain_nearest_distance(state, size):
    data = state.data("fabric")
    subset = np.random.default_rng(size).choice(data.num_train, size, replace=False)
    table = data.test_table
    expected = NearestNeighbours(data.train_features[subset]).search(data.test_features, 1)[0][:, 0]
    got = table.nearest_in(subset)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    if size == 60:  # both paths were taken: table hits and fallback searches
        assert 0 < table.misses < len(data.test_features)


def test_update_equals_a_plain_patchcore_with_that_bank(fresh_state):
    data = fresh_state.data("fabric")
    stats = explorer.update(0.05, "random", image_index=5, cache=fresh_state)
    indices = select_coreset(data.train_features, 0.05, "random")
    assert np.array_equal(stats.indices, indices)
    assert stats.bank_size == len(indices) == int(data.num_train * 0.05)

    distances, _ = NearestNeighbours(data.train_features[indices]).search(data.test_features, 1)
    grid = distances[:, 0].reshape(data.num_test, 28, 28)
    maps = anomaly_map(grid)
    metrics = compute_metrics(data.labels, image_scores(grid), data.masks, maps)
    for name in ("image_auroc", "pixel_auroc", "aupro"):
        assert getattr(stats, name) == pytest.approx(metrics[name], abs=1e-4)
    np.testing.assert_allclose(stats.amap, maps[5], rtol=1e-4, atol=1e-4)
    assert stats.image_score == pytest.approx(float(grid[5].max()), rel=1e-5)
    assert stats.coverage_radius == pytest.approx(coverage_radius(data.projected, indices), rel=1e-4)
    assert stats.image_label == data.image_labels[5]


@pytest.mark.parametrize("sampler", ["approximate_greedy", "greedy"])
def test_greedy_prefixes_equal_fresh_runs(fresh_state, sampler):
    data = fresh_state.data("fabric")
    for ratio in [0.01, 0.1, 0.003, 0.05]:  # all prefixes of one run to 10 %
        stats = explorer.update(ratio, sampler, cache=fresh_state)
        assert np.array_equal(stats.indices, select_coreset(data.train_features, ratio, sampler))
        assert stats.run_size == int(data.num_train * 0.1)
    assert fresh_state.cache_info()["sampler_runs"] == 1


def test_a_ratio_above_10_percent_runs_the_greedy_sampler_to_100_percent(fresh_state):
    data = fresh_state.data("fabric")
    assert fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.01)
    explorer.update(0.01, "approximate_greedy", cache=fresh_state)
    assert not fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.1)
    assert fresh_state.will_run_sampler("fabric", "approximate_greedy", 0.3)
    assert not fresh_state.will_run_sampler("fabric", "random", 0.3)
    for ratio in [0.3, 0.02, 0.7]:
        stats = explorer.update(ratio, "approximate_greedy", cache=fresh_state)
        assert np.array_equal(stats.indices, select_coreset(data.train_features, ratio, "approximate_greedy"))
        assert stats.run_size == data.num_train
    assert fresh_state.cache_info()["sampler_runs"] == 2


def test_greedy_coverage_radius_shrinks_as_the_ratio_grows(fresh_state):
    data = fresh_state.data("fabric")
    ratios = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    # Asked for largest first, so the sampler runs once; the values do not depend on the order.
    radii = {r: explorer.update(r, "greedy", cache=fresh_state).coverage_radius for r in ratios[::-1]}
    radii = [radii[r] for r in ratios]
    assert all(later <= earlier for earlier, later in zip(radii, radii[1:])), radii
    assert radii[0] > 2 * radii[-1]
    last = explorer.update(0.01, "greedy", cache=fresh_state)
    assert last.coverage_radius == pytest.approx(coverage_radius(data.projected, last.indices), rel=1e-4)
    # The whole bank covers itself, whichever sampler picked it.
    assert explorer.update(1.0, "random", cache=fresh_state).coverage_radius == 0.0


def test_a_repeated_value_hits_the_cache(fresh_state, monkeypatch):
    calls = []

    def counting_select(*args, **kwargs):
        calls.append(args[1:])
        return select_coreset(*args, **kwargs)

    monkeypatch.setattr(explorer, "select_coreset", counting_select)
    first = explorer.update(0.02, "random", cache=fresh_state)
    info = fresh_state.cache_info()
    assert len(calls) == 1 and info["coreset_misses"] == 1 and info["score_misses"] == 1
    again = explorer.update(0.02, "random", image_index=3, cache=fresh_state)
    info = fresh_state.cache_info()
    assert len(calls) == 1, "the repeated ratio ran the sampler again"
    assert info["coreset_hits"] == 1 and info["score_hits"] == 1
    assert again.coreset_cached and again.scores_cached and not first.scores_cached
    assert again.image_auroc == first.image_auroc and np.array_equal(again.indices, first.indices)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, math.nan, math.inf, "0.1", True, None])
def test_update_rejects_a_ratio_outside_0_1(state, ratio):
    with pytest.raises(ValueError, match=r"coreset ratio must be in \(0, 1\]"):
        explorer.update(ratio, "random", cache=state)


def test_update_rejects_unknown_sampler_category_and_image(state):
    with pytest.raises(ValueError, match="unknown sampler 'kmeans'"):
        explorer.update(0.1, "kmeans", cache=state)
    with pytest.raises(ValueError, match="unknown category 'carpet'"):
        explorer.update(0.1, "random", "carpet", cache=state)
    with pytest.raises(ValueError, match=r"image_index must be in \[0, 11\)"):
        explorer.update(0.1, "random", image_index=11, cache=state)


def _png_of(output_widget) -> Image.Image:
    (output,) = output_widget.outputs
    return Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"])))


def test_the_slider_updates_stats_and_figure(fresh_state):
    widget = explorer.build_explorer(fresh_state, ratio=0.01)
    assert widget.stats.bank_size == 47 and widget.updates == 1
    assert "47 of 4,704 patches" in widget.stats_html.value
    assert _png_of(widget.plots_output).size[0] > 400
    assert "ready" in widget.status.value and not widget.ratio.disabled
    before_html, before_png = widget.stats_html.value, widget.last_png

    widget.ratio.value = 0.1
    assert widget.stats.bank_size == 470 and widget.updates == 2
    assert "470 of 4,704 patches" in widget.stats_html.value and widget.stats_html.value != before_html
    assert widget.last_png != before_png and _png_of(widget.plots_output).size[1] > 300

    statuses = []
    widget.status.observe(lambda change: statuses.append(change["new"]), names="value")
    widget.sampler.value = "greedy"
    assert widget.stats.sampler == "greedy" and "greedy" in widget.stats_html.value
    assert "running the greedy sampler" in statuses[0] and "ready" in statuses[-1]
    widget.image.value = 4
    assert widget.stats.image_label == fresh_state.data("fabric").image_labels[4]
    # The curve remembers every bank scored so far, one series per sampler.
    history = fresh_state.history("fabric")
    assert sorted(history) == ["approximate_greedy", "greedy"]
    assert [round(r, 4) for r, _, _ in history["approximate_greedy"]] == [0.01, 0.0999]


def test_busy_state_and_coalescing(fresh_state, monkeypatch):
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    seen = []
    real_update = explorer.update

    def update_with_changes_arriving(ratio, *args, **kwargs):
        seen.append((ratio, widget.ratio.disabled, widget.status.value))
        if len(seen) == 1:  # two changes arrive while this update runs
            widget.ratio.value = 0.1
            widget.ratio.value = 0.2
        return real_update(ratio, *args, **kwargs)

    monkeypatch.setattr(explorer, "update", update_with_changes_arriving)
    widget.ratio.value = 0.05
    ratios = [round(r, 3) for r, _, _ in seen]
    assert ratios == [0.05, 0.2], "the change in between should be coalesced, not stacked"
    assert all(disabled and "updating…" in status for _, disabled, status in seen)
    assert widget.stats.bank_size == int(4704 * 0.2) and widget.updates == 3
    assert not widget.ratio.disabled and "ready" in widget.status.value


def test_an_error_is_shown_and_the_controls_come_back(fresh_state, monkeypatch):
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")

    def failing_update(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(explorer, "update", failing_update)
    with pytest.raises(RuntimeError, match="disk full"):
        widget.ratio.value = 0.1
    assert "error: RuntimeError: disk full" in widget.status.value
    assert not widget.ratio.disabled


def test_switching_category_extracts_it_and_resets_the_image(fresh_state):
    widget = explorer.build_explorer(fresh_state, ratio=0.01, sampler="random")
    widget.image.value = 6
    assert not fresh_state.is_loaded("tiles")
    widget.category.value = "tiles"
    assert fresh_state.is_loaded("tiles")
    assert widget.stats.category == "tiles" and widget.image.value == 0
    assert [label for label, _ in widget.image.options] == fresh_state.data("tiles").image_labels
    assert len(widget.image.options) == 5 and widget.stats.num_train == 2 * 784
    assert widget.stats.image_label == "good/000.png"
