"""Tests for pcnotes.stages.s5_coreset: PatchCore's memory-bank subsampling.

No timing assertions here: speed is measured by benchmarks/coreset.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from pcnotes.stages import s5_coreset as cs
from pcnotes.fast import coreset as cf
from pcnotes.fast import coreset_reference

SAMPLER_FUNCTIONS = [cs.random_coreset, cs.greedy_coreset, cs.approximate_greedy_coreset]
GREEDY_FUNCTIONS = [cs.greedy_coreset, cs.approximate_greedy_coreset]


def gaussian_mixture(n: int, dim: int, seed: int = 0, clusters: int = 12) -> np.ndarray:
    """Clustered float32 features, a small stand-in for CNN patch features."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(clusters, dim))
    scales = rng.uniform(0.2, 1.0, size=clusters)
    labels = rng.integers(0, clusters, size=n)
    return (means[labels] + rng.normal(size=(n, dim)) * scales[labels, None]).astype(np.float32)


def brute_force_radius(features: np.ndarray, indices: np.ndarray) -> float:
    x = features.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, indices, :]) ** 2).sum(-1))
    return float(d.min(axis=1).max())


# --------------------------------------------------------------------------
# shapes, dtypes, sizes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
@pytest.mark.parametrize("n, ratio", [(1, 0.1), (10, 0.25), (97, 0.1), (500, 0.37)])
def test_output_shape_dtype_and_length(sampler, n, ratio):
    features = gaussian_mixture(n, 16)
    idx = sampler(features, ratio)
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.ndim == 1
    assert len(idx) == max(1, int(n * ratio))
    assert len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < n


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
def test_ratio_one_selects_every_point(sampler):
    features = gaussian_mixture(123, 8)
    idx = sampler(features, 1.0)
    assert np.array_equal(np.sort(idx), np.arange(123))


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_ratio_one_with_duplicates_still_selects_every_point(sampler):
    # Once every remaining point is at distance 0, the reference would repeat
    # an index; we select each point once.
    features = np.repeat(gaussian_mixture(5, 8), 4, axis=0)
    for loop in ("fast", "plain", "torch"):
        idx = sampler(features, 1.0, loop=loop)
        assert np.array_equal(np.sort(idx), np.arange(20)), loop


def test_random_coreset_is_sorted():
    idx = cs.random_coreset(np.zeros((1000, 3), np.float32), 0.1, seed=3)
    assert np.all(np.diff(idx) > 0)


def test_torch_and_numpy_inputs_agree():
    features = gaussian_mixture(300, 32)
    for sampler in SAMPLER_FUNCTIONS:
        a = sampler(features, 0.1, seed=1)
        b = sampler(torch.from_numpy(features), 0.1, seed=1)
        c = sampler(features.astype(np.float64), 0.1, seed=1)
        assert np.array_equal(a, b) and np.array_equal(a, c)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
@pytest.mark.parametrize("ratio, shown", [(0, "0"), (-0.1, "-0.1"), (1.5, "1.5"), (float("nan"), "nan"), ("0.1", "'0.1'"), (None, "None")])
def test_bad_ratio(sampler, ratio, shown):
    with pytest.raises(ValueError, match=r"coreset ratio must be in \(0, 1\], got " + shown):
        sampler(np.zeros((10, 4), np.float32), ratio)


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_features_must_be_2d(sampler, shape):
    with pytest.raises(ValueError, match=r"2-D.*shape \(" + ", ".join(map(str, shape))):
        sampler(np.zeros(shape, np.float32), 0.5)


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
def test_empty_bank(sampler):
    with pytest.raises(ValueError, match="empty"):
        sampler(np.zeros((0, 8), np.float32), 0.5)


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_non_finite_features(sampler):
    features = np.zeros((10, 4), np.float32)
    features[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        sampler(features, 0.5)


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_unknown_loop(sampler):
    with pytest.raises(ValueError, match="unknown loop .turbo..*fast, plain, torch, reference"):
        sampler(np.zeros((10, 4), np.float32), 0.5, loop="turbo")


def test_unknown_sampler_name_lists_valid_names():
    with pytest.raises(ValueError, match="'kmeans'.*random, greedy, approximate_greedy"):
        cs.select_coreset(np.zeros((10, 4), np.float32), 0.5, sampler="kmeans")


def test_bad_projection_and_start_points():
    features = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="projection_dim must be a positive integer, got 0"):
        cs.approximate_greedy_coreset(features, 0.5, projection_dim=0)
    with pytest.raises(ValueError, match="num_start_points must be a positive integer, got 0"):
        cs.approximate_greedy_coreset(features, 0.5, num_start_points=0)


