"""Tests for pcnotes.coreset: PatchCore's memory-bank subsampling.

No timing assertions here: speed is measured by benchmarks/coreset.py.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import pytest
import torch
from tqdm import tqdm

from pcnotes import coreset as cs

SAMPLER_FUNCTIONS = [cs.random_coreset, cs.greedy_coreset, cs.approximate_greedy_coreset]
GREEDY_FUNCTIONS = [cs.greedy_coreset, cs.approximate_greedy_coreset]


def gaussian_mixture(n: int, dim: int, seed: int = 0, clusters: int = 12) -> np.ndarray:
    """Clustered float32 features, a small stand-in for CNN patch features."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, size=(clusters, dim))
    scales = rng.uniform(0.2, 1.0, size=clusters)
    labels = rng.integers(0, clusters, size=n)
    return (means[labels] + rng.normal(size=(n, dim)) * scales[labels, None]).astype(np.float32)


def no_bar():
    return tqdm(disable=True)


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
    for method in ("fast", "plain", "torch"):
        idx = sampler(features, 1.0, method=method)
        assert np.array_equal(np.sort(idx), np.arange(20)), method


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
def test_unknown_method(sampler):
    with pytest.raises(ValueError, match="unknown method 'turbo'.*fast, plain, torch, reference"):
        sampler(np.zeros((10, 4), np.float32), 0.5, method="turbo")


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
    full = torch.norm(cs._batchwise_distances(points, points), dim=1)  # the reference: N x N
    monkeypatch.setattr(cs, "_BLOCK_ENTRIES", 700 * 64)  # 64 rows per block, 11 blocks
    streamed = cs._distance_matrix_row_norms(points)
    torch.testing.assert_close(streamed, full.double(), rtol=1e-5, atol=1e-6)


def test_greedy_starts_at_largest_row_norm():
    features = gaussian_mixture(400, 32, seed=8)
    points = torch.from_numpy(features)
    expected_first = int(torch.argmax(torch.norm(cs._batchwise_distances(points, points), dim=1)))
    assert cs.greedy_coreset(features, 0.1, projection_dim=None)[0] == expected_first


# --------------------------------------------------------------------------
# exactness: fast == plain == torch (same arithmetic)
# --------------------------------------------------------------------------


EXACT_CASES = [
    # (n, dim, ratio, seed)
    (1, 8, 0.5, 0),
    (2, 8, 1.0, 1),
    (7, 13, 1.0, 2),  # 13 dims: zero-padded to 16
    (150, 8, 0.3, 3),
    (1000, 64, 0.1, 4),
    (3000, 128, 0.1, 5),
    (2000, 200, 0.05, 6),  # projected to 128
]


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
@pytest.mark.parametrize("n, dim, ratio, seed", EXACT_CASES)
def test_fast_equals_plain(sampler, n, dim, ratio, seed):
    features = gaussian_mixture(n, dim, seed=seed)
    plain = sampler(features, ratio, seed=seed, method="plain")
    assert np.array_equal(sampler(features, ratio, seed=seed, method="fast"), plain)
    if n <= 1000:
        assert np.array_equal(sampler(features, ratio, seed=seed, method="torch"), plain)


def _loops_agree(points: np.ndarray, keys: np.ndarray, num_select: int) -> np.ndarray:
    """Run plain, fast (one thread and all threads, every step split) and torch loops; assert equal indices."""
    points = cs._pad_to_lanes(points)
    plain = cs._plain_loop(points, keys, num_select, no_bar())
    fast = cs._fast_loop(points, keys, num_select, no_bar(), threads="one")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cs, "_PARALLEL_MIN_ROWS", 0)  # split every step, however small
        threaded = cs._fast_loop(points, keys, num_select, no_bar(), threads="all")
    torch_loop = cs._torch_loop(torch.from_numpy(points), torch.from_numpy(keys), num_select, no_bar())
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(threaded, plain)
    np.testing.assert_array_equal(torch_loop, plain)
    return plain


