"""The coreset explorer's state: features extracted once, caches, and one update per setting.

PatchCore keeps a fraction ``ratio`` of all training patches as its memory
bank. This module answers, for any ratio and sampler, what that bank costs and
what it gives, fast enough to follow a slider. It has no widget in it (that is
:mod:`pcnotes.explorer`), so all of it is tested without a browser::

    state = prepare()                              # features once (tens of seconds)
    stats = update(0.01, "approximate_greedy", cache=state)   # a fraction of a second
    stats.bank_size, stats.coverage_radius, stats.image_auroc, stats.amap

* :func:`prepare` extracts, per category, the training patch features
  ``(N, D)``, the test patch features ``(T*h*w, D)``, the test masks and
  labels, and two :class:`NeighbourTable` s. It returns an
  :class:`ExplorerState`, which also holds every cache.
* :func:`update` is a plain function ``(ratio, sampler, category, image)
  -> Stats``: bank size, coverage radius, image AUROC, pixel AUROC, AUPRO,
  timings and the arrays the plots need. Its numbers are exactly those of a
  plain PatchCore run with that bank (the tests check it).

How an update stays fast
------------------------
*Coreset.* Greedy k-center is **nested**: its first ``m`` picks do not
depend on how many picks follow, so the coreset for a small ratio is a
prefix of the coreset for a larger one. For the two greedy samplers the
explorer runs :func:`pcnotes.coreset.select_coreset` to 10 % the first time
(enough for every ratio up to 10 %) and to 100 % the first time a larger
ratio is asked for, and slices. The random sampler is not nested (another
``M`` draws another subset), so it is simply called; it takes milliseconds.

*Scores of any bank.* Every memory bank is a subset of the ``N`` training
patches. So :class:`NeighbourTable` finds, once, each test patch's ``K``
nearest training patches. For any bank, a test patch's nearest bank entry is
then the first of its ``K`` listed neighbours that is in the bank. Only
patches none of whose ``K`` neighbours were kept are searched the ordinary
way. The same holds for the training patches in the 128-d projection, which
gives the coverage radius.

*Scores of a greedy prefix.* When a greedy sampler has run, a
:class:`PrefixNearest` goes once through its first 10 % of picks in order
and records, for every test patch, each bank size at which its nearest kept
patch gets closer (from the table where it can, by computing distances
where it cannot). Any bank up to 10 % is then a look-up, with no search at
all; the same for the training patches gives the coverage radius of every
prefix. Both paths give the distance a plain
``NearestNeighbours(bank).search(test_features, 1)`` returns.

*Maps and metrics.* The anomaly maps of all test images are computed for
every new bank, as two small matrix products (:class:`MapOperator`, read off
:func:`pcnotes.maps.anomaly_map`), and the pixel AUROC and AUPRO are
computed exactly over all pixels, sharing one sort (:class:`PixelMetrics`).
Nothing is subsampled: every number is the one a full evaluation gives.

*Scoring time.* The time shown is real: a plain kNN search of one test image
against the actual bank, which is what PatchCore with this bank pays per image.

*Caches.* Coresets and scores are cached per (category, sampler, bank size):
two ratios that give the same bank size give the same bank. The AUROC-vs-
ratio curve is read from the score cache, so it grows as the user explores.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcnotes.coreset import SAMPLERS, check_ratio, coreset_size, random_projection, select_coreset
from pcnotes.evaluation import load_split, stack
from pcnotes.maps import anomaly_map
from pcnotes.metrics import clip_curve, image_auroc, label_regions
from pcnotes.model import PatchCore, PatchCoreConfig
from pcnotes.patches import scores_to_grid, unpatch_scores
from pcnotes.scoring import NearestNeighbours, image_scores

__all__ = [
    "SAMPLER_NAMES",
    "NESTED_SAMPLERS",
    "NeighbourTable",
    "PrefixNearest",
    "MapOperator",
    "PixelMetrics",
    "CategoryData",
    "ExplorerState",
    "Stats",
    "prepare",
    "update",
    "stats_rows",
]

#: Dropdown label -> sampler name of :data:`pcnotes.coreset.SAMPLERS`.
SAMPLER_NAMES = {"random": "random", "approximate greedy": "approximate_greedy", "greedy": "greedy"}
#: Samplers whose coreset of size m is the first m picks of any larger run.
NESTED_SAMPLERS = ("approximate_greedy", "greedy")
PROJECTION_DIM = 128  # the greedy samplers' default projection


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
        """Steps of the running minimum over picks ``[0, before[q])`` of each query ``q``."""
        picks = torch.from_numpy(np.ascontiguousarray(picks, dtype=np.float32))
        pick_sq = (picks**2).sum(1)
        needy = np.argsort(before, kind="stable")
        needy = needy[before[needy] > 0]  # sorted by how many picks they need
        steps = []
        for start in range(0, len(needy), query_chunk):
            rows = needy[start : start + query_chunk]
            limit = torch.from_numpy(before[rows])[:, None]  # (c, 1)
            chunk = torch.from_numpy(np.ascontiguousarray(queries[rows], dtype=np.float32))
            chunk_sq = (chunk**2).sum(1, keepdim=True)
            current = torch.full((len(rows), 1), math.inf)
            for first in range(0, int(limit.max()), pick_block):
                block = slice(first, first + pick_block)
                squared = torch.addmm(chunk_sq + pick_sq[block], chunk, picks[block].T, alpha=-2).clamp_(min=0)
                running = torch.minimum(torch.cummin(squared, dim=1).values, current)
                dropped = running < torch.cat([current, running[:, :-1]], dim=1)
                size = torch.arange(first + 1, first + 1 + running.shape[1])  # bank size after each pick
                row, column = torch.nonzero(dropped & (size <= limit), as_tuple=True)
                steps.append((rows[row.numpy()], size[column].numpy(), running[row, column].sqrt().numpy()))
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
    """:func:`pcnotes.maps.anomaly_map` as a matrix product: ``(T, h, w) -> (T, H, W)``.

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

    The same numbers as :func:`pcnotes.metrics.pixel_auroc` and
    :func:`pcnotes.metrics.aupro` (the tests check it), computed faster for
    many maps of one test set: the defect regions and each pixel's PRO step
    are found once, in ``__init__``, and both metrics share one sort of the
    pixels. Both curves are read at the last pixel of each run of tied
    values, as in :func:`pcnotes.metrics.pro_curve`.
    """

    def __init__(self, masks: np.ndarray, *, max_fpr: float = 0.3):
        labeled, num_regions = label_regions(masks)
        self.shape = np.shape(masks)
        self.max_fpr = max_fpr
        self.labels = labeled.ravel().astype(np.int32)  # 0 good, r for a pixel of region r
        self.num_good = int((self.labels == 0).sum())
        self.num_defective = self.labels.size - self.num_good
        if num_regions == 0 or self.num_good == 0:
            raise ValueError("pixel metrics need both defective and defect-free pixels in the masks")
        # A pixel of region r adds 1 / (|r| * regions) to PRO; a good pixel (r = 0) adds nothing.
        region_size = np.bincount(self.labels)
        self.pro_step = np.concatenate(([0.0], 1.0 / (region_size[1:] * num_regions)))

    def __call__(self, maps: np.ndarray) -> tuple[float, float]:
        """``(pixel AUROC, AUPRO)`` of maps ``(T, H, W)``, exact."""
        maps = np.asarray(maps)
        if maps.shape != self.shape:
            raise ValueError(f"maps of shape {maps.shape} do not match the masks {self.shape}")
        values = maps.ravel()
        order = np.argsort(values)[::-1]  # descending; ties are grouped below
        ranked = values[order]
        labels = self.labels[order]
        last_of_run = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
        false_positives = np.cumsum(labels == 0)[last_of_run]
        true_positives = last_of_run + 1 - false_positives
        fpr = np.concatenate(([0.0], false_positives / self.num_good))
        tpr = np.concatenate(([0.0], true_positives / self.num_defective))
        pro = np.concatenate(([0.0], np.minimum(np.cumsum(self.pro_step[labels])[last_of_run], 1.0)))
        pro[-1] = 1.0  # every pixel detected: (1, 1) by definition
        return _area(fpr, tpr), _area(*clip_curve(fpr, pro, self.max_fpr)) / self.max_fpr


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under ``y(x)``, ``x`` non-decreasing (what sklearn's ``auc`` computes)."""
    return float(np.dot(np.diff(x), (y[1:] + y[:-1]) / 2))


