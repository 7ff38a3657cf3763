"""Exact fast paths behind the coreset explorer: the same numbers, without the full search.

The explorer (:mod:`pcnotes.app.explorer_state`) scores the whole test set again
for every bank the slider asks for. Done plainly, that is a kNN search of
every test patch through the bank, the anomaly maps of every test image, and
two sorts of all pixels for the metrics. Each class here does one of those
jobs faster, for the special case the explorer is in, and gives the same
result as the plain library function to float rounding (the tests compare
them):

* :class:`NeighbourTable`: any bank is a subset of the training patches, so
  each query's ``K`` nearest training patches, listed once, answer most
  nearest-bank-entry questions (vs :class:`pcnotes.stages.s6_scoring.NearestNeighbours`);
* :class:`PrefixNearest`: a greedy coreset is a prefix of the sampler's pick
  order, so every query's nearest-pick distance for every prefix can be
  recorded in one pass (vs a search per bank); with the whole bank as queries
  it also gives the coverage radius of every prefix
  (vs :func:`pcnotes.stages.s5_coreset.coverage_radius`);
* :class:`MapOperator`: :func:`pcnotes.stages.s7_maps.anomaly_map` is linear and
  separable, so it is two small matrix products;
* :class:`PixelMetrics`: :func:`pcnotes.stages.s8_metrics.pixel_auroc` and
  :func:`pcnotes.stages.s8_metrics.aupro` of many maps against the same masks, sharing
  one sort per map set.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import auc

from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import clip_curve, pro_steps, roc_and_pro
from pcnotes.stages.s6_scoring import NearestNeighbours

__all__ = ["NeighbourTable", "PrefixNearest", "MapOperator", "PixelMetrics"]


# --------------------------------------------------------------------------
# Nearest bank entry for any subset of the training patches
# --------------------------------------------------------------------------


class NeighbourTable:
    """Each query's ``k`` nearest reference rows, found once; then any subset is a look-up.

    ``queries (Q, D)``, ``references (R, D)``. :meth:`nearest_in` answers
    "distance from every query to its nearest row of ``references[subset]``"
    for any ``subset``, exactly, without searching all of it again.

    Why it is exact: the table lists each query's ``k`` nearest references in
    order of distance. If one of them is in the subset, the first such one is
    the nearest subset member (every unlisted reference is at least as far as
    the last listed one). Only queries with no listed neighbour in the subset
    need a real search, and that search only goes through the subset.
    """

    def __init__(self, queries: np.ndarray, references: np.ndarray, k: int = 256, *,
                 backend: str = "faiss"):
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.references = np.ascontiguousarray(references, dtype=np.float32)
        self.backend = backend
        self.k = min(int(k), len(self.references))
        if self.k < 1:
            raise ValueError(f"a neighbour table needs k >= 1, got {k}")
        index = NearestNeighbours(self.references, backend=backend)
        # (Q, k) each, nearest first; Euclidean distances.
        self.distances, indices = index.search(self.queries, self.k)
        self.indices = indices.astype(np.int32)  # half the memory of int64
        self.misses = 0  # queries that needed a real search in the last call

    def nearest_in(self, subset: np.ndarray) -> np.ndarray:
        """Euclidean distance from each query to its nearest ``references[subset]`` row: ``(Q,)``."""
        subset = np.asarray(subset, dtype=np.int64)
        kept = np.zeros(len(self.references), dtype=bool)
        kept[subset] = True
        listed_and_kept = kept[self.indices]  # (Q, k)
        first = listed_and_kept.argmax(axis=1)  # first kept neighbour (0 if none)
        rows = np.arange(len(self.queries))
        found = listed_and_kept[rows, first]
        nearest = self.distances[rows, first].copy()
        missing = np.flatnonzero(~found)
        self.misses = len(missing)
        if len(missing):
            bank = NearestNeighbours(self.references[subset], backend=self.backend)
            nearest[missing] = bank.search(self.queries[missing], 1)[0][:, 0]
        return nearest


class PrefixNearest:
    """Distance from each query to its nearest of the first ``m`` picks, for every ``m``.

    ``table`` is a :class:`NeighbourTable` from the queries ``(Q, D)`` to the
    references ``(R, D)``; ``order`` ``(P,)`` lists references in the order a
    greedy sampler picked them. As ``m`` grows, a query's distance to its
    nearest pick can only fall, in steps: at the picks that come closer to it
    than every earlier pick. This class finds every step once, so that
    :meth:`nearest` answers any ``m <= P`` with a look-up:

    * once one of the query's ``K`` listed neighbours has been picked, the
      nearest pick is the first listed neighbour picked so far (the table's
      argument), so those steps are read off the table: one at each listed
      neighbour picked earlier than every closer listed one;
    * before that, the distances to the picks so far are computed, pick by
      pick, and their running minimum gives the remaining steps.

    The distances are those of the table, or from the expansion
    ``|q|^2 + |p|^2 - 2 q.p`` in float32 as faiss computes them; they agree
    with a faiss search to float rounding.
    """

    def __init__(self, table: NeighbourTable, order: np.ndarray, *, query_chunk: int = 1024,
                 pick_block: int = 512):
        order = np.asarray(order, dtype=np.int64)
        self.num_queries, self.num_picks = len(table.queries), len(order)
        if self.num_picks == 0:
            raise ValueError("PrefixNearest needs at least one pick")
        picks = self.num_picks
        rank = np.full(len(table.references), picks, dtype=np.int64)  # `picks`: not among them
        rank[order] = np.arange(picks)
        ranks = rank[table.indices]  # (Q, K) when each listed neighbour is picked
        # Table steps: a listed neighbour picked before every closer listed one.
        earlier = np.minimum.accumulate(ranks, axis=1)
        first = np.concatenate([np.full((len(ranks), 1), picks), earlier[:, :-1]], axis=1)
        rows, columns = np.nonzero(ranks < first)
        steps = [(rows, ranks[rows, columns] + 1, table.distances[rows, columns])]
        # Computed steps: the picks before the first listed neighbour is picked.
        before = earlier[:, -1]  # (Q,) picks made before any listed neighbour
        steps += self._running_minimum(table.queries, table.references[order], before,
                                       query_chunk, pick_block)
        rows, sizes, values = (np.concatenate(parts) for parts in zip(*steps))
        # One sorted key per step, query-major: key = query * (P + 1) + size.
        keys = rows.astype(np.int64) * (picks + 1) + sizes
        by_key = np.argsort(keys, kind="stable")
        self._keys, self._values = keys[by_key], values[by_key].astype(np.float32)
        self.steps = len(self._keys)

    @staticmethod
    def _running_minimum(queries, picks, before, query_chunk, pick_block):
        """Steps of the running minimum over picks ``[0, before[q])`` of each query ``q``.

        Blocks of ``query_chunk x pick_block`` squared distances at a time. In
        numpy: its element-wise passes run on one thread, which on busy cores
        measured 2-3 times faster than torch's two (and the same on idle ones).
        """
        picks = np.ascontiguousarray(picks, dtype=np.float32)
        pick_sq = (picks**2).sum(1)
        needy = np.argsort(before, kind="stable")
        needy = needy[before[needy] > 0]  # sorted by how many picks they need
        steps = []
        for start in range(0, len(needy), query_chunk):
            rows = needy[start : start + query_chunk]
            limit = before[rows][:, None]  # (c, 1)
            chunk = np.ascontiguousarray(queries[rows], dtype=np.float32)
            chunk_sq = (chunk**2).sum(1, keepdims=True)
            current = np.full((len(rows), 1), np.inf, dtype=np.float32)  # nearest so far, squared
            for first in range(0, int(limit.max()), pick_block):
                block = slice(first, first + pick_block)
                squared = chunk @ picks[block].T  # |q|^2 + |p|^2 - 2 q.p, in place
                squared *= -2
                squared += chunk_sq
                squared += pick_sq[block]
                np.maximum(squared, 0, out=squared)
                running = np.minimum.accumulate(squared, axis=1)
                np.minimum(running, current, out=running)
                dropped = running < np.concatenate([current, running[:, :-1]], axis=1)
                size = np.arange(first + 1, first + 1 + running.shape[1])  # bank size after each pick
                dropped &= size <= limit
                row, column = np.nonzero(dropped)
                steps.append((rows[row], size[column], np.sqrt(running[row, column])))
                current = running[:, -1:]
        return steps

    def nearest(self, m: int) -> np.ndarray:
        """Euclidean distance from each query to its nearest of the first ``m`` picks: ``(Q,)``."""
        if not 1 <= m <= self.num_picks:
            raise ValueError(f"m must be in [1, {self.num_picks}], got {m}")
        # The last step of each query at a size <= m (every query has a step at size 1).
        wanted = np.arange(self.num_queries, dtype=np.int64) * (self.num_picks + 1) + m
        return self._values[np.searchsorted(self._keys, wanted, side="right") - 1]

    def largest(self) -> np.ndarray:
        """The largest of the queries' distances for every ``m``: ``(P,)``, entry ``m - 1``.

        With the whole bank as queries, this is the coverage radius of every
        prefix of the picks. A query's distance holds from its step's size up
        to (not including) its next step's size, and it never rises; so the
        largest distance at ``m`` is the largest value of a step that still
        holds after ``m``.
        """
        picks = self.num_picks
        query, size = np.divmod(self._keys, picks + 1)
        until = np.append(size[1:], picks + 1)  # the next step's size ...
        until[np.append(query[1:] != query[:-1], True)] = picks + 1  # ... or beyond the last pick
        best = np.zeros(picks + 2, dtype=np.float32)
        np.maximum.at(best, until, self._values)
        return np.maximum.accumulate(best[::-1])[::-1][2:]


# --------------------------------------------------------------------------
# Anomaly maps as two small matrices
# --------------------------------------------------------------------------


class MapOperator:
    """:func:`pcnotes.stages.s7_maps.anomaly_map` as a matrix product: ``(T, h, w) -> (T, H, W)``.

    Bilinear up-sampling and the Gaussian are both linear and act on rows and
    columns separately, and each keeps a constant map constant. So the map
    of a patch-score grid ``S`` is ``rows @ S @ columns.T``, with ``rows``
    ``(H, h)`` and ``columns`` ``(W, w)``. Both matrices are read off
    ``anomaly_map`` itself, once: the map of a grid that is 1 on row ``i``
    (and 0 elsewhere) is column ``i`` of ``rows`` in every map column. The
    product then costs microseconds per image instead of milliseconds, and
    agrees with ``anomaly_map`` to float rounding (a test checks it).
    """

    def __init__(self, grid: tuple[int, int], size: tuple[int, int], sigma: float):
        height, width = grid
        basis = np.zeros((height + width, height, width), dtype=np.float32)
        for i in range(height):
            basis[i, i, :] = 1.0  # row i
        for j in range(width):
            basis[height + j, :, j] = 1.0  # column j
        maps = anomaly_map(basis, size=size, sigma=sigma)  # (h + w, H, W)
        self.rows = torch.from_numpy(np.ascontiguousarray(maps[:height, :, 0].T))  # (H, h)
        self.columns = torch.from_numpy(np.ascontiguousarray(maps[height:, 0, :].T))  # (W, w)

    def __call__(self, score_grid: np.ndarray) -> np.ndarray:
        """Patch scores ``(T, h, w)`` to smoothed pixel maps ``(T, H, W)`` (float32)."""
        grid = torch.as_tensor(np.asarray(score_grid, dtype=np.float32))
        return torch.matmul(self.rows, grid @ self.columns.T).numpy()


# --------------------------------------------------------------------------
# Pixel metrics of many maps against the same masks
# --------------------------------------------------------------------------


class PixelMetrics:
    """Pixel AUROC and AUPRO of maps ``(T, H, W)`` against one fixed set of masks.

    The same numbers as :func:`pcnotes.stages.s8_metrics.pixel_auroc` and
    :func:`pcnotes.stages.s8_metrics.aupro` (the tests check it), computed faster for
    many maps of one test set: the defect regions and each pixel's PRO step
    are found once, in ``__init__`` (:func:`~pcnotes.stages.s8_metrics.pro_steps`),
    and both metrics share one sort of the pixels
    (:func:`~pcnotes.stages.s8_metrics.roc_and_pro`, as ``pro_curve`` does).
    """

    def __init__(self, masks: np.ndarray, *, max_fpr: float = 0.3):
        self.shape = np.shape(masks)
        self.max_fpr = max_fpr
        try:
            self.labels, self.steps = pro_steps(masks)  # found once for every map of this test set
        except ValueError:
            raise ValueError("pixel metrics need both defective and defect-free pixels in the masks") from None

    def __call__(self, maps: np.ndarray) -> tuple[float, float]:
        """``(pixel AUROC, AUPRO)`` of maps ``(T, H, W)``, exact."""
        maps = np.asarray(maps)
        if maps.shape != self.shape:
            raise ValueError(f"maps of shape {maps.shape} do not match the masks {self.shape}")
        fpr, tpr, pro = roc_and_pro(maps, self.labels, self.steps)
        return float(auc(fpr, tpr)), float(auc(*clip_curve(fpr, pro, self.max_fpr))) / self.max_fpr
