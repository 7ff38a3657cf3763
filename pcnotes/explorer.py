"""The coreset-ratio explorer: drag a slider, watch what a smaller memory bank costs.

PatchCore keeps a fraction ``ratio`` of all training patches as its memory
bank. A smaller bank is faster to search and to store, but it covers the
normal patches less tightly, and at some point the detector gets worse. This
module lets a class *see* that trade-off, one slider movement at a time::

    state = prepare()              # extract features once (tens of seconds)
    build_explorer(state)          # the widget: every change answers in ~1 s

It is split so that the logic can be tested without a browser:

* :func:`prepare` extracts, per category, the training patch features
  ``(N, D)``, the test patch features ``(T*h*w, D)``, the test masks and
  labels, and two *neighbour tables* (below). It returns an
  :class:`ExplorerState`, which also holds every cache.
* :func:`update` is a plain function ``(ratio, sampler, category, image)
  -> Stats``: bank size, coverage radius, image AUROC, pixel AUROC, AUPRO,
  timings and the arrays the plots need.
* :func:`build_explorer` wires ``update`` to ipywidgets controls and draws
  the views with :mod:`pcnotes.viz`.

How an update stays fast (the numbers are in ``notebooks/06_coreset_explorer``)
--------------------------------------------------------------------------------
*Coreset.* Greedy k-center is **nested**: its first ``m`` picks do not
depend on how many picks follow, so the coreset for a small ratio is a
prefix of the coreset for a larger one. For the two greedy samplers the
explorer runs :func:`pcnotes.coreset.select_coreset` to 10 % the first time
(enough for every ratio up to 10 %) and to 100 % the first time a larger
ratio is asked for, and slices. So each greedy sampler runs at most twice
per category. The random sampler is not nested (another ``M`` draws another
subset), so it is simply called; it takes milliseconds.

*Scoring.* Every memory bank is a subset of the ``N`` training patches. So
:class:`NeighbourTable` finds, once, each test patch's ``K`` nearest training
patches (with :class:`pcnotes.scoring.NearestNeighbours`, exact L2 on faiss).
For any bank, a test patch's nearest bank entry is then the first of its
``K`` listed neighbours that is in the bank: a table look-up instead of a
search through ``M`` vectors. Only patches none of whose ``K`` neighbours were
kept are searched the ordinary way: many at small ratios, above all for the
greedy samplers, which thin out dense regions; but there the bank is small
and the search cheap. The result is exactly the distance a
plain ``NearestNeighbours(bank).search(test_features, 1)`` returns; a test
checks that. The *scoring time* shown is nevertheless real: a plain kNN
search of one test image against the actual bank, i.e. what PatchCore with
this bank pays per image.

*Coverage radius.* ``max_x min_{c in bank} ||x - c||`` over all training
patches, measured in the 128-d random projection that the greedy samplers
work in (the quantity greedy k-center keeps small), with a second table of
each training patch's nearest training patches in that space.

*Caches.* Coresets and scores are cached per (category, sampler, bank size):
two ratios that give the same bank size give the same bank. The AUROC-vs-
ratio curve is read from the score cache, so it grows as the user explores.
"""

from __future__ import annotations

import base64
import io
import math
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch

from pcnotes.coreset import SAMPLERS, check_ratio, coreset_size, random_projection, select_coreset
from pcnotes.evaluation import compute_metrics, load_split, stack
from pcnotes.maps import anomaly_map
from pcnotes.model import PatchCore, PatchCoreConfig
from pcnotes.scoring import NearestNeighbours, image_scores

__all__ = [
    "SAMPLER_NAMES",
    "NeighbourTable",
    "CategoryData",
    "ExplorerState",
    "Stats",
    "prepare",
    "update",
    "ExplorerFigure",
    "CoresetExplorer",
    "build_explorer",
]

#: Dropdown label -> sampler name of :data:`pcnotes.coreset.SAMPLERS`.
SAMPLER_NAMES = {"random": "random", "approximate greedy": "approximate_greedy", "greedy": "greedy"}
#: Samplers whose coreset of size m is the first m picks of any larger run.
NESTED_SAMPLERS = ("approximate_greedy", "greedy")
PROJECTION_DIM = 128  # the greedy samplers' default projection
SAMPLER_COLOURS = {"random": "tab:orange", "approximate_greedy": "tab:blue", "greedy": "tab:green"}


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
        projected=projected, test_table=test_table, train_table=train_table, seconds=seconds,
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
    table_misses: int  # test patches the neighbour table could not answer