# --------------------------------------------------------------------------
# What is extracted once per category
# --------------------------------------------------------------------------


@dataclass
class CategoryData:
    """Everything the explorer needs about one category, computed once."""

    name: str
    num_train_images: int
    train_features: np.ndarray  # (N, D) every training patch
    test_features: np.ndarray  # (T*h*w, D) every test patch
    grid: tuple[int, int]  # (h, w) patch grid of one image
    images: np.ndarray  # (T, 3, H, W) normalised test images, for display
    masks: np.ndarray  # (T, H, W) bool ground truth
    labels: np.ndarray  # (T,) 0 good, 1 defective
    defects: list[str]
    paths: list[str]
    projected: np.ndarray = field(repr=False)  # (N, 128) the greedy samplers' projection
    test_table: NeighbourTable = field(repr=False)  # test patches -> training patches, (D)
    train_table: NeighbourTable = field(repr=False)  # training -> training patches, (128)
    maps: MapOperator = field(repr=False)  # patch scores -> anomaly maps
    pixel_metrics: PixelMetrics = field(repr=False)  # the test masks' regions, for the metrics
    seconds: dict = field(default_factory=dict)  # how long each preparation step took

    @property
    def num_train(self) -> int:
        return len(self.train_features)

    @property
    def num_test(self) -> int:
        return len(self.labels)

    @property
    def image_labels(self) -> list[str]:
        """``"defect/file"`` for every test image, e.g. ``"hole/003.png"``."""
        return [f"{d}/{Path(p).name}" for d, p in zip(self.defects, self.paths)]

    @property
    def default_image(self) -> int:
        """The test image to open on: the defective one with the largest defect (0 if none)."""
        area = self.masks.reshape(self.num_test, -1).sum(axis=1)
        return int(np.argmax(area)) if area.max(initial=0) > 0 else 0


