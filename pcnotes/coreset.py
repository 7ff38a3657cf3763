"""Coreset subsampling of the PatchCore memory bank.

What problem does this solve?
-----------------------------
PatchCore stores one feature vector per image patch of every *normal*
training image: the **memory bank**, an array of shape ``(N, D)``.  With 200
training images and a 28 x 28 feature map that is already N = 156,800
patches, and every test patch must find its nearest neighbour in the bank.
The bank is mostly redundant (most patches of a carpet look like other
patches of the same carpet), so PatchCore keeps only a small subset of it,
e.g. 10 % or 1 %.

Which subset?  Uniform random sampling (:func:`random_coreset`) keeps the
common patches but easily drops the rare-but-normal ones (a screw thread
seen in only a few images); at test time those rare patches then look
anomalous.  PatchCore instead picks a **coreset**: a subset ``C`` such that
*every* bank point has a selected point nearby.  "Nearby" is measured by the
**coverage radius**::

    radius(C) = max over bank points x of  min over c in C of ||x - c||

(:func:`coverage_radius`).  Choosing the ``M`` points that minimise this
radius is the *k-center problem*; it is NP-hard, but the **greedy k-center**
algorithm (Gonzalez, 1985) is within a factor 2 of optimal:

1. start from one point;
2. repeatedly add the bank point that is *farthest from the current
   selection* (the worst-covered point), then update every point's distance
   to its nearest selected point: ``min_dist = min(min_dist, dist_to_new)``.

Each added point is, by construction, the point that currently defines the
coverage radius, so the radius shrinks as fast as a greedy method can make
it.  Rare patches are far from everything and therefore selected early.

The reference implementation (``patchcore-inspection``, Roth et al., CVPR
2022) makes two practical changes, mirrored here:

* distances are computed after a **random linear projection** to 128
  dimensions (Johnson-Lindenstrauss: distances are roughly preserved, and
  every distance costs 128 instead of 1024+ multiply-adds);
* the "approximate" variant does not start from one point: every point
  starts with the mean distance to 10 random *start points* (those only seed
  the distances; they are not part of the coreset).

Shapes used throughout: ``features`` is ``(N, D)``, the result is an
``np.ndarray`` of ``int64`` indices into ``features`` of shape ``(M,)`` with
``M = max(1, int(N * ratio))``.

Four implementations of the greedy loop (``method=``)
-----------------------------------------------------
``"plain"``
    a short numpy loop, the one to read first.
``"fast"`` (default)
    a numba kernel that selects *exactly the same indices* as ``"plain"``
    but skips most distance computations, using the triangle inequality and
    partial sums over the leading coordinates (the argument is written in
    section 4d of the source).  On a CUDA tensor
    ``"fast"`` runs the ``"torch"`` loop on the GPU instead.
``"torch"``
    the same arithmetic as ``"plain"`` in torch, written so that a GPU never
    waits for the host inside the loop (no ``.item()``), hence also exact.
``"reference"``
    the loop as written in ``patchcore-inspection`` (``a^2 - 2ab + b^2``,
    ``torch.cat`` + ``torch.min`` each step); it rounds differently, so it
    agrees with the others on >99 % of the indices, not all of them.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Callable, Union

import numba
import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "random_coreset",
    "approximate_greedy_coreset",
    "greedy_coreset",
    "coverage_radius",
    "random_projection",
    "SAMPLERS",
    "select_coreset",
    "check_ratio",
    "coreset_size",
    "METHODS",
]

ArrayLike = Union[torch.Tensor, np.ndarray]

METHODS = ("fast", "plain", "torch", "reference")

# Blocks of pairwise distances never exceed this many entries (16 MiB of
# float32): that is what "streamed" means below.
_BLOCK_ENTRIES = 1 << 22

# Show a progress bar (when stderr is a terminal) from this many iterations.
_PROGRESS_MIN_ITERATIONS = 1000


# --------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------


def check_ratio(ratio) -> float:
    """Return ``ratio`` as a float, or raise ValueError unless it is a real number in (0, 1]."""
    is_real = isinstance(ratio, numbers.Real) and not isinstance(ratio, bool)
    # NaN fails both comparisons, so it is rejected here as well.
    if not is_real or not (0 < ratio <= 1):
        raise ValueError(f"coreset ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def _check_features(features) -> torch.Tensor:
    """Validate the memory bank and return it as a float32 tensor of shape (N, D).

    numpy input is wrapped without a copy when it already is float32; a
    tensor stays on its device.
    """
    if isinstance(features, torch.Tensor):
        bank = features.detach()
    else:
        try:
            bank = torch.from_numpy(np.ascontiguousarray(np.asarray(features)))
        except TypeError as error:  # e.g. an object or string array
            raise ValueError(f"features must be a numeric (N, D) array: {error}") from None
    if bank.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array of shape (N, D), got shape {tuple(bank.shape)}"
        )
    if bank.shape[0] == 0:
        raise ValueError(
            f"the memory bank is empty (shape {tuple(bank.shape)}); nothing to subsample"
        )
    if bank.shape[1] == 0:
        raise ValueError(f"features have no dimensions (shape {tuple(bank.shape)})")
    if bank.dtype.is_complex or bank.dtype == torch.bool:
        raise ValueError(f"features must be real numbers, got dtype {bank.dtype}")
    bank = bank.to(torch.float32)
    if not bool(torch.isfinite(bank).all()):
        raise ValueError("features contain NaN or infinite values")
    return bank


def coreset_size(num_points: int, ratio: float) -> int:
    """M = int(N * ratio), but at least one point: the size every sampler keeps."""
    return max(1, int(num_points * check_ratio(ratio)))


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------
# 1. Random subsampling (the baseline)
# --------------------------------------------------------------------------


def random_coreset(features: ArrayLike, ratio: float, *, seed: int = 0) -> np.ndarray:
    """Uniformly random subset of the memory bank, without replacement.

    ``(N, D) -> (M,)`` int64 indices with ``M = max(1, int(N * ratio))``,
    returned **sorted in increasing order** (so ``features[idx]`` keeps the
    original patch order).  Uses ``np.random.default_rng(seed)``; the global
    random state is not touched.
    """
    ratio = check_ratio(ratio)
    bank = _check_features(features)
    n = bank.shape[0]
    chosen = np.random.default_rng(seed).choice(n, coreset_size(n, ratio), replace=False)
    return np.sort(chosen).astype(np.int64)


# --------------------------------------------------------------------------
# 2. Shared preparation: projection and starting distances
# --------------------------------------------------------------------------


def random_projection(
    features: torch.Tensor, projection_dim: int | None, *, seed: int = 0
) -> torch.Tensor:
    """Project ``(N, D) -> (N, projection_dim)`` with a random linear map.

    The weight is exactly what ``torch.nn.Linear(D, projection_dim,
    bias=False)`` would draw after ``torch.manual_seed(seed)`` (Kaiming
    uniform with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(D), 1/sqrt(D))``), but it
    comes from a private ``torch.Generator``, so the global random state is
    left alone.  As in the reference, nothing happens when ``D`` already
    equals ``projection_dim``; ``projection_dim=None`` also skips it.
    """
    in_dim = features.shape[1]
    if projection_dim is None or projection_dim == in_dim:
        return features
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(projection_dim, in_dim)  # drawn on the CPU, same on every device
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    with torch.no_grad():
        return torch.nn.functional.linear(features, weight.to(features.device))


def _mean_distance_to_start_points(points: torch.Tensor, start: np.ndarray) -> torch.Tensor:
    """``(N, d), (S,) -> (N,)`` float64: mean Euclidean distance to the start points.

    Computed directly from the differences (no ``a^2 - 2ab + b^2``
    expansion, so no cancellation), once, whatever the method chosen later.
    """
    anchors = points[torch.as_tensor(start, device=points.device)]
    distances = torch.cdist(points, anchors, compute_mode="donot_use_mm_for_euclid_dist")
    return distances.mean(dim=1, dtype=torch.float64)


def _distance_matrix_row_norms(points: torch.Tensor) -> torch.Tensor:
    """``(N, d) -> (N,)`` float64: ``torch.norm(distance_matrix, dim=1)`` without the matrix.

    The reference builds the full ``N x N`` matrix ``dist[i, j] = ||x_i - x_j||``
    and takes the L2 norm of each row.  Since ``||row_i||^2 = sum_j dist[i, j]^2``
    we only need running sums of squared distances, one block of rows at a
    time: memory ``O(N * block)`` instead of ``O(N^2)``.  The block arithmetic
    is the reference's (``a^2 + b^2 - 2ab`` in float32, clamped at 0); the
    row sums are accumulated in float64.
    """
    n = points.shape[0]
    sq_norms = (points * points).sum(dim=1)
    rows_per_block = max(1, _BLOCK_ENTRIES // n)
    row_sums = torch.empty(n, dtype=torch.float64, device=points.device)
    for start in range(0, n, rows_per_block):
        block = points[start : start + rows_per_block]
        sq_dist = (sq_norms[start : start + rows_per_block, None] + sq_norms[None, :]) - 2.0 * (
            block @ points.T
        )
        row_sums[start : start + rows_per_block] = sq_dist.clamp_(min=0).sum(dim=1, dtype=torch.float64)
    return row_sums.sqrt()


def _rotate_to_principal_axes(points: torch.Tensor) -> torch.Tensor:
    """``(N, d) -> (N, d)``: the same points, centred and expressed in their
    principal axes (largest variance first).

    A translation plus a rotation changes no distance, so the greedy choices
    are the same in both coordinate systems (up to float32 rounding).  What
    changes is *where* the distance lives: for CNN patch features the first
    16 coordinates typically carry ~90 % of every squared distance, so a sum
    over them alone is a strong lower bound, which the fast loop uses to
    skip most exact distances.  (Computed in float32 with a float64
    eigendecomposition of the d x d covariance; any orthonormal basis would
    keep every distance.)
    """
    mean = points.mean(dim=0, dtype=torch.float64).to(points.dtype)
    centred = points - mean
    _, axes = torch.linalg.eigh((centred.T @ centred).double())  # eigenvalues ascending
    return centred @ axes.flip(dims=(1,)).to(points.dtype)


# --------------------------------------------------------------------------
# 3. The distance arithmetic shared by "plain", "torch" and "fast"
# --------------------------------------------------------------------------
#
# For "fast" to select *exactly* the indices of "plain", both must compute
# every squared distance with bit-identical float32 arithmetic.  Floating
# point addition is not associative, so we fix the summation order:
#
#   * the dimensions are split into LANES = 8 interleaved lanes: lane l
#     accumulates (x_k - c_k)^2 for k = l, l + 8, l + 16, ... in that order;
#   * the 8 lane sums are folded in halves: (a0+a4, a1+a5, a2+a6, a3+a7),
#     then ((a0+a4)+(a2+a6), (a1+a5)+(a3+a7)), then their sum.
#
# Why this order, and float32?  Every step is an ordinary, correctly rounded
# elementwise operation, so numpy (16 additions of (N, 8) slices) and torch
# reproduce it bit for bit, and a compiled loop can use SIMD *without*
# fast-math (fast-math would let the compiler reorder the sum and break the
# equality): the fast kernel copies each point's 8-float lane blocks side by
# side and adds whole blocks elementwise.  float32 is what the reference uses
# and halves the memory traffic.  Feature dimensions are zero-padded to a
# multiple of 8; padded terms are exactly 0 and do not change any sum.
#
# Keys are *squared* distances: sqrt is monotone, so the greedy choices only
# need squared values, and we save a sqrt per distance.

LANES = 8


def _pad_to_lanes(points: np.ndarray) -> np.ndarray:
    """``(N, d) -> (N, ceil(d / 8) * 8)`` C-contiguous float32, zero-padded."""
    n, d = points.shape
    padded_dim = -(-d // LANES) * LANES
    if padded_dim == d:
        return np.ascontiguousarray(points, dtype=np.float32)
    out = np.zeros((n, padded_dim), dtype=np.float32)
    out[:, :d] = points
    return out


def _lane_squared_distances(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``(N, d), (d,) -> (N,)`` float32 squared distances in the canonical order.

    ``d`` must be a multiple of :data:`LANES` (see :func:`_pad_to_lanes`).
    """
    diff = points - centre
    squares = (diff * diff).reshape(len(points), -1, LANES)  # (N, d/8, 8)
    lane_sums = squares[:, 0, :].copy()
    for block in range(1, squares.shape[1]):  # left to right within each lane
        lane_sums += squares[:, block, :]
    while lane_sums.shape[1] > 1:  # fold 8 -> 4 -> 2 -> 1
        half = lane_sums.shape[1] // 2
        lane_sums = lane_sums[:, :half] + lane_sums[:, half:]
    return lane_sums[:, 0]