class ExplorerState:
    """Features per category (extracted on first use) and the explorer's caches.

    Make it with :func:`prepare`. ``categories`` lists what the category
    picker offers; ``data(name)`` extracts a category the first time it is
    asked for. :meth:`cache_info` counts cache hits and misses.
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
        self._data: dict[str, CategoryData] = {}
        self.clear_caches()

    def clear_caches(self) -> None:
        """Forget every coreset, greedy run and score (not the features), and reset the counters."""
        self._coresets: dict[tuple[str, str, int], CoresetResult] = {}
        self._greedy_orders: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
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
        if category not in self._data:
            self._data[category] = load_category(self.root, category, self.model,
                                                 neighbours=self.neighbours)
        return self._data[category]

    def image_labels(self, category: str) -> list[str]:
        """Labels of the category's test images without extracting anything."""
        if category in self._data:
            return self._data[category].image_labels
        test = load_split(self.root, category, "test", self.config)
        return [f"{d}/{Path(p).name}" for d, p in zip(test.defects, test.paths)]

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
        if sampler in NESTED_SAMPLERS:
            order, seconds = self._greedy_order(data, sampler, size)
            indices, run_size = order[:size], len(order)
        else:
            start = time.perf_counter()
            indices = select_coreset(data.train_features, sampler=sampler, size=size,
                                     seed=self.config.seed)
            seconds, run_size = time.perf_counter() - start, size
            self.counters["sampler_runs"] += 1
        radii = data.train_table.nearest_in(indices)
        radii[indices] = 0.0  # a kept patch covers itself (faiss rounding can leave ~1e-3)
        result = CoresetResult(indices, seconds, run_size, float(radii.max()))
        self._coresets[key] = result
        return result, False

    def _greedy_order(self, data: CategoryData, sampler: str, size: int) -> tuple[np.ndarray, float]:
        """A greedy run of at least ``size`` picks, in pick order, and how long it took.

        A run is reused for every smaller size (greedy k-center is nested).
        Runs go to the first ratio of ``greedy_runs`` (10 %, 100 %) that is
        large enough, so that dragging the slider upwards does not re-run the
        sampler at every step: each run starts with a full pass over the bank.
        """
        key = (data.name, sampler)
        order, seconds = self._greedy_orders.get(key, (np.empty(0, dtype=np.int64), 0.0))
        if len(order) < size:
            run_size = next(n for n in (coreset_size(data.num_train, r) for r in self.greedy_runs) if n >= size)
            start = time.perf_counter()
            order = select_coreset(data.train_features, sampler=sampler, size=run_size,
                                   seed=self.config.seed)
            seconds = time.perf_counter() - start
            self.counters["sampler_runs"] += 1
            self._greedy_orders[key] = (order, seconds)
        return order, seconds

    def will_run_sampler(self, category: str, sampler: str, ratio: float) -> bool:
        """Whether this setting needs a new greedy run (seconds to a minute), not a cached prefix."""
        if sampler not in NESTED_SAMPLERS or category not in self._data:
            return False
        order, _ = self._greedy_orders.get((category, sampler), ((), 0.0))
        return len(order) < coreset_size(self._data[category].num_train, ratio)

    # -- scores ------------------------------------------------------------------
    def scores(self, data: CategoryData, sampler: str, coreset: CoresetResult,
               timed_image: int = 0) -> tuple[ScoreResult, bool]:
        """Score the whole test set against the coreset bank (cached), and whether it was cached."""
        key = (data.name, sampler, len(coreset.indices))
        if key in self._scores:
            self.counters["score_hits"] += 1
            return self._scores[key], True
        self.counters["score_misses"] += 1
        config = self.config
        # Patch scores of every test patch: (T*h*w,) -> (T, h, w).
        nearest = data.test_table.nearest_in(coreset.indices)
        if config.squared:
            nearest = nearest**2
        score_grid = nearest.reshape(data.num_test, *data.grid)
        maps = anomaly_map(score_grid, size=data.masks.shape[-2:], sigma=config.sigma)  # (T, H, W)
        scores = image_scores(score_grid)
        metrics = compute_metrics(data.labels, scores, data.masks, maps)

        # What PatchCore with this bank really pays per image: a plain kNN search.
        patches = int(np.prod(data.grid))
        queries = data.test_features[timed_image * patches : (timed_image + 1) * patches]
        index = NearestNeighbours(data.train_features[coreset.indices], backend=config.knn_backend,
                                  squared=config.squared)
        start = time.perf_counter()
        index.search(queries, 1)
        seconds = time.perf_counter() - start

        result = ScoreResult(score_grid, scores, metrics, (float(maps.min()), float(maps.max())),
                             seconds, patches, data.test_table.misses)
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
        for (name, sampler, size), result in self._scores.items():
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
      ratios the greedy samplers run to (see :meth:`ExplorerState._greedy_order`).
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
    scores_cached: bool
    table_misses: int
    patches_timed: int
    num_test: int
    seconds: float  # the whole update
    indices: np.ndarray = field(repr=False)  # (M,) the bank, into the training patches
    train_features: np.ndarray = field(repr=False)  # (N, D) all training patches (not a copy)
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
           image_index: int = 0, *, cache: ExplorerState) -> Stats:
    """Bank, coverage, metrics and the chosen test image's heat map for one setting.

    ``ratio`` in (0, 1]; ``sampler`` one of ``random``, ``approximate_greedy``,
    ``greedy``; ``category`` defaults to the first; ``image_index`` picks
    the test image whose map is returned. Coresets and scores come from
    ``cache`` when this bank size was seen before.
    """
    start = time.perf_counter()
    ratio = check_ratio(ratio)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    data = cache.data(category)
    if isinstance(image_index, bool) or not isinstance(image_index, numbers.Integral) \
            or not 0 <= image_index < data.num_test:
        raise ValueError(f"image_index must be in [0, {data.num_test}) for {data.name}, got {image_index!r}")
    image_index = int(image_index)

    size = coreset_size(data.num_train, ratio)
    coreset, coreset_cached = cache.coreset(data, sampler, size)
    scored, scores_cached = cache.scores(data, sampler, coreset, timed_image=image_index)
    config = cache.config
    amap = anomaly_map(scored.score_grid[image_index : image_index + 1],
                       size=data.masks.shape[-2:], sigma=config.sigma)[0]
    return Stats(
        category=data.name, sampler=sampler, ratio=ratio, bank_size=size, num_train=data.num_train,
        coverage_radius=coreset.coverage_radius, **scored.metrics,
        selection_seconds=coreset.seconds, scoring_seconds=scored.seconds, run_size=coreset.run_size,
        image_index=image_index, image_label=data.image_labels[image_index],
        image_score=float(scored.image_scores[image_index]),
        coreset_cached=coreset_cached, scores_cached=scores_cached,
        table_misses=scored.table_misses, patches_timed=scored.patches_timed, num_test=data.num_test,
        seconds=time.perf_counter() - start, indices=coreset.indices, train_features=data.train_features,
        image=data.images[image_index], amap=amap, mask=data.masks[image_index],
        map_range=scored.map_range,
    )