def test_coverage_radius_rejects_bad_indices():
    features = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        cs.coverage_radius(features, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        cs.coverage_radius(features, np.array([10]))


# --------------------------------------------------------------------------
# dispatch and determinism
# --------------------------------------------------------------------------


def test_select_coreset_dispatches_by_name():
    features = gaussian_mixture(400, 16)
    assert set(cs.SAMPLERS) == {"random", "greedy", "approximate_greedy"}
    for name, function in cs.SAMPLERS.items():
        assert np.array_equal(cs.select_coreset(features, 0.1, name, seed=2), function(features, 0.1, seed=2))
    default = cs.select_coreset(features, 0.1)
    assert np.array_equal(default, cs.approximate_greedy_coreset(features, 0.1))


@pytest.mark.parametrize("sampler", SAMPLER_FUNCTIONS)
def test_same_seed_same_indices(sampler):
    features = gaussian_mixture(600, 200)  # 200 -> 128: the projection is used
    assert np.array_equal(sampler(features, 0.1, seed=5), sampler(features, 0.1, seed=5))


@pytest.mark.parametrize("sampler", [cs.random_coreset, cs.approximate_greedy_coreset])
def test_different_seed_different_indices(sampler):
    features = gaussian_mixture(600, 200)
    assert not np.array_equal(sampler(features, 0.1, seed=0), sampler(features, 0.1, seed=1))


def test_global_random_state_is_untouched():
    features = gaussian_mixture(300, 200)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    for sampler in SAMPLER_FUNCTIONS:
        sampler(features, 0.1, seed=9)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


# --------------------------------------------------------------------------
# the random projection and the starting distances
# --------------------------------------------------------------------------


def test_projection_equals_nn_linear_default_init():
    features = torch.from_numpy(gaussian_mixture(50, 300))
    for seed in (0, 7):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            linear = torch.nn.Linear(300, 128, bias=False)
        with torch.no_grad():
            expected = linear(features)
        assert torch.equal(cs.random_projection(features, 128, seed=seed), expected)


def test_projection_weights_bounds_and_seeding():
    dim = 400
    eye = torch.eye(dim)
    weights = cs.random_projection(eye, 128, seed=3).T  # (128, D): the weight itself
    bound = 1 / math.sqrt(dim)
    assert weights.shape == (128, dim)
    assert weights.abs().max() <= bound
    assert weights.abs().max() > 0.99 * bound  # uniform on the whole interval
    assert abs(weights.mean().item()) < 0.02 * bound
    assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.equal(weights, cs.random_projection(eye, 128, seed=3).T)
    assert not torch.equal(weights, cs.random_projection(eye, 128, seed=4).T)


def test_projection_is_skipped_when_dims_match_or_none():
    features = torch.from_numpy(gaussian_mixture(20, 128))
    assert cs.random_projection(features, 128) is features
    assert cs.random_projection(features, None) is features
    assert cs.random_projection(features, 64).shape == (20, 64)


def test_approximate_start_points_seed_distances_only():
    # The first choice is the argmax of the mean distance to the start points;
    # the start points themselves are not added.
    features = gaussian_mixture(500, 16, seed=4)
    start = np.random.default_rng(11).choice(500, 10, replace=False)
    mean_dist = np.sqrt(((features[:, None, :].astype(np.float64) - features[start]) ** 2).sum(-1)).mean(1)
    idx = cs.approximate_greedy_coreset(features, 0.02, seed=11, projection_dim=None)
    assert idx[0] == np.argmax(mean_dist)
    assert not set(start) <= set(idx)


def test_streamed_row_norms_equal_full_matrix(monkeypatch):
    points = torch.from_numpy(gaussian_mixture(700, 128, seed=2))
    full = torch.norm(coreset_reference.batchwise_distances(points, points), dim=1)  # the reference: N x N
    monkeypatch.setattr(cs, "_BLOCK_ENTRIES", 700 * 64)  # 64 rows per block, 11 blocks
    streamed = cs._distance_matrix_row_norms(points)
    torch.testing.assert_close(streamed, full.double(), rtol=1e-5, atol=1e-6)


def test_greedy_starts_at_largest_row_norm():
    features = gaussian_mixture(400, 32, seed=8)
    points = torch.from_numpy(features)
    expected_first = int(torch.argmax(torch.norm(coreset_reference.batchwise_distances(points, points), dim=1)))
    assert cs.greedy_coreset(features, 0.1, projection_dim=None)[0] == expected_first


# --------------------------------------------------------------------------
# the default path selects what it selected before the refactoring, and the plain loop agrees
# --------------------------------------------------------------------------


def _grid_with_duplicates() -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 4, indexing="ij"), -1).reshape(-1, 4).astype(np.float32)
    return np.concatenate([grid, grid[::7]])


