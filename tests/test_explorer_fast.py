"""The explorer's exact fast paths equal the plain library functions they stand in for."""

import numpy as np
import pytest

import pcnotes.fast.explorer as explorer_fast
from pcnotes.stages.s5_coreset import coverage_radius
from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import aupro, pixel_auroc
from pcnotes.stages.s6_scoring import NearestNeighbours


@pytest.mark.parametrize("size", [1, 3, 40, 400])
def test_neighbour_table_gives_the_plain_nearest_distance(size):
    rng = np.random.default_rng(size)
    queries = rng.normal(size=(600, 20)).astype(np.float32)
    references = rng.normal(size=(400, 20)).astype(np.float32)
    table = explorer_fast.NeighbourTable(queries, references, 8)
    subset = rng.choice(400, size, replace=False)
    expected = NearestNeighbours(references[subset]).search(queries, 1)[0][:, 0]
    np.testing.assert_allclose(table.nearest_in(subset), expected, rtol=1e-5, atol=1e-4)
    if size == 40:  # both paths were taken: table hits and fallback searches
        assert 0 < table.misses < len(queries)
    with pytest.raises(ValueError, match="k >= 1"):
        explorer_fast.NeighbourTable(queries, references, 0)


@pytest.mark.parametrize("k", [1, 6, 400])
def test_prefix_nearest_gives_the_plain_nearest_distance_for_every_prefix(k):
    """Small k: most steps are computed; k = all references: all come from the table."""
    rng = np.random.default_rng(k)
    queries = rng.normal(size=(700, 24)).astype(np.float32)
    references = rng.normal(size=(400, 24)).astype(np.float32)
    order = rng.permutation(400)[:90]
    prefix = explorer_fast.PrefixNearest(explorer_fast.NeighbourTable(queries, references, k), order)
    for m in range(1, 91):
        expected = NearestNeighbours(references[order[:m]]).search(queries, 1)[0][:, 0]
        np.testing.assert_allclose(prefix.nearest(m), expected, rtol=1e-5, atol=1e-4)
    # A handful of steps per query, not one per (query, pick).
    assert 700 <= prefix.steps < 700 * 90 / 4
    with pytest.raises(ValueError, match=r"m must be in \[1, 90\]"):
        prefix.nearest(91)


def test_the_largest_prefix_distance_is_the_coverage_radius_of_every_prefix():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(500, 16)).astype(np.float32)
    order = rng.permutation(500)[:60]
    table = explorer_fast.NeighbourTable(points, points, 5)
    radius = explorer_fast.PrefixNearest(table, order).largest()
    expected = [coverage_radius(points, order[:m]) for m in range(1, 61)]
    np.testing.assert_allclose(radius, expected, rtol=1e-5)
    assert np.all(np.diff(radius) <= 0)


@pytest.mark.parametrize("grid, size, sigma", [((28, 28), (224, 224), 4.0), ((20, 30), (160, 240), 2.0),
                                               ((7, 5), (56, 40), 0.0)])
def test_map_operator_equals_anomaly_map(grid, size, sigma):
    scores = np.random.default_rng(2).gamma(2.0, 3.0, size=(4, *grid)).astype(np.float32)
    got = explorer_fast.MapOperator(grid, size, sigma)(scores)
    expected = anomaly_map(scores, size=size, sigma=sigma)
    assert got.shape == expected.shape == (4, *size) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.max())


@pytest.mark.parametrize("levels", [None, 7])
def test_pixel_metrics_equal_the_metrics_module(levels):
    rng = np.random.default_rng(3)
    masks = np.zeros((5, 32, 32), dtype=bool)
    masks[1, 4:12, 4:12] = masks[2, 20:23, 10:30] = masks[2, 2:4, 2:4] = masks[4, 10:28, 15:17] = True
    maps = (rng.random(masks.shape) + 0.7 * masks).astype(np.float32)
    if levels:  # many ties: a threshold cannot split tied pixels
        maps = np.round(maps * levels) / levels
    got = explorer_fast.PixelMetrics(masks)(maps)
    assert got == pytest.approx((pixel_auroc(masks, maps), aupro(masks, maps)), abs=1e-12)
    with pytest.raises(ValueError, match="do not match the masks"):
        explorer_fast.PixelMetrics(masks)(maps[:4])
    with pytest.raises(ValueError, match="both defective and defect-free"):
        explorer_fast.PixelMetrics(np.zeros((2, 4, 4), dtype=bool))
