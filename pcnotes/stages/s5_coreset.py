"""Stage 5: coreset subsampling of the memory bank (Section 3.2 of the paper).

The **memory bank** keeps one feature per patch of every normal training
image, an ``(N, D)`` array (200 images of 28 x 28 patches: N = 156,800), and
every test patch searches it for its nearest neighbour.  The bank is mostly
redundant, so PatchCore keeps a subset of it, e.g. 10 % or 1 %.  Uniform
sampling (:func:`random_coreset`) keeps the common patches but easily drops
rare-but-normal ones, which then look anomalous at test time.  PatchCore
keeps a **coreset** instead: a subset ``C`` with a small **coverage radius**
(:func:`coverage_radius`)::

    radius(C) = max over bank points x of  min over c in C of ||x - c||

Choosing the ``M`` points that minimise it is the NP-hard k-center problem;
**greedy k-center** (Gonzalez, 1985; :func:`greedy_k_center`, right below)
is within a factor 2 of the optimum: repeatedly select the point farthest
from the selection so far, then lower every point's distance to
``min(distance, distance to the new point)``.  Rare patches are far from
everything, so they are selected early.

Like ``patchcore-inspection``, distances are measured after a seeded random
**projection** to 128 dimensions (Johnson-Lindenstrauss: distances are
roughly kept, at 128 multiply-adds instead of 1024), and the start distances
are the row norms of the distance matrix (:func:`greedy_coreset`) or, cheaper,
the mean distance to 10 random points (:func:`approximate_greedy_coreset`,
PatchCore's default).  Shapes: ``features`` ``(N, D)`` -> ``(M,)`` int64
indices, ``M = max(1, int(N * ratio))``.

The loop (``loop=``): ``"plain"`` is :func:`greedy_k_center` (float64
numpy, the one to read); ``"fast"`` (default) is :mod:`pcnotes.fast.coreset`,
which skips most distances and selects the same points (what "same" means
exactly is written there); ``"torch"`` is its arithmetic in torch, for a GPU;
``"reference"`` is the loop of ``patchcore-inspection`` (``a^2 - 2ab + b^2``),
which rounds differently and agrees at more than 99 % of the positions.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Callable, Union

import numpy as np
import torch
from scipy.spatial.distance import cdist
from tqdm.auto import tqdm


__all__ = [
    "greedy_k_center", "random_coreset", "approximate_greedy_coreset", "greedy_coreset", "coverage_radius",
    "random_projection", "SAMPLERS", "select_coreset", "check_ratio", "coreset_size", "LOOPS",
]  # fmt: skip

ArrayLike = Union[torch.Tensor, np.ndarray]
LOOPS = ("fast", "plain", "torch", "reference")
_BLOCK_ENTRIES = 1 << 22  # blocks of pairwise distances never exceed this (16 MiB of float32)


def greedy_k_center(points: np.ndarray, m: int, start_distances: np.ndarray | None = None,
                    progress_bar=None) -> np.ndarray:
    """Greedy k-center (Algorithm 1 of the paper): ``(N, d)`` points -> ``(m,)`` int64 indices.

    Indices come in selection order, so the first ``k`` of them are the
    coreset of size ``k``.  ``start_distances`` ``(N,)`` decide the first pick
    (their argmax); by default they are each point's norm of its row of the
    ``N x N`` Euclidean distance matrix, so the most remote point goes first
    (the reference's exact greedy start; computed block by block, never the
    whole matrix).  Euclidean distances in float64.  This is the answer the
    course's exercise "greedy k-center" is checked against.
    """
    points = np.asarray(points, dtype=np.float64)
    if start_distances is None:
        start_distances = _row_norms(points)
    min_distance = np.array(start_distances, dtype=np.float64)  # a copy
    selected = np.empty(m, dtype=np.int64)
    for t in range(m):
        centre = int(np.argmax(min_distance))  # the worst-covered point; ties -> lowest index
        selected[t] = centre
        distance = np.linalg.norm(points - points[centre], axis=1)  # to the new centre
        np.minimum(min_distance, distance, out=min_distance)
        min_distance[centre] = -np.inf  # never selected twice, even once every distance is 0
        if progress_bar is not None:
            progress_bar.update(1)
    return selected


def _row_norms(points: np.ndarray) -> np.ndarray:
    """``(N, d) -> (N,)``: ``np.linalg.norm(cdist(points, points), axis=1)``, one block of rows at a time."""
    rows_per_block = max(1, _BLOCK_ENTRIES // len(points))
    return np.concatenate([np.linalg.norm(cdist(points[start : start + rows_per_block], points), axis=1)
                           for start in range(0, len(points), rows_per_block)])


# ---- checks ----


def check_ratio(ratio, name: str = "coreset ratio") -> float:
    """Return ``ratio`` as a float, or raise ValueError (naming ``name``) unless it is a real number in (0, 1]."""
    is_real = isinstance(ratio, numbers.Real) and not isinstance(ratio, bool)
    if not is_real or not (0 < ratio <= 1):  # NaN fails both comparisons
        raise ValueError(f"{name} must be in (0, 1], got {ratio!r}")
    return float(ratio)


def coreset_size(num_points: int, ratio: float) -> int:
    """M = int(N * ratio), but at least one point: the size every sampler keeps."""
    return max(1, int(num_points * check_ratio(ratio)))


def _check_features(features) -> torch.Tensor:
    """The memory bank as a float32 tensor of shape (N, D) (a tensor stays on its device), or ValueError."""
    if isinstance(features, torch.Tensor):
        bank = features.detach()
    else:
        try:
            bank = torch.from_numpy(np.ascontiguousarray(np.asarray(features)))
        except TypeError as error:  # e.g. an object or string array
            raise ValueError(f"features must be a numeric (N, D) array: {error}") from None
    if bank.ndim != 2:
        raise ValueError(f"features must be a 2-D array of shape (N, D), got shape {tuple(bank.shape)}")
    if bank.shape[0] == 0:
        raise ValueError(f"the memory bank is empty (shape {tuple(bank.shape)}); nothing to subsample")
    if bank.shape[1] == 0:
        raise ValueError(f"features have no dimensions (shape {tuple(bank.shape)})")
    if bank.dtype.is_complex or bank.dtype == torch.bool:
        raise ValueError(f"features must be real numbers, got dtype {bank.dtype}")
    bank = bank.to(torch.float32)
    if not bool(torch.isfinite(bank).all()):
        raise ValueError("features contain NaN or infinite values")
    return bank


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---- the samplers ----


def random_coreset(features: ArrayLike, ratio: float, *, seed: int = 0) -> np.ndarray:
    """Uniformly random subset, without replacement: ``(N, D) -> (M,)`` int64, sorted increasing.

    Uses ``np.random.default_rng(seed)``; the global random state is not touched.
    """
    ratio = check_ratio(ratio)
    n = _check_features(features).shape[0]
    return np.sort(np.random.default_rng(seed).choice(n, coreset_size(n, ratio), replace=False)).astype(np.int64)


def random_projection(features: torch.Tensor, projection_dim: int | None, *, seed: int = 0) -> torch.Tensor:
    """Project ``(N, D) -> (N, projection_dim)`` with a seeded random linear map.

    The weight is what ``torch.nn.Linear(D, projection_dim, bias=False)``
    draws after ``torch.manual_seed(seed)`` (``U(-1/sqrt(D), 1/sqrt(D))``),
    from a private generator, so the global random state is left alone.  As
    in the reference, nothing happens when ``D == projection_dim``;
    ``projection_dim=None`` also skips it.
    """
    in_dim = features.shape[1]
    if projection_dim is None or projection_dim == in_dim:
        return features
    weight = torch.empty(projection_dim, in_dim)  # drawn on the CPU, the same on every device
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return torch.nn.functional.linear(features, weight.to(features.device))


def _mean_distance_to_start_points(points: torch.Tensor, start: np.ndarray) -> torch.Tensor:
    """``(N, d), (S,) -> (N,)`` float64: mean distance to the start points, from differences (no cancellation)."""
    anchors = points[torch.as_tensor(start, device=points.device)]
    distances = torch.cdist(points, anchors, compute_mode="donot_use_mm_for_euclid_dist")
    return distances.mean(dim=1, dtype=torch.float64)


def _distance_matrix_row_norms(points: torch.Tensor) -> torch.Tensor:
    """``(N, d) -> (N,)`` float64: ``torch.norm(distance_matrix, dim=1)`` without the N x N matrix.

    ``||row_i||^2 = sum_j dist[i, j]^2``, accumulated one block of rows at a
    time (memory ``O(N * block)``); the block arithmetic is the reference's
    (``a^2 + b^2 - 2ab`` in float32, clamped at 0), the sums are float64.
    """
    n = points.shape[0]
    sq_norms = (points * points).sum(dim=1)
    rows_per_block = max(1, _BLOCK_ENTRIES // n)
    row_sums = torch.empty(n, dtype=torch.float64, device=points.device)
    for start in range(0, n, rows_per_block):
        block = points[start : start + rows_per_block]
        sq_dist = (sq_norms[start : start + rows_per_block, None] + sq_norms[None, :]) - 2.0 * (block @ points.T)
        row_sums[start : start + rows_per_block] = sq_dist.clamp_(min=0).sum(dim=1, dtype=torch.float64)
    return row_sums.sqrt()


def _greedy(
    bank: torch.Tensor, start_distances: torch.Tensor, num_select: int, loop: str, progress: bool | None, desc: str
) -> np.ndarray:
    """Run the loop that ``loop`` names on projected points ``(N, d)`` from ``(N,)`` start distances."""
    if progress is None:
        progress = sys.stderr.isatty() and num_select >= 1000
    with tqdm(total=num_select, desc=desc, unit="pt", disable=not progress, leave=False) as bar:
        if loop == "plain":
            return greedy_k_center(bank.cpu().numpy(), num_select, start_distances.cpu().numpy(), bar)
        if loop == "reference":
            from pcnotes.fast import coreset_reference

            return coreset_reference.greedy_loop(bank, start_distances, num_select, bar)
        from pcnotes.fast import coreset as coreset_fast  # numba, imported when a fast loop first runs

        return coreset_fast.select(bank, start_distances, num_select, bar, loop=loop)


def _prepare(features, ratio, loop: str, projection_dim, seed: int, device) -> tuple[torch.Tensor, int]:
    """Checked inputs: the projected bank (on ``device`` if given) and M."""
    ratio = check_ratio(ratio)
    if loop not in LOOPS:
        raise ValueError(f"unknown loop {loop!r}; valid loops: {', '.join(LOOPS)}")
    if projection_dim is not None:
        projection_dim = _check_positive_int(projection_dim, "projection_dim")
    bank = _check_features(features)
    bank = bank if device is None else bank.to(device)
    return random_projection(bank, projection_dim, seed=seed), coreset_size(bank.shape[0], ratio)


def approximate_greedy_coreset(
    features: ArrayLike,
    ratio: float,
    *,
    seed: int = 0,
    num_start_points: int = 10,
    projection_dim: int | None = 128,
    loop: str = "fast",
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """PatchCore's approximate greedy coreset: ``(N, D) -> (M,)`` int64 indices, in selection order.

    As ``ApproximateGreedyCoresetSampler`` of ``patchcore-inspection``:
    project to ``projection_dim`` dimensions (:func:`random_projection`),
    start every point at its mean distance to ``num_start_points`` random
    points (``np.random.default_rng(seed)``; they only seed the distances,
    they are not selected), then run greedy k-center.  Memory
    ``O(N * projection_dim)``.  ``loop`` picks the loop (module
    docstring), ``device`` moves the features first (e.g. ``"cuda"``),
    ``progress`` forces the progress bar on or off (default: on for long
    runs on a terminal).
    """
    num_start_points = _check_positive_int(num_start_points, "num_start_points")
    points, num_select = _prepare(features, ratio, loop, projection_dim, seed, device)
    start = np.random.default_rng(seed).choice(len(points), min(num_start_points, len(points)), replace=False)
    start_distances = _mean_distance_to_start_points(points, start)
    return _greedy(points, start_distances, num_select, loop, progress, "approximate greedy coreset")


def greedy_coreset(
    features: ArrayLike,
    ratio: float,
    *,
    seed: int = 0,
    projection_dim: int | None = 128,
    loop: str = "fast",
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """PatchCore's exact greedy coreset: ``(N, D) -> (M,)`` int64 indices, in selection order.

    As ``GreedyCoresetSampler``: project (seeded by ``seed``), start every
    point at the L2 norm of its row of the distance matrix, then run greedy
    k-center.  Only the first choice depends on that start (every later
    distance is smaller), so this is farthest-point sampling from the most
    remote point.  The reference builds the ``N x N`` matrix (``4 N^2``
    bytes); here the row norms are streamed (:func:`_distance_matrix_row_norms`),
    so memory is ``O(N * D + N * block)``; the start still takes ``O(N^2 D)`` time.
    """
    points, num_select = _prepare(features, ratio, loop, projection_dim, seed, device)
    return _greedy(points, _distance_matrix_row_norms(points), num_select, loop, progress, "greedy coreset")


# ---- measuring a coreset, and choosing a sampler by name ----


def coverage_radius(features: ArrayLike, indices) -> float:
    """Largest distance from any bank point to its nearest selected point (0: everything selected).

    ``features``: ``(N, D)``; ``indices``: ``(M,)`` integers into it.
    Euclidean, in the given feature space, float64, one block of rows at a
    time (never the whole ``N x M`` matrix).
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
        # |x|^2 + |c|^2 - 2 x.c finds the nearest centre fast; the difference gives its distance exactly
        nearest = ((block * block).sum(dim=1, keepdim=True) + centre_sq - 2.0 * block @ centres.T).argmin(dim=1)
        worst = max(worst, float(torch.linalg.vector_norm(block - centres[nearest], dim=1).max()))
    return worst


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "random": random_coreset,
    "greedy": greedy_coreset,
    "approximate_greedy": approximate_greedy_coreset,
}


def select_coreset(
    features: ArrayLike, ratio: float | None = None, sampler: str = "approximate_greedy", *,
    size: int | None = None, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """Dispatch to one of :data:`SAMPLERS` by name: ``(N, D) -> (M,)`` int64 indices.

    Give either ``ratio`` (M = int(N * ratio), at least 1) or ``size`` (M itself).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown coreset sampler {sampler!r}; valid names: {', '.join(SAMPLERS)}")
    if (ratio is None) == (size is None):
        raise ValueError("give exactly one of ratio and size")
    if size is not None:
        num_points = len(features)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 1 <= size <= num_points:
            raise ValueError(f"coreset size must be an integer in [1, {num_points}], got {size!r}")
        ratio = min(1.0, (int(size) + 0.5) / num_points)  # int(N * ratio) == size despite rounding
    return SAMPLERS[sampler](features, ratio, seed=seed)