# --------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def stats_rows(stats: Stats) -> list[tuple[str, str]]:
    """The stats table as (name, value) rows, shared by the widget and the notebook."""
    label = {v: k for k, v in SAMPLER_NAMES.items()}[stats.sampler]
    if stats.sampler in NESTED_SAMPLERS and stats.run_size > stats.bank_size:
        selection = (f"{_seconds(stats.selection_seconds)} for a {stats.run_size:,}-pick run; "
                     f"this bank is its first {stats.bank_size:,} picks")
    else:
        selection = _seconds(stats.selection_seconds)
    return [
        ("sampler", label),
        ("bank size", f"{stats.bank_size:,} of {stats.num_train:,} patches ({stats.effective_ratio:.2%})"),
        ("bank memory", f"{stats.bank_mib:.1f} MiB"),
        ("coverage radius", f"{stats.coverage_radius:.2f} (in the 128-d projection)"),
        ("image AUROC", f"{stats.image_auroc:.3f}"),
        ("pixel AUROC", f"{stats.pixel_auroc:.3f}"),
        ("AUPRO", f"{stats.aupro:.3f}"),
        ("selection time", selection),
        ("scoring time", f"{_seconds(stats.scoring_seconds)} per image "
                         f"({stats.patches_timed:,} × {stats.bank_size:,} distances)"),
        ("test image", f"{stats.image_label}, score {stats.image_score:.2f}"),
    ]