def load_category(root: Path, category: str, model: PatchCore, *, neighbours: int = 256) -> CategoryData:
    """Extract one category's features and build its two neighbour tables."""
    config = model.config
    seconds = {}
    start = time.perf_counter()
    train, test = load_split(root, category, "train", config), load_split(root, category, "test", config)
    train_images, _ = stack(train)
    test_images, masks = stack(test)
    train_features, grid = model.extract(train_images, desc=f"{category} train features")
    test_features, _ = model.extract(test_images, desc=f"{category} test features")
    seconds["extract"] = time.perf_counter() - start

    start = time.perf_counter()
    # The projection greedy_coreset and approximate_greedy_coreset use (same seed).
    projected = random_projection(torch.from_numpy(train_features), PROJECTION_DIM, seed=config.seed)
    projected = np.ascontiguousarray(projected.numpy())
    train_table = NeighbourTable(projected, projected, neighbours, backend=config.knn_backend)
    seconds["train_table"] = time.perf_counter() - start

    start = time.perf_counter()
    test_table = NeighbourTable(test_features, train_features, neighbours, backend=config.knn_backend)
    seconds["test_table"] = time.perf_counter() - start

    return CategoryData(
        name=category, num_train_images=len(train), train_features=train_features,
        test_features=test_features, grid=grid, images=test_images.numpy(), masks=masks,
        labels=np.asarray(test.labels), defects=list(test.defects), paths=list(test.paths),
        projected=projected, test_table=test_table, train_table=train_table,
        maps=MapOperator(grid, masks.shape[-2:], config.sigma), pixel_metrics=PixelMetrics(masks),
        seconds=seconds,
    )


# --------------------------------------------------------------------------
# The state: features and caches
# --------------------------------------------------------------------------


@dataclass
class CoresetResult:
    indices: np.ndarray  # (M,) int64 into the training patches
    seconds: float  # time of the sampler run these indices come from
    run_size: int  # how many points that run picked (>= M for a prefix)
    coverage_radius: float  # in the 128-d projection


@dataclass
class ScoreResult:
    score_grid: np.ndarray  # (T, h, w) patch scores of every test image
    image_scores: np.ndarray  # (T,)
    metrics: dict  # image_auroc, pixel_auroc, aupro
    map_range: tuple[float, float]  # min and max over all test maps: one colour scale
    seconds: float  # a plain kNN search of one test image against the bank
    patches_timed: int  # how many test patches that search scored
    table_misses: int  # test patches that needed a real search (0 on a greedy prefix)