# name in tests/data/coreset_selections_fb87a8c.npz -> (sampler, features, ratio, seed)
SAVED_CASES = {
    "approximate_3000x128_r0.1_s5": (cs.approximate_greedy_coreset, lambda: gaussian_mixture(3000, 128, seed=5), 0.1, 5),
    "approximate_2000x200_r0.05_s6": (cs.approximate_greedy_coreset, lambda: gaussian_mixture(2000, 200, seed=6), 0.05, 6),
    "greedy_2000x200_r0.05_s6": (cs.greedy_coreset, lambda: gaussian_mixture(2000, 200, seed=6), 0.05, 6),
    "approximate_6000x1024_r0.05_s1": (
        cs.approximate_greedy_coreset, lambda: gaussian_mixture(6000, 1024, seed=1, clusters=30), 0.05, 1,
    ),
    "approximate_repeated_200x8_r0.5_s0": (
        cs.approximate_greedy_coreset, lambda: np.repeat(gaussian_mixture(40, 8), 5, axis=0), 0.5, 0,
    ),
    "approximate_grid_681x4_r1.0_s0": (cs.approximate_greedy_coreset, _grid_with_duplicates, 1.0, 0),
    "approximate_tiny_1000x64_r0.2_s3": (
        cs.approximate_greedy_coreset, lambda: gaussian_mixture(1000, 64, seed=3) * np.float32(1e-3), 0.2, 3,
    ),
}  # fmt: skip
SAVED = np.load(Path(__file__).parent / "data" / "coreset_selections_fb87a8c.npz")


@pytest.mark.parametrize("name", sorted(SAVED_CASES))
def test_default_path_selects_what_commit_fb87a8c_selected(name):
    # The selections were saved from the code before the fast loop moved to
    # coreset_fast; the default path must keep them bit for bit.
    sampler, make, ratio, seed = SAVED_CASES[name]
    features = make()
    np.testing.assert_array_equal(sampler(features, ratio, seed=seed), SAVED[name])
    if len(features) <= 2000:
        np.testing.assert_array_equal(sampler(features, ratio, seed=seed, loop="torch"), SAVED[name])


@pytest.mark.parametrize("name", sorted(set(SAVED_CASES) - {"approximate_grid_681x4_r1.0_s0"}))
def test_plain_loop_selects_the_same_points(name):
    # float64 in the original axes against float32 in the principal axes:
    # the same at every position, as long as no two candidates are tied
    sampler, make, ratio, seed = SAVED_CASES[name]
    np.testing.assert_array_equal(sampler(make(), ratio, seed=seed, loop="plain"), SAVED[name])


def test_exact_ties_between_different_points_may_be_broken_differently():
    # On an integer grid float64 distances tie exactly; once rotated, float32
    # rounding breaks those ties, so the order can differ: the one exception.
    features = _grid_with_duplicates()
    plain = cs.approximate_greedy_coreset(features, 1.0, loop="plain")
    fast = cs.approximate_greedy_coreset(features, 1.0)
    assert np.array_equal(np.sort(plain), np.arange(len(features)))
    assert np.array_equal(np.sort(fast), np.arange(len(features)))
    first_difference = int(np.flatnonzero(plain != fast)[0])
    assert first_difference > 0
    # where they part, the two candidates are equally far from the selection so far
    chosen = features[plain[:first_difference]].astype(np.float64)
    distance = lambda i: np.sqrt(((chosen - features[i]) ** 2).sum(1)).min()  # noqa: E731
    assert distance(plain[first_difference]) == distance(fast[first_difference])