def _torch_lane_squared_distances(points: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Same as :func:`_lane_squared_distances`, in torch (any device)."""
    diff = points - centre
    squares = (diff * diff).view(points.shape[0], -1, LANES)
    lane_sums = squares[:, 0, :].clone()
    for block in range(1, squares.shape[1]):
        lane_sums += squares[:, block, :]
    while lane_sums.shape[1] > 1:
        half = lane_sums.shape[1] // 2
        lane_sums = lane_sums[:, :half] + lane_sums[:, half:]
    return lane_sums[:, 0]


# The selected centre's key is set to this value: it is below every squared
# distance, so it is never selected twice (this matters only once every
# remaining point has distance 0, e.g. duplicated patches, where the reference
# would return the same index again and again).
_SELECTED = -1.0


# --------------------------------------------------------------------------
# 4a. The plain greedy loop (read this one)
# --------------------------------------------------------------------------


def _plain_loop(points: np.ndarray, keys: np.ndarray, num_select: int, progress_bar) -> np.ndarray:
    """Greedy k-center in numpy.

    ``points``: ``(N, d)`` float32, d a multiple of 8; ``keys``: ``(N,)``
    float32 starting squared distances.  Returns ``(num_select,)`` int64.
    """
    keys = keys.copy()
    selected = np.empty(num_select, dtype=np.int64)
    for t in range(num_select):
        centre = int(np.argmax(keys))  # the worst-covered point; ties -> lowest index
        selected[t] = centre
        keys[centre] = _SELECTED
        # every point's squared distance to its nearest selected point
        np.minimum(keys, _lane_squared_distances(points, points[centre]), out=keys)
        progress_bar.update(1)
    return selected


# --------------------------------------------------------------------------
# 4b. The torch loop: same arithmetic, no host synchronisation (for GPUs)
# --------------------------------------------------------------------------


def _torch_loop(points: torch.Tensor, keys: torch.Tensor, num_select: int, progress_bar) -> np.ndarray:
    """Greedy k-center in torch on ``points.device``; exact twin of :func:`_plain_loop`.

    On a GPU, ``tensor.item()`` (or ``int(tensor)``) inside the loop would
    make the host wait for the device at every step.  Here the chosen index
    stays a 0-d device tensor: it is written into a preallocated device
    tensor, used for ``index_select`` and ``index_fill_``, and the indices
    are copied to the host once, at the end.  ``torch.argmax`` returns the
    first maximal index, like ``np.argmax``.
    """
    keys = keys.clone()
    selected = torch.empty(num_select, dtype=torch.int64, device=points.device)
    with torch.no_grad():
        for t in range(num_select):
            centre = torch.argmax(keys).view(1)
            selected[t : t + 1] = centre
            keys.index_fill_(0, centre, _SELECTED)
            distances = _torch_lane_squared_distances(points, points.index_select(0, centre))
            torch.minimum(keys, distances, out=keys)
            progress_bar.update(1)  # counts queued steps on a GPU
    return selected.cpu().numpy()


# --------------------------------------------------------------------------
# 4c. The reference loop (patchcore-inspection's arithmetic)
# --------------------------------------------------------------------------


def _batchwise_distances(matrix_a: torch.Tensor, matrix_b: torch.Tensor) -> torch.Tensor:
    """``(N, d), (M, d) -> (N, M)`` Euclidean distances, written as in the reference."""
    a_times_a = matrix_a.unsqueeze(1).bmm(matrix_a.unsqueeze(2)).reshape(-1, 1)
    b_times_b = matrix_b.unsqueeze(1).bmm(matrix_b.unsqueeze(2)).reshape(1, -1)
    a_times_b = matrix_a.mm(matrix_b.T)
    return (-2 * a_times_b + a_times_a + b_times_b).clamp(0, None).sqrt()


def _reference_loop(
    points: torch.Tensor, start_distances: torch.Tensor, num_select: int, progress_bar=None
) -> np.ndarray:
    """The greedy loop of ``patchcore-inspection`` (ApproximateGreedyCoresetSampler).

    ``points``: ``(N, d)`` float32; ``start_distances``: ``(N,)`` (not
    squared).  Kept for comparisons and benchmarks: it rounds differently
    from the other loops (expanded ``a^2 - 2ab + b^2``, then sqrt), and it
    synchronises with the device every step (``.item()``).  Unlike the
    reference's exact sampler it never builds the ``N x N`` matrix: each
    step computes one column, with the same formula.
    """
    anchor = start_distances.to(device=points.device, dtype=points.dtype).reshape(-1, 1)
    selected = []
    with torch.no_grad():
        for _ in range(num_select):
            select_idx = torch.argmax(anchor).item()
            selected.append(select_idx)
            new_distances = _batchwise_distances(points, points[select_idx : select_idx + 1])
            anchor = torch.cat([anchor, new_distances], dim=-1)
            anchor = torch.min(anchor, dim=1).values.reshape(-1, 1)
            if progress_bar is not None:
                progress_bar.update(1)
    return np.array(selected, dtype=np.int64)


# --------------------------------------------------------------------------
# 4d. The fast loop: numba, pruning, exact
# --------------------------------------------------------------------------
#
# Data structure.  Every point not yet selected belongs to one *slot*:
#   * slots 0 .. F-1 are "free" blocks: points whose key is still the
#     starting value (not a distance to a selected point);
#   * slot F + t holds the points whose key was last lowered by the t-th
#     selected centre c_t; we call them the *cluster* of c_t.
# The points of a slot are stored in consecutive *rows* seg_start ..
# seg_start + seg_size - 1 of the row arrays (coordinates, key, original
# index, "alive" flag, and the first 16 coordinates again, dimension-major:
# ``dims16[k, row]``, so that a run of rows is 16 contiguous streams), in
# order of decreasing key (ties: increasing original index).  A point that
# leaves a slot is copied to its new slot and its old row is only marked
# dead, which keeps the order; a slot is squeezed when it holds more dead
# rows than live ones.  So the first row of a slot is its largest key:
# seg_max, seg_arg (its original index); seg_skip_at is the
# centre-to-centre squared distance from which the whole slot may be
# skipped.  Scanning a slot reads memory in order, which matters more than
# arithmetic here.
#
# Invariant: a live point x in the cluster of c has  key(x) == q(x, c), the
# canonical squared distance.  (A selected point leaves its slot; in the
# plain loop its key is -1, so it could neither move nor be chosen again.)
#
# One step (new centre c):
#   1. c = the largest slot maximum, ties to the lowest original index: this
#      is exactly np.argmax(keys) of the plain loop;
#   2. for each cluster s with centre c_s, compute B = q(c, c_s) (first a
#      lower bound, its sum over the first 32 coordinates) and skip the whole
#      cluster when  B >= seg_skip_at[s] = 4 * slack * seg_max[s];  in a
#      scanned cluster, skip the tail of rows with  B >= 4 * slack * key(x)
#      (triangle inequality, proof below; keys decrease along the slot);
#   3. for the remaining rows compute the canonical sum over the first 16
#      coordinates (the first two lane blocks; one vectorised pass), then,
#      for the rows that survive, over the first 32; drop x as soon as such a
#      partial sum is >= key(x) (exact, see below); otherwise compute
#      q(x, c).  Points whose key drops move to the cluster of c.
#
# Why the triangle test is exact.  Write d for true Euclidean distances and
# q~ for computed float32 squared distances.  Triangle inequality:
#     d(x, c) >= d(c, c_s) - d(x, c_s).
# If d(c, c_s) >= 2 d(x, c_s) then d(x, c) >= d(x, c_s): c is not closer than
# x's current centre, min(key(x), q(x, c)) == key(x), and computing q(x, c)
# would change nothing; if that holds for the farthest member of the cluster
# (key = seg_max), it holds for all of them, and in general for every row
# whose key is small enough.  Rounding: each q~ is a sum of n
# nonnegative rounded terms, so |q~ - d^2| <= g * d^2 with
# g = (n + 2) u / (1 - (n + 2) u), u = 2^-24, in *any* summation order (this
# also covers the fast-math B, and B over the first 16 or 32 coordinates,
# which is <= the full sum), as long as nothing under- or overflows.  With
# slack >= ((1 + g) / (1 - g))^3 (we use 1 + 8 (n + 3) u),
# B >= 4 * slack * key(x) gives d(c, c_s) >= 2 r d(x, c_s) with
# r = (1 + g) / (1 - g), hence d(x, c) >= (2r - 1) d(x, c_s) >= r d(x, c_s),
# and so q~(x, c) >= key(x).  Underflow (subnormal terms) adds an absolute
# error below 2^-120, negligible against keys >= 2^-64 (the slack has room
# for it), and keys above 2^100 might come from overflow: so a cluster is
# pruned only if every positive key in it lies in [2^-64, 2^100] (keys <= 0
# cannot drop); otherwise its seg_skip_at is +inf and all its rows are
# visited.  Free points have no
# centre, so free slots are always scanned.  B only decides *whether* to
# visit; it is never a key.
#
# Why the partial sums are exact.  In round-to-nearest arithmetic fl(a + b)
# is nondecreasing in a and in b.  A lane sum only ever adds nonnegative
# terms, so it never decreases, and the final fold is made of additions
# only: so the canonical q~(x, c) is >= the same fold applied to the lane
# sums after the first blocks.  If that partial value is already >= key(x),
# then min(key(x), q~(x, c)) == key(x), with no error margin needed.  (The
# points are in principal axes, so the first 16 coordinates usually hold
# most of the distance; see _rotate_to_principal_axes.)
#
# Parallelism: a step whose scanned slots hold many points splits those
# slots into one contiguous run per thread (about equal numbers of points).
# Every slot belongs to exactly one run, so no two threads write to the same
# row and the result does not depend on the split.  Each step must finish
# before the next one starts, so a parallel step costs two thread hand-offs:
# cheap on an idle machine, but milliseconds when other processes compete
# for the cores: a waiting thread may not get a core back for a whole
# scheduler time slice (measured with benchmarks/coreset.py).  Hence only
# steps with at least _PARALLEL_MIN_MEMBERS points to visit use more than
# one thread, and only when the load average says the cores are free.

_KEY_FLOOR = np.float32(2.0**-64)
_KEY_CEIL = np.float32(2.0**100)
_NOT_A_POINT = np.iinfo(np.int64).max  # seg_arg of a slot without any point
_BATCH = 32  # points per distance tile: 32 x 128 floats = 16 KiB, fits in L1
_CHUNK = 256  # rows per vectorised pass of 16-coordinate sums
_PREFIX_BLOCKS = 2  # first test: the first 2 * 8 = 16 (principal) coordinates
_PREFIX_DIMS = LANES * _PREFIX_BLOCKS
_MIDDLE_BLOCKS = 4  # second test: the first 32 coordinates (128 bytes of a row)
_PARALLEL_MIN_MEMBERS = 8192  # rows to visit: about 50 microseconds of work
_ROW_PADDING = 64  # spare rows at the end: vectorised passes may read a little past a slot
_SHORT_VISIT = 12  # visits of at most this many rows of a slot use a scalar loop


def _parallel_min_members() -> int:
    """Smallest step worth splitting over threads: ``_PARALLEL_MIN_MEMBERS`` when
    the 1-minute load average leaves a free core for every thread, else never."""
    threads = numba.get_num_threads()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        busy = 0.0
    free_cores = (os.cpu_count() or 1) - busy
    return _PARALLEL_MIN_MEMBERS if threads > 1 and free_cores >= threads - 0.5 else np.iinfo(np.int64).max


def _pruning_slack(padded_dim: int) -> float:
    """Safety factor on the triangle inequality that absorbs float32 rounding."""
    return 1.0 + 8.0 * (padded_dim + 3) * 2.0**-24


@numba.njit(cache=True)
def _fill_centre_tile(row, centre_tile):
    """Repeat the centre once per tile column: ``centre_tile[b, 8p + l] = row[8b + l]``.

    ``(d,) -> (d / 8, 8 * _BATCH)``, the layout of :func:`_tile_squared_distances`.
    """
    for b in range(centre_tile.shape[0]):
        for j in range(centre_tile.shape[1]):
            centre_tile[b, j] = row[8 * b + j % 8]


@numba.njit(cache=True)
def _tile_squared_distances(coords, candidates, centre_tile, tile, lane_sums, out):
    """Canonical squared distances from ``len(candidates) <= _BATCH`` rows to the centre.

    Only the first ``tile.shape[0]`` lane blocks are summed (all of them for
    an exact distance).  Same arithmetic as :func:`_lane_squared_distances`,
    vectorised *across points*: the rows are copied into ``tile[b, 8p + l] =
    coords[candidates[p], 8b + l]``, so that lane l of point p is column
    ``8p + l`` and every block is one long elementwise loop.  The compiler
    vectorises it without reordering any addition: each column is still
    summed block after block, then the 8 lanes of a point are folded in halves.
    """
    count = len(candidates)
    blocks = tile.shape[0]
    for p in range(count):
        row = coords[candidates[p]]
        for b in range(blocks):
            source = row[8 * b : 8 * b + 8]
            target = tile[b, 8 * p : 8 * p + 8]
            for lane in range(8):
                # unsigned indices: no negative-index handling, so loops vectorise
                target[np.uint64(lane)] = source[np.uint64(lane)]
    width = 8 * count
    for j in range(width):
        lane_sums[np.uint64(j)] = 0.0  # 0 + x == x exactly, as in the numpy version's copy
    for b in range(blocks):
        block = tile[b]
        centre_block = centre_tile[b]
        for i in range(width):
            j = np.uint64(i)
            diff = block[j] - centre_block[j]
            lane_sums[j] += diff * diff
    for p in range(count):
        a = 8 * p
        out[p] = ((lane_sums[a] + lane_sums[a + 4]) + (lane_sums[a + 2] + lane_sums[a + 6])) + (
            (lane_sums[a + 1] + lane_sums[a + 5]) + (lane_sums[a + 3] + lane_sums[a + 7])
        )


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _bound_squared_distance(points, i, j):
    """Squared distance between rows i and j, summed in any order: pruning decisions only."""
    total = np.float32(0.0)
    for b in range(points.shape[1]):
        diff = points[i, np.uint64(b)] - points[j, np.uint64(b)]
        total += diff * diff
    return total


@numba.njit(cache=True)
def _sq(x, c):
    diff = x - c
    return diff * diff


@numba.njit(cache=True)
def _prefix_sums(dims16, start, stop, c, out):
    """``out[r - start]`` = canonical sum over the first 16 coordinates, rows ``start .. stop - 1``.

    ``dims16[k, r]`` holds coordinate k of row r and ``c`` those of the
    centre, so this loop reads 16 contiguous streams and the compiler
    vectorises it across rows.  Lane l is ``(x_l - c_l)^2 + (x_{8+l} -
    c_{8+l})^2``, in the canonical order.  (Points with only 8 coordinates
    use :func:`_prefix_sums_8`.)
    """
    x0, x1, x2, x3 = dims16[0, start:stop], dims16[1, start:stop], dims16[2, start:stop], dims16[3, start:stop]
    x4, x5, x6, x7 = dims16[4, start:stop], dims16[5, start:stop], dims16[6, start:stop], dims16[7, start:stop]
    x8, x9, x10, x11 = dims16[8, start:stop], dims16[9, start:stop], dims16[10, start:stop], dims16[11, start:stop]
    x12, x13, x14, x15 = dims16[12, start:stop], dims16[13, start:stop], dims16[14, start:stop], dims16[15, start:stop]
    for i in range(stop - start):
        # An unsigned index: numba then skips its negative-index (wrap-around)
        # handling, which would otherwise keep LLVM from vectorising the loop.
        r = np.uint64(i)
        a0 = _sq(x0[r], c[0]) + _sq(x8[r], c[8])
        a1 = _sq(x1[r], c[1]) + _sq(x9[r], c[9])
        a2 = _sq(x2[r], c[2]) + _sq(x10[r], c[10])
        a3 = _sq(x3[r], c[3]) + _sq(x11[r], c[11])
        a4 = _sq(x4[r], c[4]) + _sq(x12[r], c[12])
        a5 = _sq(x5[r], c[5]) + _sq(x13[r], c[13])
        a6 = _sq(x6[r], c[6]) + _sq(x14[r], c[14])
        a7 = _sq(x7[r], c[7]) + _sq(x15[r], c[15])
        out[r] = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))


@numba.njit(cache=True)
def _prefix_sums_8(dims8, start, stop, c, out):
    """:func:`_prefix_sums` for points with only 8 (padded) coordinates."""
    x0, x1, x2, x3 = dims8[0, start:stop], dims8[1, start:stop], dims8[2, start:stop], dims8[3, start:stop]
    x4, x5, x6, x7 = dims8[4, start:stop], dims8[5, start:stop], dims8[6, start:stop], dims8[7, start:stop]
    for i in range(stop - start):
        r = np.uint64(i)
        a0 = _sq(x0[r], c[0])
        a1 = _sq(x1[r], c[1])
        a2 = _sq(x2[r], c[2])
        a3 = _sq(x3[r], c[3])
        a4 = _sq(x4[r], c[4])
        a5 = _sq(x5[r], c[5])
        a6 = _sq(x6[r], c[6])
        a7 = _sq(x7[r], c[7])
        out[r] = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))


@numba.njit(cache=True)
def _dim_major_squared_distances(dims, count, c, out):
    """``out[j] = sum_k (dims[k, j] - c[k])^2`` for ``j < count``, any summation order.

    For pruning bounds only (not the canonical order); vectorised across j.
    """
    for j in range(count):
        out[np.uint64(j)] = 0.0
    for k in range(dims.shape[0]):
        row = dims[k]
        ck = c[k]
        for j in range(count):
            u = np.uint64(j)
            diff = row[u] - ck
            out[u] += diff * diff


@numba.njit(cache=True)
def _row_prefix_sum(dims16, r, c):
    """Canonical sum over the first 16 (or 8) coordinates of one row (scalar twin of _prefix_sums)."""
    a0 = _sq(dims16[0, r], c[0])
    a1 = _sq(dims16[1, r], c[1])
    a2 = _sq(dims16[2, r], c[2])
    a3 = _sq(dims16[3, r], c[3])
    a4 = _sq(dims16[4, r], c[4])
    a5 = _sq(dims16[5, r], c[5])
    a6 = _sq(dims16[6, r], c[6])
    a7 = _sq(dims16[7, r], c[7])
    if dims16.shape[0] == 16:
        a0 += _sq(dims16[8, r], c[8])
        a1 += _sq(dims16[9, r], c[9])
        a2 += _sq(dims16[10, r], c[10])
        a3 += _sq(dims16[11, r], c[11])
        a4 += _sq(dims16[12, r], c[12])
        a5 += _sq(dims16[13, r], c[13])
        a6 += _sq(dims16[14, r], c[14])
        a7 += _sq(dims16[15, r], c[15])
    return ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))


@numba.njit(cache=True)
def _select_next_centre(seg_max, seg_arg, num_slots):
    """np.argmax(keys) from the slot summaries: the slot holding it."""
    best_slot = 0
    for s in range(1, num_slots):
        if seg_max[s] > seg_max[best_slot] or (seg_max[s] == seg_max[best_slot] and seg_arg[s] < seg_arg[best_slot]):
            best_slot = s
    return best_slot


@numba.njit(cache=True)
def _copy_rows(rows, source, target, count):
    """Copy rows ``source .. source + count - 1`` to ``target ..`` (forward, so
    the ranges may overlap when ``target <= source``)."""
    coords, dims16, keys, index, alive = rows
    dim = coords.shape[1]
    flat = coords.reshape(-1)  # rows are contiguous
    for i in range(count * dim):
        flat[np.uint64(target * dim + i)] = flat[np.uint64(source * dim + i)]
    for k in range(dims16.shape[0]):
        for i in range(count):
            dims16[k, np.uint64(target + i)] = dims16[k, np.uint64(source + i)]
    for i in range(count):
        keys[target + i] = keys[source + i]
        index[target + i] = index[source + i]
        alive[target + i] = alive[source + i]


@numba.njit(cache=True)
def _squeeze_slot(rows, seg_start, seg_size, s):
    """Drop the removed rows of slot s: slide its live rows together, in order."""
    alive = rows[4]
    write = seg_start[s]
    for r in range(seg_start[s], seg_start[s] + seg_size[s]):
        if alive[r]:
            if r != write:
                _copy_rows(rows, r, write, 1)
            write += 1
    seg_size[s] = write - seg_start[s]


@numba.njit(cache=True)
def _refresh_slot(rows, slots, s, slack, is_free):
    """Restore the slot invariants after rows of slot s were removed, and its summary.

    The first row must be live (it is the slot's maximum), and removed rows
    may not outnumber live ones (otherwise squeeze them out).
    """
    coords, dims16, keys, index, alive = rows
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    while seg_size[s] > 0 and not alive[seg_start[s]]:
        seg_start[s] += 1
        seg_size[s] -= 1
    if seg_size[s] > 2 * seg_live[s]:
        _squeeze_slot(rows, seg_start, seg_size, s)
    if seg_live[s] == 0:
        seg_size[s] = 0
        seg_max[s], seg_arg[s], seg_skip_at[s] = -np.inf, _NOT_A_POINT, -np.inf
        return
    first = seg_start[s]
    seg_max[s], seg_arg[s] = keys[first], index[first]
    if keys[first] <= 0.0:
        seg_skip_at[s] = -np.inf  # no key in it can drop
    elif is_free or not seg_prunable[s]:
        seg_skip_at[s] = np.inf  # no usable bound: always scan
    else:
        seg_skip_at[s] = 4.0 * slack * keys[first]


@numba.njit(cache=True)
def _compact_rows(rows, slots, num_slots):
    """Slide the live rows of every slot to the left, in slot order; returns the first free row."""
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    write = 0
    for s in range(num_slots):
        if seg_size[s] > seg_live[s]:
            _squeeze_slot(rows, seg_start, seg_size, s)
        if seg_start[s] != write:
            _copy_rows(rows, seg_start[s], write, seg_size[s])
            seg_start[s] = write
        write += seg_size[s]
    return write


@numba.njit(cache=True)
def _visit_length(keys, start, size, bound, slack):
    """How many leading rows of a sorted cluster the triangle test cannot skip.

    Row x may be skipped when ``bound >= 4 * slack * key(x)``; keys decrease
    along the slot, so those rows form a tail, found by bisection.
    """
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        if bound >= 4.0 * slack * keys[start + mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True)
def _split_evenly(offsets, count, unit_bounds):
    """Cut items ``0 .. count - 1`` into ``len(unit_bounds) - 1`` runs of about equal size.

    ``offsets[i]`` is the total size of items before item i (a prefix sum);
    run w is ``unit_bounds[w] .. unit_bounds[w + 1] - 1``.
    """
    num_units = len(unit_bounds) - 1
    total = offsets[count]
    item = 0
    for w in range(num_units + 1):
        # first item at which the running total reaches w / num_units of the work
        while item < count and offsets[item] * num_units < total * w:
            item += 1
        unit_bounds[w] = item
    unit_bounds[num_units] = count


@numba.njit(cache=True)
def _drop_by_partial_sum(coords, blocks, keys, candidates, count, centre_tile, tile, lane_sums, out):
    """Keep (in place) the candidate rows whose canonical partial sum over the
    first ``blocks`` lane blocks is below their key; return how many are kept.

    Exact: the full canonical sum is >= this partial sum (see the proof
    above), so a dropped point cannot get a smaller key.  Does nothing when
    ``blocks`` covers every block: the full computation follows anyway.
    """
    if blocks >= centre_tile.shape[0]:  # (one centre_tile row per block of a full row)
        return count
    kept = 0
    for begin in range(0, count, _BATCH):
        batch = candidates[begin : min(count, begin + _BATCH)]
        _tile_squared_distances(coords, batch, centre_tile[:blocks], tile[:blocks], lane_sums, out)
        for p in range(len(batch)):
            if out[p] < keys[batch[p]]:  # the partial sum does not rule it out
                candidates[kept] = batch[p]  # (overwrites only entries already read)
                kept += 1
    return kept


@numba.njit(cache=True)
def _scan_unit(
    rows, seg_start, scan, scan_rows, first, last, centre16, centre_tile,
    candidates, new_keys, partial, tile, lane_sums, out, counts,
):  # fmt: skip
    """Offer the new centre to the first ``scan_rows[i]`` rows of the slots
    ``scan[i]``, ``first <= i < last``.

    1. sum the first 16 coordinates of those rows (vectorised) and keep as
       candidates the live rows where that partial sum is below the key;
    2. drop those whose sum over the first 32 coordinates is >= their key;
    3. compute exact distances for the rest.
    The rows whose key drops are written to ``candidates[:m]``, their new
    keys to ``new_keys[:m]``; returns m.  ``counts`` accumulates the numbers
    of 32-coordinate sums and exact distances computed.
    """
    coords, dims16, keys, index, alive = rows
    count = 0
    for i in range(first, last):
        end = seg_start[scan[i]] + scan_rows[i]
        if scan_rows[i] <= _SHORT_VISIT:  # a few rows: a vectorised pass costs more to set up
            for r in range(seg_start[scan[i]], end):
                candidates[count] = r
                count += alive[r] and _row_prefix_sum(dims16, r, centre16) < keys[r]
            continue
        for begin in range(seg_start[scan[i]], end, _CHUNK):
            stop = min(end, begin + _CHUNK)
            # round up to whole vectors: the extra rows exist (padding or
            # other slots) and their sums are simply not used
            padded_stop = begin + (stop - begin + 15) // 16 * 16
            if dims16.shape[0] == 16:
                _prefix_sums(dims16, begin, padded_stop, centre16, partial)
            else:
                _prefix_sums_8(dims16, begin, padded_stop, centre16, partial)
            for r in range(begin, stop):  # (branch-free: write always, advance if kept)
                candidates[count] = r
                count += alive[r] & (partial[r - begin] < keys[r])
    counts[0] += count
    count = _drop_by_partial_sum(coords, _MIDDLE_BLOCKS, keys, candidates, count, centre_tile, tile, lane_sums, out)
    counts[1] += count
    moved = 0
    for begin in range(0, count, _BATCH):
        batch = candidates[begin : min(count, begin + _BATCH)]
        _tile_squared_distances(coords, batch, centre_tile, tile, lane_sums, out)
        for p in range(len(batch)):
            if out[p] < keys[batch[p]]:
                candidates[moved] = batch[p]  # (overwrites only entries already read)
                new_keys[moved] = out[p]
                moved += 1
    return moved


@numba.njit(cache=True, parallel=True)
def _scan_units_in_parallel(
    rows, seg_start, scan, scan_rows, scan_offset, units, centre16, centre_tile,
    candidates, new_keys, partials, tiles, lane_sums, outs, unit_counts, unit_moved,
):  # fmt: skip
    """:func:`_scan_unit` on each run ``units[w] .. units[w + 1]`` of slots, one per thread.

    The runs own disjoint slots and disjoint parts of ``candidates`` and
    ``new_keys``; nothing else is written, so the threads never collide.
    """
    for w in numba.prange(len(units) - 1):
        first, last = units[w], units[w + 1]
        begin, end = scan_offset[first], scan_offset[last]
        unit_moved[w] = _scan_unit(
            rows, seg_start, scan, scan_rows, first, last, centre16, centre_tile,
            candidates[begin:end], new_keys[begin:end], partials[w], tiles[w], lane_sums[w], outs[w], unit_counts[w],
        )  # fmt: skip


@numba.njit(cache=True)
def _slots_to_scan(
    rows, slots, centres, centres32, centre32, t, num_free, num_slots, slack, bound32, scan, scan_rows, scan_offset,
):  # fmt: skip
    """List the slots that may hold points closer to centre t, and how many
    of their leading rows to visit; returns the number of slots.

    Free slots are visited whole.  The cluster of centre j is skipped when
    the squared distance B between the centres reaches ``seg_skip_at``; B is
    first bounded from below by the sum over the first 32 coordinates (all
    clusters at once, vectorised over ``centres32[k, j]``), and computed in
    full only when that is not enough.  In a visited cluster, the rows that the same B rules out
    form a tail (:func:`_visit_length`).
    """
    keys = rows[2]
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    _dim_major_squared_distances(centres32, num_slots - num_free, centre32, bound32)
    num_scan = 0
    scan_offset[0] = 0
    for s in range(num_slots):
        skip_at = seg_skip_at[s]
        if skip_at == -np.inf:
            continue  # empty, or no key in it can drop
        visit = seg_size[s]
        if skip_at != np.inf:  # a cluster with a usable bound
            j = s - num_free
            if bound32[j] >= skip_at:
                continue
            bound = _bound_squared_distance(centres, t, j)
            if bound >= skip_at:
                continue
            visit = _visit_length(keys, seg_start[s], seg_size[s], bound, slack)
        scan[num_scan] = s
        scan_rows[num_scan] = visit
        scan_offset[num_scan + 1] = scan_offset[num_scan] + visit
        num_scan += 1
    return num_scan


@numba.njit(cache=True)
def _sort_new_rows(candidates, new_keys, count, index, order):
    """Order the moved rows by (new key descending, original index ascending)."""
    if count > 64:
        by_index = np.argsort(index[candidates[:count]], kind="mergesort")
        by_key = np.argsort(-new_keys[:count][by_index], kind="mergesort")  # stable: ties keep index order
        order[:count] = by_index[by_key]
        return
    for m in range(count):  # insertion sort: few rows move in most steps
        order[m] = m
        p = m
        while p > 0:
            a, b = order[p - 1], order[p]
            ordered = new_keys[a] > new_keys[b] or (
                new_keys[a] == new_keys[b] and index[candidates[a]] < index[candidates[b]]
            )
            if ordered:
                break
            order[p - 1], order[p] = b, a
            p -= 1


@numba.njit(cache=True)
def _fast_iterations(rows, slots, centres, centres32, centre_tile, state, selected, t_begin, t_end, slack, scratch):
    """Run greedy steps ``t_begin .. t_end - 1`` of the fast loop (all state lives in arrays).

    ``rows = (coords, dims16, keys, index, alive)``, ``slots = (seg_start,
    seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at)``,
    ``state = [number of slots, first free row, number of free slots,
    threads, smallest step worth running in parallel, rows visited
    (16-coordinate sums), 32-coordinate sums, exact distances]``;
    ``centres[t]`` is a copy of the t-th selected point, ``centres32[:, t]``
    its first 32 coordinates.
    """
    coords, dims16, keys, index, alive = rows
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    (bound32, scan, scan_rows, scan_offset, candidates, new_keys, moved_slot, order,
     unit_bounds, unit_counts, unit_moved, partials, tiles, lane_sums, outs) = scratch  # fmt: skip
    num_free, num_units, parallel_min_members = state[2], state[3], state[4]
    capacity = len(keys) - _ROW_PADDING
    units = unit_bounds[: num_units + 1]
    for t in range(t_begin, t_end):
        num_slots = state[0]

        # 1. the worst-covered point becomes the next centre; it leaves its slot
        centre_slot = _select_next_centre(seg_max, seg_arg, num_slots)
        centre_row = seg_start[centre_slot]  # a slot's first row is its maximum
        selected[t] = index[centre_row]
        centres[t, :] = coords[centre_row]
        centres32[:, t] = coords[centre_row, : centres32.shape[0]]
        alive[centre_row] = False  # (its key is now -1: it can neither move nor be chosen)
        seg_live[centre_slot] -= 1
        _refresh_slot(rows, slots, centre_slot, slack, centre_slot < num_free)
        _fill_centre_tile(centres[t], centre_tile)
        centre16 = centres[t, : dims16.shape[0]].copy()
        centre32 = centres[t, : centres32.shape[0]].copy()

        # 2. which rows can get closer? (triangle inequality)
        args = (
            rows, slots, centres, centres32, centre32, t, num_free, num_slots, slack, bound32, scan, scan_rows, scan_offset,
        )  # fmt: skip
        num_scan = _slots_to_scan(*args)
        if state[1] + scan_offset[num_scan] > capacity:  # room for every row that might move
            state[1] = _compact_rows(rows, slots, num_slots)
            num_scan = _slots_to_scan(*args)  # (rows have moved)
        state[5] += scan_offset[num_scan]

        # 3. partial sums, then exact distances where those do not decide
        if num_units > 1 and scan_offset[num_scan] >= parallel_min_members:
            _split_evenly(scan_offset, num_scan, units)
            _scan_units_in_parallel(
                rows, seg_start, scan, scan_rows, scan_offset, units, centre16, centre_tile,
                candidates, new_keys, partials, tiles, lane_sums, outs, unit_counts, unit_moved,
            )  # fmt: skip
        else:
            units[0], units[1] = 0, num_scan  # a single unit
            unit_moved[0] = _scan_unit(
                rows, seg_start, scan, scan_rows, 0, num_scan, centre16, centre_tile,
                candidates, new_keys, partials[0], tiles[0], lane_sums[0], outs[0], unit_counts[0],
            )  # fmt: skip
        for w in range(num_units):
            for j in range(2):
                state[6 + j] += unit_counts[w, j]
                unit_counts[w, j] = 0

        # 4. gather the moved rows (in slot order) and note the slots they leave
        num_moved = 0
        for w in range(num_units if num_units > 1 and scan_offset[num_scan] >= parallel_min_members else 1):
            begin = scan_offset[units[w]]
            for i in range(unit_moved[w]):
                candidates[num_moved] = candidates[begin + i]
                new_keys[num_moved] = new_keys[begin + i]
                num_moved += 1
        i = 0
        for m in range(num_moved):  # the slot of each row: both lists are in row order
            while seg_start[scan[i]] + scan_rows[i] <= candidates[m]:
                i += 1
            moved_slot[m] = scan[i]

        # 5. they become the cluster of the new centre, sorted by key
        _sort_new_rows(candidates, new_keys, num_moved, index, order)
        new_slot = num_slots
        write = state[1]
        seg_start[new_slot] = write
        prunable = True
        for m in range(num_moved):
            source = candidates[order[m]]
            _copy_rows(rows, source, write, 1)
            keys[write] = new_keys[order[m]]
            prunable = prunable and (keys[write] <= 0.0 or _KEY_FLOOR <= keys[write] <= _KEY_CEIL)
            write += 1
        for m in range(num_moved):
            alive[candidates[m]] = False
            seg_live[moved_slot[m]] -= 1
        for m in range(num_moved):
            s = moved_slot[m]
            if m == 0 or s != moved_slot[m - 1]:
                _refresh_slot(rows, slots, s, slack, s < num_free)
        seg_size[new_slot] = seg_live[new_slot] = num_moved
        seg_prunable[new_slot] = prunable
        _refresh_slot(rows, slots, new_slot, slack, False)
        state[1] = write
        state[0] = num_slots + 1


def _fast_loop(
    points: np.ndarray,
    keys: np.ndarray,
    num_select: int,
    progress_bar,
    stats: dict | None = None,
    parallel_min_members: int | None = None,
) -> np.ndarray:
    """Set up the arrays for :func:`_fast_iterations` and run it in chunks of steps.

    Same inputs and output as :func:`_plain_loop`, and the same indices.
    Memory: the row arrays hold every point twice (room for moving rows
    between compactions): ``O(N * d)``.  If ``stats`` is a dict it receives
    counts of the work done: rows visited (each gets a 16-coordinate sum),
    32-coordinate sums and exact distances (compare with ``plain_distances =
    N * num_select``).  ``parallel_min_members``: smallest step, in rows to
    visit, that uses more than one thread (default: see
    :func:`_parallel_min_members`).
    """
    n, padded_dim = points.shape
    num_units = numba.get_num_threads()
    capacity = 2 * n + _ROW_PADDING  # every point twice, and padding for vector overrun
    prefix_dims = min(padded_dim, _PREFIX_DIMS)

    # free blocks: several, so that threads can share them; each sorted by key
    num_free = int(np.clip(n // 2048, 1, 64))
    edges = np.linspace(0, n, num_free + 1).astype(np.int64)
    order = np.concatenate(
        [lo + np.lexsort((np.arange(lo, hi), -keys[lo:hi])) for lo, hi in zip(edges[:-1], edges[1:])]
    )
    coords = np.zeros((capacity, padded_dim), dtype=np.float32)
    coords[:n] = points[order]
    dims16 = np.zeros((prefix_dims, capacity), dtype=np.float32)
    dims16[:, :n] = coords[:n, :prefix_dims].T
    row_keys = np.zeros(capacity, dtype=np.float32)
    row_keys[:n] = keys[order]
    index = np.zeros(capacity, dtype=np.int64)
    index[:n] = order
    alive = np.zeros(capacity, dtype=np.bool_)
    alive[:n] = True
    rows = (coords, dims16, row_keys, index, alive)

    slack = _pruning_slack(padded_dim)
    num_slots_max = num_free + num_select
    seg_start = np.zeros(num_slots_max, dtype=np.int64)
    seg_start[:num_free] = edges[:-1]
    seg_size = np.zeros(num_slots_max, dtype=np.int64)
    seg_size[:num_free] = np.diff(edges)
    seg_live = seg_size.copy()
    seg_max = np.full(num_slots_max, -np.inf, dtype=np.float32)
    seg_arg = np.full(num_slots_max, _NOT_A_POINT, dtype=np.int64)
    seg_prunable = np.zeros(num_slots_max, dtype=np.bool_)
    seg_skip_at = np.full(num_slots_max, -np.inf, dtype=np.float64)
    slots = (seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at)
    for s in range(num_free):
        _refresh_slot(rows, slots, s, slack, True)

    if parallel_min_members is None:
        parallel_min_members = _parallel_min_members()
    state = np.array([num_free, n, num_free, num_units, parallel_min_members, 0, 0, 0], dtype=np.int64)
    blocks = padded_dim // LANES
    scratch = (
        np.empty(num_select, dtype=np.float32),  # bound32
        np.empty(num_slots_max, dtype=np.int64),  # scan
        np.empty(num_slots_max, dtype=np.int64),  # scan_rows
        np.empty(num_slots_max + 1, dtype=np.int64),  # scan_offset
        np.empty(n, dtype=np.int64),  # candidates
        np.empty(n, dtype=np.float32),  # new_keys
        np.empty(n, dtype=np.int64),  # moved_slot
        np.empty(n, dtype=np.int64),  # order
        np.empty(num_units + 1, dtype=np.int64),  # unit_bounds
        np.zeros((num_units, 2), dtype=np.int64),  # unit_counts
        np.zeros(num_units, dtype=np.int64),  # unit_moved
        np.empty((num_units, _CHUNK), dtype=np.float32),  # partials
        np.empty((num_units, blocks, LANES * _BATCH), dtype=np.float32),  # tiles
        np.empty((num_units, LANES * _BATCH), dtype=np.float32),  # lane_sums
        np.empty((num_units, _BATCH), dtype=np.float32),  # outs
    )
    selected = np.empty(num_select, dtype=np.int64)
    centres = np.empty((num_select, padded_dim), dtype=np.float32)
    centres32 = np.zeros((min(padded_dim, 8 * _MIDDLE_BLOCKS), num_select), dtype=np.float32)
    centre_tile = np.empty((blocks, LANES * _BATCH), dtype=np.float32)
    # the progress bar is updated between chunks of steps, not every step
    chunk = num_select if progress_bar.disable else max(64, num_select // 100)
    for t_begin in range(0, num_select, chunk):
        t_end = min(num_select, t_begin + chunk)
        _fast_iterations(rows, slots, centres, centres32, centre_tile, state, selected, t_begin, t_end, slack, scratch)
        progress_bar.update(t_end - t_begin)
    if stats is not None:
        stats.update(
            plain_distances=n * num_select,
            rows_visited=int(state[5]),
            sums_32=int(state[6]),
            exact_distances=int(state[7]),
        )
    return selected



# --------------------------------------------------------------------------
# 5. Public greedy samplers
# --------------------------------------------------------------------------


def _progress_bar(progress: bool | None, total: int, desc: str):
    if progress is None:
        progress = sys.stderr.isatty() and total >= _PROGRESS_MIN_ITERATIONS
    return tqdm(total=total, desc=desc, unit="pt", disable=not progress, leave=False)


def _resolve_device(bank: torch.Tensor, device) -> torch.Tensor:
    return bank if device is None else bank.to(device)


def _greedy_select(
    points: torch.Tensor, start_distances: torch.Tensor, num_select: int, method: str, progress, desc: str
) -> np.ndarray:
    """Run the greedy loop chosen by ``method`` from the given starting distances.

    ``points``: ``(N, d)`` float32 (already projected); ``start_distances``:
    ``(N,)`` float64, not squared.  Returns ``(num_select,)`` int64.
    """
    with _progress_bar(progress, num_select, desc) as bar:
        if method == "reference":
            return _reference_loop(points, start_distances, num_select, bar)
        # The other three loops share everything: the same points, in their
        # principal axes (this helps "fast" prune; no distance changes), and
        # the same key arithmetic (float32 squared distances, lane order).
        points = _rotate_to_principal_axes(points)
        keys = (start_distances**2).to(torch.float32)
        if method == "torch" or (method == "fast" and points.device.type != "cpu"):
            padded = torch.nn.functional.pad(points, (0, (-points.shape[1]) % LANES))
            return _torch_loop(padded.contiguous(), keys.to(points.device), num_select, bar)
        padded = _pad_to_lanes(points.cpu().numpy())
        keys_np = keys.cpu().numpy()
        if method == "plain":
            return _plain_loop(padded, keys_np, num_select, bar)
        return _fast_loop(padded, keys_np, num_select, bar)


def approximate_greedy_coreset(
    features: ArrayLike,
    ratio: float,
    *,
    seed: int = 0,
    num_start_points: int = 10,
    projection_dim: int | None = 128,
    method: str = "fast",
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """PatchCore's approximate greedy coreset: ``(N, D) -> (M,)`` int64 indices.

    Mirrors ``ApproximateGreedyCoresetSampler`` of ``patchcore-inspection``:

    1. project the features to ``projection_dim`` dimensions with a seeded
       random ``nn.Linear``-style map (:func:`random_projection`; skipped if
       ``D == projection_dim`` or ``projection_dim is None``);
    2. start every point with its mean Euclidean distance to
       ``num_start_points`` random points (``np.random.default_rng(seed)``);
       the start points only seed the distances, they are not selected;
    3. greedy k-center: ``M = max(1, int(N * ratio))`` times, select the point
       with the largest distance and lower every distance to
       ``min(old, distance to the selected point)``.

    Memory is ``O(N * projection_dim)``.  Indices are in selection order (the
    first ``m`` of them are the coreset of size ``m``).  The same seed gives
    the same indices.  ``method`` picks the loop (see the module docstring);
    ``device`` moves the features first (e.g. ``"cuda"``); ``progress``
    forces the progress bar on or off (default: on for long runs when
    stderr is a terminal).
    """
    ratio = check_ratio(ratio)
    _check_method(method)
    num_start_points = _check_positive_int(num_start_points, "num_start_points")
    if projection_dim is not None:
        projection_dim = _check_positive_int(projection_dim, "projection_dim")
    bank = _resolve_device(_check_features(features), device)
    n = bank.shape[0]
    points = random_projection(bank, projection_dim, seed=seed)
    start = np.random.default_rng(seed).choice(n, min(num_start_points, n), replace=False)
    start_distances = _mean_distance_to_start_points(points, start)
    return _greedy_select(
        points, start_distances, coreset_size(n, ratio), method, progress, "approximate greedy coreset"
    )


def greedy_coreset(
    features: ArrayLike,
    ratio: float,
    *,
    seed: int = 0,
    projection_dim: int | None = 128,
    method: str = "fast",
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """PatchCore's exact greedy coreset: ``(N, D) -> (M,)`` int64 indices.

    Mirrors ``GreedyCoresetSampler`` of ``patchcore-inspection``: project to
    ``projection_dim`` dimensions (seeded by ``seed``), start every point
    with the L2 norm of its row of the distance matrix,
    ``||(d(x_i, x_1), ..., d(x_i, x_N))||``, then run the greedy k-center
    loop.  Only the first choice depends on that start (every later distance
    is below it), so this is "farthest point sampling from the most remote
    point".

    The reference materialises the ``N x N`` distance matrix, which needs
    ``4 N^2`` bytes: one user needed 107 GB for 209 images.  Here the row
    norms are accumulated block by block (:func:`_distance_matrix_row_norms`)
    and the loop needs one distance per point and step, so memory is
    ``O(N * D + N * block)``; time is ``O(N^2 * D)`` for the start alone.
    """
    ratio = check_ratio(ratio)
    _check_method(method)
    if projection_dim is not None:
        projection_dim = _check_positive_int(projection_dim, "projection_dim")
    bank = _resolve_device(_check_features(features), device)
    points = random_projection(bank, projection_dim, seed=seed)
    start_distances = _distance_matrix_row_norms(points)
    return _greedy_select(
        points, start_distances, coreset_size(bank.shape[0], ratio), method, progress, "greedy coreset"
    )


# --------------------------------------------------------------------------
# 6. Measuring a coreset
# --------------------------------------------------------------------------


def coverage_radius(features: ArrayLike, indices) -> float:
    """Largest distance from any bank point to its nearest selected point.

    ``features``: ``(N, D)``; ``indices``: ``(M,)`` integer indices into it.
    Euclidean distance in the given feature space, computed in float64 one
    block of rows at a time (never the whole ``N x M`` matrix).  This is the
    quantity greedy k-center keeps small; 0 means every point was selected.
    """
    bank = _check_features(features).double()
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty 1-D integer array, got shape {idx.shape} dtype {idx.dtype}")
    if idx.min() < -len(bank) or idx.max() >= len(bank):
        raise ValueError(f"indices out of range for a bank of {len(bank)} points")
    centres = bank[torch.as_tensor(idx, device=bank.device)]
    centre_sq = (centres * centres).sum(dim=1)
    rows_per_block = max(1, _BLOCK_ENTRIES // len(centres))
    worst = 0.0
    for start in range(0, len(bank), rows_per_block):
        block = bank[start : start + rows_per_block]
        # the expansion |x|^2 + |c|^2 - 2 x.c finds the nearest centre fast ...
        sq_dist = (block * block).sum(dim=1, keepdim=True) + centre_sq - 2.0 * block @ centres.T
        nearest = sq_dist.argmin(dim=1)
        # ... and the direct difference gives its distance without cancellation
        # (exactly 0 for a selected point)
        distance = torch.linalg.vector_norm(block - centres[nearest], dim=1)
        worst = max(worst, float(distance.max()))
    return worst


# --------------------------------------------------------------------------
# 7. Choosing a sampler by name
# --------------------------------------------------------------------------

SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "random": random_coreset,
    "greedy": greedy_coreset,
    "approximate_greedy": approximate_greedy_coreset,
}


def select_coreset(
    features: ArrayLike, ratio: float, sampler: str = "approximate_greedy", *, seed: int = 0
) -> np.ndarray:
    """Dispatch to one of :data:`SAMPLERS` by name: ``(N, D) -> (M,)`` int64 indices."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown coreset sampler {sampler!r}; valid names: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler](features, ratio, seed=seed)