@dataclass
class GreedyRun:
    """A greedy sampler's picks in order, and the prefix look-ups over its first picks."""

    order: np.ndarray  # (R,) int64 pick order
    seconds: float  # how long the sampler run took
    test: PrefixNearest  # test patches -> the first `test.num_picks` picks, (D)
    radius: np.ndarray  # (P,) coverage radius of the first m = 1..P picks, in the projection


class ExplorerState:
    """Features per category (extracted on first use) and the explorer's caches.

    Make it with :func:`prepare`. ``categories`` lists what the category
    picker offers; ``data(name)`` extracts a category the first time it is
    asked for. :meth:`cache_info` counts cache hits and misses. ``lock``
    lets one update run at a time (the widget updates in a thread of its own).
    """

    def __init__(self, root: Path, categories: list[str], config: PatchCoreConfig, *,
                 neighbours: int = 256, greedy_runs: tuple[float, ...] = (0.1, 1.0)):
        if not categories:
            raise ValueError(f"no categories to explore in {root}")
        self.root = Path(root)
        self.categories = list(categories)
        self.config = config
        self.neighbours = neighbours
        self.greedy_runs = tuple(sorted(check_ratio(r) for r in greedy_runs))
        if self.greedy_runs[-1] != 1.0:
            raise ValueError(f"greedy_runs must end with 1.0 (every ratio needs a run), got {greedy_runs}")
        self.model = PatchCore(config)  # only its backbone is used: to extract features
        self.lock = threading.RLock()
        self._data: dict[str, CategoryData] = {}
        self.clear_caches()

    def clear_caches(self) -> None:
        """Forget every coreset, greedy run and score (not the features), and reset the counters."""
        self._coresets: dict[tuple[str, str, int], CoresetResult] = {}
        self._greedy_runs: dict[tuple[str, str], GreedyRun] = {}
        self._scores: dict[tuple[str, str, int], ScoreResult] = {}
        self.counters = dict.fromkeys(
            ["coreset_hits", "coreset_misses", "sampler_runs", "score_hits", "score_misses"], 0
        )

    def __repr__(self) -> str:
        return (f"ExplorerState(root={str(self.root)!r}, categories={self.categories}, "
                f"loaded={list(self._data)}, backbone={self.config.backbone!r})")

    def is_loaded(self, category: str) -> bool:
        return category in self._data

    def data(self, category: str | None = None) -> CategoryData:
        """The category's features (default: the first category), extracting them on first use."""
        category = self.categories[0] if category is None else category
        if category not in self.categories:
            raise ValueError(f"unknown category {category!r}; this explorer has {self.categories}")
        with self.lock:
            if category not in self._data:
                self._data[category] = load_category(self.root, category, self.model,
                                                     neighbours=self.neighbours)
        return self._data[category]

    def cache_info(self) -> dict[str, int]:
        """Hit and miss counts of the coreset and score caches, and sampler runs."""
        return dict(self.counters, coresets_cached=len(self._coresets), scores_cached=len(self._scores))

    # -- coreset -----------------------------------------------------------------
    def coreset(self, data: CategoryData, sampler: str, size: int) -> tuple[CoresetResult, bool]:
        """The sampler's coreset of ``size`` training patches, and whether it was cached."""
        key = (data.name, sampler, size)
        if key in self._coresets:
            self.counters["coreset_hits"] += 1
            return self._coresets[key], True
        self.counters["coreset_misses"] += 1
        run = None
        if sampler in NESTED_SAMPLERS:
            run = self.greedy_run(data, sampler, size)
            indices, seconds, run_size = run.order[:size], run.seconds, len(run.order)
        else:
            start = time.perf_counter()
            indices = select_coreset(data.train_features, sampler=sampler, size=size,
                                     seed=self.config.seed)
            seconds, run_size = time.perf_counter() - start, size
            self.counters["sampler_runs"] += 1
        if run is not None and size <= len(run.radius):
            radius = float(run.radius[size - 1])
        else:
            radii = data.train_table.nearest_in(indices)
            radii[indices] = 0.0  # a kept patch covers itself (faiss rounding can leave ~1e-3)
            radius = float(radii.max())
        result = CoresetResult(indices, seconds, run_size, radius)
        self._coresets[key] = result
        return result, False

    def greedy_run(self, data: CategoryData, sampler: str, size: int) -> GreedyRun:
        """A greedy run of at least ``size`` picks, with its prefix look-ups.

        A run is reused for every smaller size (greedy k-center is nested).
        Runs go to the first ratio of ``greedy_runs`` (10 %, 100 %) that is
        large enough, so that dragging the slider upwards does not re-run the
        sampler at every step: each run starts with a full pass over the bank.
        The prefix look-ups cover the first ``greedy_runs[0]`` of the picks.
        """
        key = (data.name, sampler)
        run = self._greedy_runs.get(key)
        if run is None or len(run.order) < size:
            sizes = [coreset_size(data.num_train, r) for r in self.greedy_runs]
            run_size = next(n for n in sizes if n >= size)
            start = time.perf_counter()
            order = select_coreset(data.train_features, sampler=sampler, size=run_size,
                                   seed=self.config.seed)
            seconds = time.perf_counter() - start
            self.counters["sampler_runs"] += 1
            if run is None:  # the look-ups only need the first picks: those of any run
                first = order[: sizes[0]]
                radius = PrefixNearest(data.train_table, first).largest()
                run = GreedyRun(order, seconds, PrefixNearest(data.test_table, first), radius)
            else:
                run = GreedyRun(order, seconds, run.test, run.radius)
            self._greedy_runs[key] = run
        return run

    def will_run_sampler(self, category: str, sampler: str, ratio: float) -> bool:
        """Whether this setting needs a new greedy run (seconds to a minute), not a cached prefix."""
        if sampler not in NESTED_SAMPLERS or category not in self._data:
            return False
        run = self._greedy_runs.get((category, sampler))
        return run is None or len(run.order) < coreset_size(self._data[category].num_train, ratio)

    # -- scores ------------------------------------------------------------------
    def scores(self, data: CategoryData, sampler: str, coreset: CoresetResult,
               timed_image: int = 0) -> tuple[ScoreResult, bool]:
        """Score the whole test set against the coreset bank (cached), and whether it was cached."""
        size = len(coreset.indices)
        key = (data.name, sampler, size)
        if key in self._scores:
            self.counters["score_hits"] += 1
            return self._scores[key], True
        self.counters["score_misses"] += 1
        config = self.config
        # Each test patch's distance to its nearest bank entry: (T*h*w,).
        run = self._greedy_runs.get((data.name, sampler)) if sampler in NESTED_SAMPLERS else None
        if run is not None and size <= run.test.num_picks:
            nearest, misses = run.test.nearest(size), 0
        else:
            nearest = data.test_table.nearest_in(coreset.indices)
            misses = data.test_table.misses
        if config.squared:
            nearest = nearest**2
        # (T*h*w,) -> (T, h*w) -> (T, h, w), the layout of pcnotes.scoring.score_grid.
        score_grid = scores_to_grid(unpatch_scores(torch.from_numpy(nearest), data.num_test), data.grid).numpy()
        maps = data.maps(score_grid)  # (T, H, W)
        scores = image_scores(score_grid)
        pixel, pro = data.pixel_metrics(maps)
        metrics = {"image_auroc": image_auroc(data.labels, scores), "pixel_auroc": pixel, "aupro": pro}

        # What PatchCore with this bank really pays per image: a plain kNN search.
        patches = int(np.prod(data.grid))
        queries = data.test_features[timed_image * patches : (timed_image + 1) * patches]
        index = NearestNeighbours(data.train_features[coreset.indices], backend=config.knn_backend,
                                  squared=config.squared)
        start = time.perf_counter()
        index.search(queries, 1)
        seconds = time.perf_counter() - start

        result = ScoreResult(score_grid, scores, metrics, (float(maps.min()), float(maps.max())),
                             seconds, patches, misses)
        self._scores[key] = result
        return result, False

    def history(self, category: str) -> dict[str, list[tuple[float, float, float]]]:
        """Every scored bank of a category: ``{sampler: [(ratio, image AUROC, pixel AUROC), ...]}``.

        Sorted by ratio; the ratio is the effective one, ``M / N``.
        """
        if category not in self._data:
            return {}
        n = self._data[category].num_train
        curves: dict[str, list] = {}
        for (name, sampler, size), result in list(self._scores.items()):
            if name == category:
                curves.setdefault(sampler, []).append(
                    (size / n, result.metrics["image_auroc"], result.metrics["pixel_auroc"]))
        return {sampler: sorted(points) for sampler, points in curves.items()}