EXACT_CASES = [
    # (n, dim, ratio, seed)
    (1, 8, 0.5, 0),
    (2, 8, 1.0, 1),
    (7, 13, 1.0, 2),  # 13 dims: zero-padded to 16
    (150, 8, 0.3, 3),
    (1000, 64, 0.1, 4),
    (2000, 200, 0.05, 6),  # projected to 128
]


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
@pytest.mark.parametrize("n, dim, ratio, seed", EXACT_CASES)
def test_fast_torch_and_plain_select_the_same_points(sampler, n, dim, ratio, seed):
    features = gaussian_mixture(n, dim, seed=seed)
    plain = sampler(features, ratio, seed=seed, loop="plain")
    assert np.array_equal(sampler(features, ratio, seed=seed, loop="fast"), plain)
    assert np.array_equal(sampler(features, ratio, seed=seed, loop="torch"), plain)


def test_public_ties_fast_equals_plain():
    features = np.repeat(gaussian_mixture(40, 8), 5, axis=0)  # 5 copies of each point
    for sampler in GREEDY_FUNCTIONS:
        plain = sampler(features, 0.5, loop="plain")
        assert np.array_equal(sampler(features, 0.5, loop="fast"), plain)


# --------------------------------------------------------------------------
# the fast loop equals its lane-arithmetic reference loop, bit for bit
# --------------------------------------------------------------------------


class Alternating:
    """A stand-in for coreset_fast._Chooser that switches way every few steps."""

    def __init__(self, way, ways=None):
        self.calls = 0

    def next(self):
        self.calls += 1
        return [("flat", 3), ("prune", 5), ("flat32", 2), ("prune", 1)][self.calls % 4]

    def record(self, *args):
        pass