def stats_html(stats: Stats) -> str:
    """The stats table as HTML for the widget (line heights set: JupyterLab's are for controls)."""
    cell = "text-align:left;vertical-align:top;padding:3px 0;line-height:1.35"
    rows = "".join(
        f"<tr><th style='{cell};padding-right:12px;white-space:nowrap'>{name}</th>"
        f"<td style='{cell}'>{value}</td></tr>"
        for name, value in stats_rows(stats)
    )
    sources = (f"coreset {'from cache' if stats.coreset_cached else 'new'}, "
               f"scores {'from cache' if stats.scores_cached else 'new'}")
    return (f"<table style='font-size:13px;border-collapse:collapse'>{rows}</table>"
            f"<div style='color:#666;font-size:12px;line-height:1.35;margin-top:6px'>"
            f"numbers computed in {_seconds(stats.seconds)} ({sources})</div>")


class ExplorerFigure:
    """One figure, re-used for every update: bank scatter, AUROC curve, image, heat map.

    Building a matplotlib figure costs more than drawing into one, so the
    axes are made once and cleared before each redraw.
    """

    SIZE = (9.6, 6.6)  # inches

    def __init__(self, dpi: int = 72):
        from matplotlib.figure import Figure

        width, height = self.SIZE
        self.fig = Figure(figsize=self.SIZE, dpi=dpi)
        # Hand-placed axes (fractions of the figure): no layout engine runs per update.
        self.bank_ax = self.fig.add_axes([0.07, 0.58, 0.38, 0.36])
        self.curve_ax = self.fig.add_axes([0.58, 0.58, 0.38, 0.36])
        side = 0.40  # the two image panels are square: side (of the height) x side * h / w
        self.image_ax = self.fig.add_axes([0.02, 0.04, side * height / width, side])
        self.map_ax = self.fig.add_axes([0.31, 0.04, side * height / width, side])
        self.colorbar_ax = self.fig.add_axes([0.595, 0.06, 0.012, side - 0.04])
        self._bank_shown = None  # (category, sampler, M) in the bank panel now

    def draw(self, stats: Stats, history: dict | None = None):
        """Redraw every panel for ``stats``; ``history`` as :meth:`ExplorerState.history`."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        from pcnotes.viz import draw_mask_contour, overlay_heatmap, pca_scatter, show_image

        bank = (stats.category, stats.sampler, stats.bank_size)
        for ax in self.fig.axes:
            if ax is not self.bank_ax or bank != self._bank_shown:
                ax.cla()
        for legend in list(self.fig.legends):
            legend.remove()
        if bank != self._bank_shown:  # a new test image alone leaves the bank panel as it is
            pca_scatter(self.bank_ax, stats.train_features, stats.indices)
            self.bank_ax.set_title(f"memory bank: {stats.bank_size:,} of {stats.num_train:,} patches",
                                   fontsize=11)
            self._bank_shown = bank
        self._draw_curve(stats, history or {})

        show_image(self.image_ax, stats.image)
        draw_mask_contour(self.image_ax, stats.mask)
        truth = "good" if not stats.mask.any() else "defect outlined"
        self.image_ax.set_title(f"{stats.image_label} ({truth})", fontsize=10)
        vmin, vmax = stats.map_range  # one scale for the whole test set
        overlay_heatmap(self.map_ax, stats.image, stats.amap, vmin=vmin, vmax=vmax)
        draw_mask_contour(self.map_ax, stats.mask)
        self.map_ax.set_title(f"anomaly map, image score {stats.image_score:.2f}", fontsize=10)
        self.fig.colorbar(ScalarMappable(norm=Normalize(vmin, vmax), cmap="jet"), cax=self.colorbar_ax)
        self.colorbar_ax.tick_params(labelsize=8)
        return self.fig

    def _draw_curve(self, stats: Stats, history: dict) -> None:
        from matplotlib.lines import Line2D

        ax = self.curve_ax
        labels = {v: k for k, v in SAMPLER_NAMES.items()}
        handles = []
        for sampler in SAMPLER_NAMES.values():  # always the same order and colours
            if not history.get(sampler):
                continue
            ratios, image, pixel = np.array(history[sampler]).T
            colour = SAMPLER_COLOURS[sampler]
            ax.plot(ratios, image, "o-", color=colour, ms=4)
            ax.plot(ratios, pixel, "s--", color=colour, ms=3, alpha=0.7)
            handles.append(Line2D([], [], color=colour, lw=6, label=labels[sampler]))
        ax.plot([stats.effective_ratio] * 2, [stats.image_auroc, stats.pixel_auroc], "o", ms=11,
                mfc="none", mec="black")
        handles += [Line2D([], [], color="0.3", marker="o", ms=4, label="image AUROC"),
                    Line2D([], [], color="0.3", marker="s", ms=3, ls="--", label="pixel AUROC"),
                    Line2D([], [], color="black", marker="o", ms=11, mfc="none", ls="",
                           label="current setting")]
        ax.set_xscale("log")
        ax.set_xlim(7e-4, 1.4)
        values = [v for points in history.values() for p in points for v in p[1:]]
        low = min(values + [stats.image_auroc, stats.pixel_auroc])
        ax.set_ylim(math.floor((low - 0.02) * 20) / 20, 1.005)  # down to a multiple of 0.05
        ax.set_xlabel("coreset ratio (log scale)")
        ax.set_ylabel("AUROC on the test set")
        ax.set_title("AUROC against ratio, as you explore", fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        # The legend sits in the free corner under the curve.
        self.fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.81, 0.25), fontsize=9,
                        frameon=False, title="curve", title_fontsize=9)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        # zlib level 1: a third of the encoding time, files a little larger.
        self.fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        return buffer.getvalue()


# --------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------


def _png_output(png: bytes, width: int, height: int) -> dict:
    """A ``display_data`` output holding a PNG, as an Output widget stores it."""
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(png).decode("ascii"),
                 "text/plain": "<coreset explorer figure>"},
        "metadata": {"image/png": {"width": width, "height": height}},
    }


class CoresetExplorer(widgets.VBox):
    """Controls, a stats table and the figure; made by :func:`build_explorer`.

    Attributes for tests and notebooks: ``ratio`` (FloatLogSlider),
    ``sampler``, ``category``, ``image`` (Dropdowns), ``status`` and
    ``stats_html`` (HTML), ``plots_output`` (Output), ``stats`` (the last
    :class:`Stats`), ``updates`` (how many updates ran).

    Updates never stack. While one runs, the controls are disabled and the
    status says "updating…"; a change that still arrives meanwhile is only
    remembered (``_pending``), and when the running update is done, one more
    runs with the latest values. Everything stays on the kernel's one thread.
    """

    def __init__(self, state: ExplorerState, *, ratio: float = 0.01,
                 sampler: str = "approximate_greedy", category: str | None = None, dpi: int = 72):
        self.state = state
        category = category or state.categories[0]
        narrow, wide = {"description_width": "75px"}, {"description_width": "95px"}
        self.ratio = widgets.FloatLogSlider(
            value=check_ratio(ratio), base=10, min=-3, max=0, step=0.1,
            description="coreset ratio", readout_format=".4f", continuous_update=False,
            style=wide, layout=widgets.Layout(width="430px"))
        self.sampler = widgets.Dropdown(
            options=list(SAMPLER_NAMES.items()), value=sampler, description="sampler",
            style=narrow, layout=widgets.Layout(width="300px"))
        self.category = widgets.Dropdown(
            options=state.categories, value=category, description="category",
            style=wide, layout=widgets.Layout(width="430px"))
        self.image = widgets.Dropdown(
            options=self._image_options(category), value=0, description="test image",
            style=narrow, layout=widgets.Layout(width="300px"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        self.stats_html = widgets.HTML(layout=widgets.Layout(width="350px", margin="6px 16px 0 4px"))
        self.plots_output = widgets.Output()
        # CSS classes, so that a browser test can find each part.
        for widget, name in [(self.ratio, "ratio"), (self.sampler, "sampler"),
                             (self.category, "category"), (self.image, "image"),
                             (self.status, "status"), (self.stats_html, "stats"),
                             (self.plots_output, "plots")]:
            widget.add_class(f"pcnotes-explorer-{name}")
        self.controls = (self.ratio, self.sampler, self.category, self.image)
        self.figure = ExplorerFigure(dpi=dpi)
        self.stats: Stats | None = None
        self.last_png: bytes | None = None
        self.updates = 0
        self._busy = False
        self._pending: tuple | None = None  # the latest request not yet shown
        self._shown: tuple | None = None  # the request on screen
        self._error: str | None = None
        self._seconds = 0.0
        super().__init__([
            widgets.HBox([self.ratio, self.sampler, self.status],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.category, self.image]),
            # wraps: on a narrow screen the figure goes below the table
            widgets.HBox([self.stats_html, self.plots_output], layout=widgets.Layout(flex_flow="row wrap")),
        ])
        self.add_class("pcnotes-explorer")
        self.category.observe(self._on_category, names="value")
        for control in (self.ratio, self.sampler, self.image):
            control.observe(self._on_change, names="value")
        self._on_change()

    def _image_options(self, category: str) -> list[tuple[str, int]]:
        return [(label, i) for i, label in enumerate(self.state.image_labels(category))]

    def _requested(self) -> tuple:
        return (self.ratio.value, self.sampler.value, self.category.value, self.image.value)

    def _on_category(self, change) -> None:
        # Another test set: the image picker starts again at its first image.
        self.image.options = self._image_options(change["new"])
        self._on_change()

    def _on_change(self, change=None) -> None:
        self._pending = self._requested()  # the latest wish wins
        if self._busy:
            return  # the running update will pick it up
        self._busy = True
        try:
            while self._pending is not None:
                request, self._pending = self._pending, None
                if request != self._shown:
                    self._run(request)
        finally:
            self._busy = False
            self._show_idle()

    def _show_busy(self, message: str) -> None:
        for control in self.controls:
            control.disabled = True
        self.status.value = f"<span style='color:#b45309'>&#8987; {message}</span>"

    def _show_idle(self) -> None:
        for control in self.controls:
            control.disabled = False
        if self._error:
            self.status.value = f"<span style='color:#b91c1c'>error: {self._error}</span>"
        else:
            self.status.value = f"<span style='color:#15803d'>&#10003; ready ({_seconds(self._seconds)})</span>"

    def _run(self, request: tuple) -> None:
        ratio, sampler, category, image_index = request
        start = time.perf_counter()
        if not self.state.is_loaded(category):
            self._show_busy(f"extracting {category} features and building its neighbour "
                            "tables (once per category)…")
        elif self.state.will_run_sampler(category, sampler, ratio):
            label = {v: k for k, v in SAMPLER_NAMES.items()}[sampler]
            self._show_busy(f"running the {label} sampler (once; smaller ratios reuse its picks)…")
        else:
            self._show_busy("updating…")
        self._error = None
        try:
            stats = update(ratio, sampler, category, image_index, cache=self.state)
            self.figure.draw(stats, self.state.history(category))
            png = self.figure.png()
        except Exception as error:
            self._error = f"{type(error).__name__}: {error}"
            raise
        self.stats, self.last_png, self._shown = stats, png, request
        self.stats_html.value = stats_html(stats)
        width, height = (int(round(v * self.figure.fig.dpi)) for v in self.figure.fig.get_size_inches())
        self.plots_output.outputs = (_png_output(png, width, height),)
        self.updates += 1
        self._seconds = time.perf_counter() - start


def build_explorer(state: ExplorerState, *, ratio: float = 0.01, sampler: str = "approximate_greedy",
                   category: str | None = None, dpi: int = 72) -> CoresetExplorer:
    """The explorer widget (an ``ipywidgets.VBox``), already showing its first update.

    Its controls and views are attributes: ``ratio``, ``sampler``,
    ``category``, ``image``, ``status``, ``stats_html``, ``plots_output``.
    """
    return CoresetExplorer(state, ratio=ratio, sampler=sampler, category=category, dpi=dpi)