def prepare(root: str | Path | None = None, categories=None, config: PatchCoreConfig | None = None,
            *, load: str = "first", neighbours: int = 256,
            greedy_runs: tuple[float, ...] = (0.1, 1.0)) -> ExplorerState:
    """Set up the explorer: extract features and build the neighbour tables.

    * ``root``: data in the MVTec AD layout; default the generated set
      (:func:`pcnotes.synth.ensure_default_dataset`, drawn on first use).
    * ``categories``: those the picker offers; default all in ``root``.
    * ``config``: backbone, layers, seed, sigma... (:class:`PatchCoreConfig`);
      its ``sampler`` and ``coreset_ratio`` are ignored (the widget sets them).
    * ``load``: ``"first"`` extracts the first category now and the others
      when they are first picked; ``"all"`` extracts them all now.
    * ``neighbours``: ``K`` of the neighbour tables; ``greedy_runs``: the
      ratios the greedy samplers run to (see :meth:`ExplorerState.greedy_run`).
    """
    from pcnotes.data import list_categories
    from pcnotes.synth import ensure_default_dataset

    config = config or PatchCoreConfig()
    if config.num_neighbors != 1 or config.reweight:
        raise ValueError(
            "the explorer scores a patch by its single nearest bank entry: it needs "
            f"num_neighbors=1 and reweight=0, got num_neighbors={config.num_neighbors}, "
            f"reweight={config.reweight}"
        )
    if load not in ("first", "all"):
        raise ValueError(f"load must be 'first' or 'all', got {load!r}")
    root = Path(root) if root is not None else ensure_default_dataset()
    available = list_categories(root)
    if categories is None:
        categories = available
    elif isinstance(categories, str):
        categories = [categories]
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise ValueError(f"{root}: no category {unknown} (found: {', '.join(available) or 'none'})")
    state = ExplorerState(root, list(categories), config, neighbours=neighbours, greedy_runs=greedy_runs)
    for category in state.categories[: None if load == "all" else 1]:
        state.data(category)
    return state