def _loops_agree(points: np.ndarray, keys: np.ndarray, num_select: int) -> np.ndarray:
    """Every way to run the fast loop, and the torch loop, equals lane_loop; returns its indices."""
    points = cf.pad_to_lanes(points)
    expected = cf.lane_loop(points, keys, num_select)
    for way in cf.WAYS:
        np.testing.assert_array_equal(cf.fast_loop(points, keys, num_select, way=way), expected, way)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cf, "_Chooser", Alternating)  # switch back and forth all the time
        np.testing.assert_array_equal(cf.fast_loop(points, keys, num_select), expected)
        n = len(points)  # five uneven parts for the flat pass, however small the bank
        patch.setattr(cf, "_even_parts", lambda _: np.array([0, n // 9, n // 3, n // 3, n // 2, n]))
        for way in ("flat", "flat32"):
            np.testing.assert_array_equal(cf.fast_loop(points, keys, num_select, way=way), expected)
    torch_loop = cf.torch_lane_loop(torch.from_numpy(points), torch.from_numpy(keys), num_select)
    np.testing.assert_array_equal(torch_loop, expected)
    return expected


@pytest.mark.parametrize("seed", range(4))
def test_loops_agree_on_random_points(seed):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(50, 2500)), int(rng.choice([8, 24, 40, 128]))
    points = gaussian_mixture(n, dim, seed=seed)
    keys = rng.uniform(0, 50, n).astype(np.float32)
    _loops_agree(points, keys, max(1, n // 7))


@pytest.mark.slow
def test_loops_agree_on_a_bank_that_needs_compaction():
    # 6000 points, 1500 steps: rows move often enough that the walk's row arrays are compacted
    rng = np.random.default_rng(7)
    points = gaussian_mixture(6000, 24, seed=7)
    keys = rng.uniform(0, 50, 6000).astype(np.float32)
    stats = {}
    cf.fast_loop(cf.pad_to_lanes(points), keys, 1500, stats=stats, way="prune")
    assert stats["compactions"] >= 1
    _loops_agree(points, keys, 1500)


def test_loops_agree_on_integer_grid_with_many_ties():
    # integer coordinates: distances are small integers, computed exactly, so
    # almost every comparison is a tie and the lowest index must win
    points = _grid_with_duplicates()
    keys = np.full(len(points), 1e9, np.float32)  # all equal: start at index 0
    selected = _loops_agree(points, keys, len(points))
    assert selected[0] == 0 and np.array_equal(np.sort(selected), np.arange(len(points)))


def test_loops_agree_on_identical_points():
    points = np.ones((300, 16), np.float32)
    keys = np.full(300, 3.0, np.float32)
    selected = _loops_agree(points, keys, 300)
    assert np.array_equal(selected, np.arange(300))  # all at distance 0: index order


@pytest.mark.parametrize("scale", [1e-21, 1e-3, 1e17])
def test_loops_agree_at_extreme_scales(scale):
    # tiny: squared distances underflow to subnormals / zero; huge: they overflow to inf
    points = gaussian_mixture(800, 16, seed=3) * np.float32(scale)
    keys = np.full(800, np.inf, np.float32)
    _loops_agree(points, keys, 200)


def test_pruning_walk_skips_most_distances_on_clustered_points():
    points = cf.pad_to_lanes(cf.rotate_to_principal_axes(torch.from_numpy(gaussian_mixture(3000, 64, seed=1))).numpy())
    stats = {}
    cf.fast_loop(points, np.full(3000, np.inf, np.float32), 300, stats=stats, way="prune")
    assert stats["prune_steps"] == 300 and stats["flat_steps"] == 0
    assert stats["rows_walked"] < 0.5 * stats["plain_distances"]
    assert stats["exact_distances"] < 0.1 * stats["plain_distances"]


def test_unknown_strategy():
    with pytest.raises(ValueError, match="way must be one of auto, flat, flat32, prune, brute, got 'both'"):
        cf.fast_loop(np.zeros((4, 8), np.float32), np.ones(4, np.float32), 2, way="both")


def _choices(cost_per_step, steps: int = 5000, ways=("flat", "prune")) -> dict:
    """Drive a _Chooser with made-up costs (seconds per step of each way, given the step number)."""
    chooser = cf._Chooser("auto", ways)
    done = dict.fromkeys(ways, 0)
    seconds = dict.fromkeys(ways, 0.0)
    t = 0
    while t < steps:
        name, count = chooser.next()
        cost = cost_per_step(name, t) * count
        chooser.record(name, count, cost, 0.0)
        done[name] += count
        seconds[name] += cost
        t += count
    return {"steps": done, "seconds": seconds}


@pytest.mark.parametrize("case", ["flat wins", "prune wins", "prune gets better", "flat gets better", "flat32 wins late"])
def test_chooser_takes_little_longer_than_always_running_the_fastest_way(case):
    # made-up seconds per step of each way, given the step number
    ways = ("flat", "flat32", "prune") if "flat32" in case else ("flat", "prune")
    cost = {
        "flat wins": lambda way, t: 1e-4 if way == "flat" else 5e-4,
        "prune wins": lambda way, t: 1e-4 if way == "flat" else 2e-5,
        "prune gets better": lambda way, t: 1e-4 if way == "flat" else 5e-4 + (2e-5 - 5e-4) * t / 5000,
        "flat gets better": lambda way, t: {"flat": 3e-4 if t < 2500 else 5e-5, "prune": 1e-4}[way],  # busy, then idle
        "flat32 wins late": lambda way, t: {"flat": 1e-4, "flat32": 2e-4 if t < 1500 else 6e-5, "prune": 5e-4}[way],
    }[case]  # fmt: skip
    run = _choices(cost, ways=ways)
    fastest = sum(min(cost(way, t) for way in ways) for t in range(5000))
    assert sum(run["seconds"].values()) < 1.15 * fastest, run


@numba.njit
def _lane_sums_of_rows(points, centre, num_blocks):
    out = np.empty(len(points), dtype=np.float32)
    for r in range(len(points)):
        out[r] = cf._lane_sum(points, r, centre, num_blocks)
    return out


@pytest.mark.parametrize("dim", [8, 16, 24, 128])
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e18])
def test_lane_sum_is_bit_identical_to_the_numpy_arithmetic(dim, scale):
    rng = np.random.default_rng(dim)
    points = (rng.normal(size=(300, dim)) * scale).astype(np.float32)
    centre = (rng.normal(size=dim) * scale).astype(np.float32)
    full = _lane_sums_of_rows(points, centre, dim // cf.LANES)
    with np.errstate(over="ignore"):  # at 1e18 the sums overflow to inf, in both
        np.testing.assert_array_equal(full, cf.lane_squared_distances(points, centre))
    # over the first blocks only: the same sum of the leading coordinates, never above the full one
    partial = _lane_sums_of_rows(points, centre, 1)
    np.testing.assert_array_equal(partial, cf.lane_squared_distances(points[:, :8].copy(), centre[:8].copy()))
    assert bool((partial <= full).all())


def test_pruning_slack_covers_rounding():
    # slack must exceed ((1 + g) / (1 - g))^3 with g = (n + 2) u / (1 - (n + 2) u)
    for dim in (8, 128, 1024, 4096):
        u = 2.0**-24
        g = (dim + 2) * u / (1 - (dim + 2) * u)
        assert cf._pruning_slack(dim) > ((1 + g) / (1 - g)) ** 3


def test_principal_axes_keep_every_distance_and_sort_the_variance():
    points = torch.from_numpy(gaussian_mixture(3000, 24, seed=2))
    rotated = cf.rotate_to_principal_axes(points, sample_size=500)
    exact = "donot_use_mm_for_euclid_dist"
    np.testing.assert_allclose(
        torch.cdist(rotated[:50], rotated, compute_mode=exact), torch.cdist(points[:50], points, compute_mode=exact), atol=1e-4
    )
    variance = rotated.var(dim=0)
    assert bool((variance[:-1] >= 0.8 * variance[1:]).all())  # largest first (up to sampling)
    assert float(rotated.mean(dim=0).abs().max()) < 1e-3


def test_plain_loop_is_greedy_k_center():
    # the textbook loop on a full distance matrix gives the same picks
    rng = np.random.default_rng(3)
    points = rng.normal(size=(300, 5))
    start = rng.uniform(size=300)
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    expected, min_dist = [], start.copy()
    for _ in range(30):
        expected.append(int(np.argmax(min_dist)))
        min_dist = np.minimum(min_dist, distances[:, expected[-1]])
    assert cs.greedy_k_center(points, 30, start).tolist() == expected


def test_greedy_k_center_starts_from_the_largest_row_norm_of_the_distance_matrix():
    points = np.random.default_rng(5).normal(size=(40, 3))
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    picks = cs.greedy_k_center(points, 5)
    assert picks[0] == int(np.argmax(np.linalg.norm(distances, axis=1)))
    np.testing.assert_array_equal(picks, cs.greedy_k_center(points, 5, np.linalg.norm(distances, axis=1)))


# --------------------------------------------------------------------------
# agreement with the reference loop (different rounding)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_fast_close_to_reference(sampler):
    features = gaussian_mixture(3000, 256, seed=12, clusters=30)
    fast = sampler(features, 0.1, loop="fast")
    reference = sampler(features, 0.1, loop="reference")
    assert np.mean(fast == reference) >= 0.99
    points = cs.random_projection(torch.from_numpy(features), 128).numpy()
    assert cs.coverage_radius(points, fast) == pytest.approx(cs.coverage_radius(points, reference), rel=1e-5)


# --------------------------------------------------------------------------
# properties of greedy k-center
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_greedy_is_nested_and_radius_shrinks(sampler):
    features = gaussian_mixture(2000, 32, seed=5)
    ratios = [0.01, 0.02, 0.05, 0.1, 0.2]
    runs = [sampler(features, r, projection_dim=None) for r in ratios]
    for small, large in zip(runs, runs[1:]):
        assert np.array_equal(large[: len(small)], small)  # the prefix property
    radii = [cs.coverage_radius(features, idx) for idx in runs]
    assert all(b <= a for a, b in zip(radii, radii[1:]))
    assert radii[-1] < radii[0]


def test_greedy_covers_better_than_random():
    features = gaussian_mixture(3000, 32, seed=6)
    greedy = cs.coverage_radius(features, cs.approximate_greedy_coreset(features, 0.05, projection_dim=None))
    random = cs.coverage_radius(features, cs.random_coreset(features, 0.05))
    assert greedy < random


def test_greedy_selects_the_far_outlier_first():
    features = gaussian_mixture(500, 8, seed=1)
    features[123] = 100.0
    for sampler in GREEDY_FUNCTIONS:
        assert sampler(features, 0.01, projection_dim=None)[0] == 123


# --------------------------------------------------------------------------
# coverage radius
# --------------------------------------------------------------------------


def test_coverage_radius_matches_brute_force(monkeypatch):
    features = gaussian_mixture(900, 20, seed=9)
    idx = np.random.default_rng(0).choice(900, 40, replace=False)
    monkeypatch.setattr(cs, "_BLOCK_ENTRIES", 40 * 100)  # 100 rows per block
    assert cs.coverage_radius(features, idx) == pytest.approx(brute_force_radius(features, idx), rel=1e-9)
    assert cs.coverage_radius(torch.from_numpy(features), list(idx)) == pytest.approx(brute_force_radius(features, idx))
    assert cs.coverage_radius(features, np.arange(900)) == 0.0


def test_progress_bar_can_be_forced(capsys):
    features = gaussian_mixture(200, 8)
    for loop in ("fast", "plain"):
        cs.approximate_greedy_coreset(features, 0.5, loop=loop, progress=True)
    assert "approximate greedy coreset" in capsys.readouterr().err