@pytest.mark.parametrize("seed", range(4))
def test_loops_agree_on_random_points(seed):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(50, 2500)), int(rng.choice([8, 24, 40, 128]))
    points = gaussian_mixture(n, dim, seed=seed)
    keys = rng.uniform(0, 50, n).astype(np.float32)
    _loops_agree(points, keys, max(1, n // 7))


def test_loops_agree_on_a_bank_that_needs_compaction():
    # 6000 points, 1500 steps: rows move often enough that the row arrays are compacted
    rng = np.random.default_rng(7)
    points = gaussian_mixture(6000, 24, seed=7)
    keys = rng.uniform(0, 50, 6000).astype(np.float32)
    stats = {}
    cs._fast_loop(cs._pad_to_lanes(points), keys, 1500, no_bar(), stats)
    assert stats["compactions"] >= 1
    _loops_agree(points, keys, 1500)


def test_loops_agree_on_integer_grid_with_many_ties():
    # integer coordinates: distances are small integers, computed exactly, so
    # almost every comparison is a tie and the lowest index must win
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 4, indexing="ij"), -1).reshape(-1, 4).astype(np.float32)
    points = np.concatenate([grid, grid[::7]])  # plus duplicates
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


def test_public_ties_fast_equals_plain():
    features = np.repeat(gaussian_mixture(40, 8), 5, axis=0)  # 5 copies of each point
    for sampler in GREEDY_FUNCTIONS:
        plain = sampler(features, 0.5, method="plain")
        assert np.array_equal(sampler(features, 0.5, method="fast"), plain)


def test_fast_loop_prunes():
    points = cs._pad_to_lanes(
        cs._rotate_to_principal_axes(torch.from_numpy(gaussian_mixture(3000, 64, seed=1))).numpy()
    )
    keys = np.full(3000, np.inf, np.float32)
    stats = {}
    cs._fast_loop(points, keys, 300, no_bar(), stats)
    assert stats["rows_walked"] < 0.5 * stats["plain_distances"]
    assert stats["exact_distances"] < 0.1 * stats["plain_distances"]


def test_principal_axes_keep_every_distance_and_sort_the_variance():
    points = torch.from_numpy(gaussian_mixture(3000, 24, seed=2))
    rotated = cs._rotate_to_principal_axes(points, sample_size=500)
    exact = "donot_use_mm_for_euclid_dist"
    np.testing.assert_allclose(
        torch.cdist(rotated[:50], rotated, compute_mode=exact), torch.cdist(points[:50], points, compute_mode=exact), atol=1e-4
    )
    variance = rotated.var(dim=0)
    assert bool((variance[:-1] >= 0.8 * variance[1:]).all())  # largest first (up to sampling)
    assert float(rotated.mean(dim=0).abs().max()) < 1e-3


def _run_choice(choice: cs._ThreadChoice, seconds_per_row, chunks: int = 60) -> list[bool]:
    """Feed a _ThreadChoice chunk costs from ``seconds_per_row(threads, chunk)``; return its choices."""
    used = []
    for chunk in range(chunks):
        threads = choice.use_threads()
        choice.record(threads, seconds_per_row(threads, chunk) * 1000, 1000)
        used.append(threads)
    return used


def test_thread_choice_fixed_modes_and_bad_mode():
    assert _run_choice(cs._ThreadChoice("all", 2), lambda t, c: 1.0, 5) == [True] * 5
    assert _run_choice(cs._ThreadChoice("one", 2), lambda t, c: 1.0, 5) == [False] * 5
    assert _run_choice(cs._ThreadChoice("all", 1), lambda t, c: 1.0, 5) == [False] * 5  # one thread to use
    with pytest.raises(ValueError, match="threads must be"):
        cs._ThreadChoice("both", 2)