# --------------------------------------------------------------------------
# One update: the pure function behind the widget
# --------------------------------------------------------------------------


@dataclass
class Stats:
    """What one setting of the controls gives. Arrays are for the views."""

    category: str
    sampler: str
    ratio: float  # as requested
    bank_size: int  # M
    num_train: int  # N
    coverage_radius: float
    image_auroc: float
    pixel_auroc: float
    aupro: float
    selection_seconds: float
    scoring_seconds: float  # plain kNN search of one test image against the bank
    run_size: int  # picks of the sampler run the coreset comes from
    image_index: int
    image_label: str  # "defect/file"
    image_score: float
    coreset_cached: bool
    greedy_ran: bool  # this update ran a greedy sampler (not a prefix of an earlier run)
    scores_cached: bool
    table_misses: int
    patches_timed: int
    num_test: int
    num_pixels: int  # pixels the pixel metrics were computed over (all of them)
    seconds: float  # the whole update
    indices: np.ndarray = field(repr=False)  # (M,) the bank, into the training patches
    train_features: np.ndarray = field(repr=False)  # (N, D) all training patches (not a copy)
    image_scores: np.ndarray = field(repr=False)  # (T,) every test image's score
    image: np.ndarray = field(repr=False)  # (3, H, W) normalised
    amap: np.ndarray = field(repr=False)  # (H, W) its anomaly map
    mask: np.ndarray = field(repr=False)  # (H, W) bool ground truth
    map_range: tuple[float, float] = (0.0, 1.0)  # shared colour scale of the test set

    @property
    def effective_ratio(self) -> float:
        return self.bank_size / self.num_train

    @property
    def bank_mib(self) -> float:
        """Memory of the bank: ``M x D`` float32."""
        return self.bank_size * self.train_features.shape[1] * 4 / 2**20