def test_thread_choice_keeps_threads_when_they_are_faster(monkeypatch):
    monkeypatch.setattr(cs, "_cores_free_for", lambda threads: True)
    used = _run_choice(cs._ThreadChoice("measure", 2), lambda threads, chunk: 0.6 if threads else 1.0)
    assert used[:3] == [False, True, True]  # starts on one thread, tries all, keeps them
    trials = [chunk for chunk, threads in enumerate(used) if not threads][1:]
    assert np.diff(trials).tolist() == [3, 5, 9, 17, 17]  # one-thread trials get rarer


def test_thread_choice_stays_on_one_thread_when_threads_are_slower_or_cores_busy(monkeypatch):
    monkeypatch.setattr(cs, "_cores_free_for", lambda threads: True)
    used = _run_choice(cs._ThreadChoice("measure", 2), lambda threads, chunk: 5.0 if threads else 1.0)
    assert not used[0] and used.count(True) <= 6  # only the trials
    monkeypatch.setattr(cs, "_cores_free_for", lambda threads: False)
    used = _run_choice(cs._ThreadChoice("measure", 2), lambda threads, chunk: 0.5 if threads else 1.0)
    assert not any(used)


def test_thread_choice_falls_back_when_threads_become_slow(monkeypatch):
    monkeypatch.setattr(cs, "_cores_free_for", lambda threads: True)
    # threads win at first; from chunk 30 on another process slows them down 10x
    used = _run_choice(cs._ThreadChoice("measure", 2), lambda threads, chunk: (6.0 if chunk >= 30 else 0.6) if threads else 1.0)
    assert used[29] and used[30]  # (chunk 30 is the first slow one)
    assert not used[31]  # its cost brings a one-thread trial forward, which wins
    assert used[31:].count(True) <= 4  # threads only on ever rarer trials


def test_cores_free_for_answers_yes_or_no():
    assert cs._cores_free_for(1) in (True, False)
    assert cs._cores_free_for(10_000) is False or not os.path.exists("/proc/loadavg")


@numba.njit
def _lane_sums_of_rows(points, centre, num_blocks):
    out = np.empty(len(points), dtype=np.float32)
    for r in range(len(points)):
        out[r] = cs._lane_sum(points, r, centre, num_blocks)
    return out


@pytest.mark.parametrize("dim", [8, 16, 24, 128])
@pytest.mark.parametrize("scale", [1e-20, 1.0, 1e18])
def test_lane_sum_is_bit_identical_to_the_numpy_arithmetic(dim, scale):
    rng = np.random.default_rng(dim)
    points = (rng.normal(size=(300, dim)) * scale).astype(np.float32)
    centre = (rng.normal(size=dim) * scale).astype(np.float32)
    full = _lane_sums_of_rows(points, centre, dim // cs.LANES)
    with np.errstate(over="ignore"):  # at 1e18 the sums overflow to inf, in both
        np.testing.assert_array_equal(full, cs._lane_squared_distances(points, centre))
    # over the first blocks only: the same sum of the leading coordinates, never above the full one
    partial = _lane_sums_of_rows(points, centre, 1)
    np.testing.assert_array_equal(partial, cs._lane_squared_distances(points[:, :8].copy(), centre[:8].copy()))
    assert bool((partial <= full).all())


def test_pruning_slack_covers_rounding():
    # slack must exceed ((1 + g) / (1 - g))^3 with g = (n + 2) u / (1 - (n + 2) u)
    for dim in (8, 128, 1024, 4096):
        u = 2.0**-24
        g = (dim + 2) * u / (1 - (dim + 2) * u)
        assert cs._pruning_slack(dim) > ((1 + g) / (1 - g)) ** 3


# --------------------------------------------------------------------------
# agreement with the reference loop (different rounding)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", GREEDY_FUNCTIONS)
def test_fast_close_to_reference(sampler):
    features = gaussian_mixture(3000, 256, seed=12, clusters=30)
    fast = sampler(features, 0.1, method="fast")
    reference = sampler(features, 0.1, method="reference")
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
    for method in ("fast", "plain"):
        cs.approximate_greedy_coreset(features, 0.5, method=method, progress=True)
    assert "approximate greedy coreset" in capsys.readouterr().err