def update(ratio: float, sampler: str = "approximate_greedy", category: str | None = None,
           image_index: int | None = None, *, cache: ExplorerState) -> Stats:
    """Bank, coverage, metrics and the chosen test image's heat map for one setting.

    ``ratio`` in (0, 1]; ``sampler`` one of ``random``, ``approximate_greedy``,
    ``greedy``; ``category`` defaults to the first; ``image_index`` picks
    the test image whose map is returned (default: the one with the largest
    defect, :attr:`CategoryData.default_image`). Coresets and scores come
    from ``cache`` when this bank size was seen before.
    """
    start = time.perf_counter()
    ratio = check_ratio(ratio)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    with cache.lock:
        data = cache.data(category)
        if image_index is None:
            image_index = data.default_image
        if isinstance(image_index, bool) or not isinstance(image_index, numbers.Integral) \
                or not 0 <= image_index < data.num_test:
            raise ValueError(f"image_index must be in [0, {data.num_test}) for {data.name}, "
                             f"got {image_index!r}")
        image_index = int(image_index)

        size = coreset_size(data.num_train, ratio)
        greedy_ran = cache.will_run_sampler(data.name, sampler, ratio)
        coreset, coreset_cached = cache.coreset(data, sampler, size)
        scored, scores_cached = cache.scores(data, sampler, coreset, timed_image=image_index)
    amap = data.maps(scored.score_grid[image_index : image_index + 1])[0]
    return Stats(
        category=data.name, sampler=sampler, ratio=ratio, bank_size=size, num_train=data.num_train,
        coverage_radius=coreset.coverage_radius, **scored.metrics,
        selection_seconds=coreset.seconds, scoring_seconds=scored.seconds, run_size=coreset.run_size,
        image_index=image_index, image_label=data.image_labels[image_index],
        image_score=float(scored.image_scores[image_index]),
        coreset_cached=coreset_cached, greedy_ran=greedy_ran, scores_cached=scores_cached,
        table_misses=scored.table_misses, patches_timed=scored.patches_timed, num_test=data.num_test,
        num_pixels=int(data.masks.size), seconds=time.perf_counter() - start,
        indices=coreset.indices, train_features=data.train_features,
        image_scores=scored.image_scores, image=data.images[image_index], amap=amap, mask=data.masks[image_index],
        map_range=scored.map_range,
    )


# --------------------------------------------------------------------------
# The stats as text (the widget's table and the notebook's printout)
# --------------------------------------------------------------------------


def format_seconds(value: float) -> str:
    """``0.0123 -> "12 ms"``, ``2.345 -> "2.3 s"``."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def stats_rows(stats: Stats) -> list[tuple[str, str]]:
    """The stats table as (name, value) rows, shared by the widget and the notebook."""
    label = {v: k for k, v in SAMPLER_NAMES.items()}[stats.sampler]
    if stats.sampler in NESTED_SAMPLERS and stats.run_size > stats.bank_size:
        selection = (f"{format_seconds(stats.selection_seconds)} for a {stats.run_size:,}-pick run; "
                     f"this bank is its first {stats.bank_size:,} picks")
    else:
        selection = format_seconds(stats.selection_seconds)
    return [
        ("sampler", label),
        ("coreset ratio", f"{stats.ratio:.4f}"),
        ("bank size", f"{stats.bank_size:,} of {stats.num_train:,} patches ({stats.effective_ratio:.2%})"),
        ("bank memory", f"{stats.bank_mib:.1f} MiB"),
        ("coverage radius", f"{stats.coverage_radius:.2f} (in the 128-d projection)"),
        ("image AUROC", f"{stats.image_auroc:.3f} ({stats.num_test} test images)"),
        ("pixel AUROC", f"{stats.pixel_auroc:.3f} (all {stats.num_pixels:,} pixels)"),
        ("AUPRO", f"{stats.aupro:.3f} (all pixels, FPR up to 0.3)"),
        ("selection time", selection),
        ("scoring time", f"{format_seconds(stats.scoring_seconds)} per image "
                         f"({stats.patches_timed:,} × {stats.bank_size:,} distances)"),
        ("test image", f"{stats.image_label}, score {stats.image_score:.2f}"),
    ]
