"""The coreset explorer's state: features extracted once, caches, and one update per setting.

PatchCore keeps a fraction ``ratio`` of all training patches as its memory
bank. This module answers, for any ratio and sampler, what that bank costs and
what it gives, fast enough to follow a slider. It has no widget in it (that is
:mod:`pcnotes.app.explorer`), so all of it is tested without a browser::

    state = prepare()                              # features once (tens of seconds)
    stats = update(0.01, "approximate_greedy", cache=state)   # a fraction of a second
    stats.bank_size, stats.coverage_radius, stats.image_auroc, stats.amap

* :func:`prepare` extracts, per category, the training patch features
  ``(N, D)``, the test patch features ``(T*h*w, D)``, the test masks and
  labels, and a :class:`NeighbourTable`. It returns an
  :class:`ExplorerState`, which also holds every cache.
* :func:`update` is a plain function ``(ratio, sampler, category, image)
  -> Stats``: bank size, coverage radius, image AUROC, pixel AUROC, AUPRO,
  timings and the arrays the plots need. Its numbers are exactly those of a
  plain PatchCore run with that bank (the tests check it).

How an update stays fast (the exact fast paths are in :mod:`pcnotes.fast.explorer`)
-----------------------------------------------------------------------------------
*Coreset.* Greedy k-center is **nested**: its first ``m`` picks do not
depend on how many picks follow, so the coreset for a small ratio is a
prefix of the coreset for a larger one. For the two greedy samplers the
explorer runs :func:`pcnotes.stages.s5_coreset.select_coreset` to 10 % the first time
(enough for every ratio up to 10 %) and to 100 % the first time a larger
ratio is asked for, and slices. The random sampler is not nested (another
``M`` draws another subset), so it is simply called; it takes milliseconds.

*Scores of any bank.* Every memory bank is a subset of the ``N`` training
patches. So :class:`NeighbourTable` finds, once, each test patch's ``K``
nearest training patches. For any bank, a test patch's nearest bank entry is
then the first of its ``K`` listed neighbours that is in the bank. Only
patches none of whose ``K`` neighbours were kept are searched the ordinary
way.

*Coverage radius.* It is measured in the space the scores are: the ``D``-dim
patch features (not the greedy samplers' 128-d projection), so a heat map's
colours and the radius can be read on one scale. Each bank's radius is one
plain search of the training patches outside the bank through the bank.

*Scores of a greedy prefix.* When a greedy sampler has run, a
:class:`PrefixNearest` goes once through its first 10 % of picks in order
and records, for every test patch, each bank size at which its nearest kept
patch gets closer (from the table where it can, by computing distances
where it cannot). Any bank up to 10 % is then a look-up, with no search at
all. It gives the distance a plain
``NearestNeighbours(bank).search(test_features, 1)`` returns.

*Maps and metrics.* The anomaly maps of all test images are computed for
every new bank, as two small matrix products (:class:`MapOperator`, read off
:func:`pcnotes.stages.s7_maps.anomaly_map`), and the pixel AUROC and AUPRO are
computed exactly over all pixels, sharing one sort (:class:`PixelMetrics`).
Nothing is subsampled: every number is the one a full evaluation gives.

*Scoring time.* The time shown is real: a plain kNN search of one test image
against the actual bank, which is what PatchCore with this bank pays per image.

*Caches.* Coresets and scores are cached per (category, sampler, bank size):
two ratios that give the same bank size give the same bank. The AUROC-vs-
ratio curve is read from the score cache, so it grows as the user explores.
"""

from __future__ import annotations

import numbers
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcnotes.stages.s5_coreset import SAMPLERS, check_ratio, coreset_size, select_coreset
from pcnotes.data.mvtec import load_split, stack
from pcnotes.fast.explorer import MapOperator, NeighbourTable, PixelMetrics, PrefixNearest
from pcnotes.stages.s8_metrics import image_auroc
from pcnotes.config import PatchCoreConfig
from pcnotes.model import PatchCore
from pcnotes.stages.s6_scoring import NearestNeighbours, image_scores, scores_to_grid, unpatch_scores

__all__ = [
    "SAMPLER_NAMES",
    "NESTED_SAMPLERS",
    "CategoryData",
    "ExplorerState",
    "Stats",
    "prepare",
    "update",
    "stats_rows",
]

#: Dropdown label -> sampler name of :data:`pcnotes.stages.s5_coreset.SAMPLERS`.
SAMPLER_NAMES = {"random": "random", "approximate greedy": "approximate_greedy", "greedy": "greedy"}
#: Samplers whose coreset of size m is the first m picks of any larger run.
NESTED_SAMPLERS = ("approximate_greedy", "greedy")


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
    default_image: int  # the test image to open on: see defect_contrast
    test_table: NeighbourTable = field(repr=False)  # test patches -> training patches, (D)
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



def defect_contrast(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """How plainly each map shows its defect: ``(T, H, W)`` maps and masks -> ``(T,)``.

    The mean score inside the mask minus the mean outside it, as a fraction of
    the colour scale (the whole set's min to max): 0.5 means the defect is half
    the scale brighter than its background. 0 for an image without a defect.
    """
    low, high = float(maps.min()), float(maps.max())
    contrast = np.zeros(len(maps))
    for i, (amap, mask) in enumerate(zip(maps, masks)):
        if mask.any() and not mask.all():
            contrast[i] = (amap[mask].mean() - amap[~mask].mean()) / max(high - low, 1e-12)
    return contrast


def load_category(root: Path, category: str, model: PatchCore, *, neighbours: int = 256) -> CategoryData:
    """Extract one category's features and build its neighbour table.

    The default test image is the defect that stands out most from its
    background on the whole bank's maps (:func:`defect_contrast`), so the
    explorer opens on a defect visible at a glance.
    """
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
    test_table = NeighbourTable(test_features, train_features, neighbours, backend=config.knn_backend)
    seconds["test_table"] = time.perf_counter() - start

    maps = MapOperator(grid, masks.shape[-2:], config.sigma)
    nearest = test_table.distances[:, 0] ** (2 if config.squared else 1)  # the whole bank's scores
    whole_bank = maps(scores_to_grid(unpatch_scores(nearest, len(test)), grid))  # (T, H, W)
    contrast = defect_contrast(whole_bank, masks)
    return CategoryData(
        name=category, num_train_images=len(train), train_features=train_features,
        test_features=test_features, grid=grid, images=test_images.numpy(), masks=masks,
        labels=np.asarray(test.labels), defects=list(test.defects), paths=list(test.paths),
        default_image=int(np.argmax(contrast)), test_table=test_table,
        maps=maps, pixel_metrics=PixelMetrics(masks),
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
    coverage_radius: float  # Euclidean, in the D-dim features the scores use


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
        result = CoresetResult(indices, seconds, run_size, self.coverage_radius(data, indices))
        self._coresets[key] = result
        return result, False

    def coverage_radius(self, data: CategoryData, indices: np.ndarray) -> float:
        """The largest distance from a training patch to its nearest bank entry, in ``D`` dimensions.

        Only the patches outside the bank are searched: a kept patch covers itself.
        """
        outside = np.ones(data.num_train, dtype=bool)
        outside[indices] = False
        if not outside.any():
            return 0.0
        bank = NearestNeighbours(data.train_features[indices], backend=self.config.knn_backend)
        return float(bank.search(data.train_features[outside], 1)[0].max())

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
                run = GreedyRun(order, seconds, PrefixNearest(data.test_table, order[: sizes[0]]))
            else:
                run = GreedyRun(order, seconds, run.test)
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
        # (T*h*w,) -> (T, h*w) -> (T, h, w), the layout of pcnotes.stages.s6_scoring.score_grid.
        score_grid = scores_to_grid(unpatch_scores(nearest, data.num_test), data.grid)
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
      (:func:`pcnotes.data.synth.ensure_default_dataset`, drawn on first use).
    * ``categories``: those the picker offers; default all in ``root``.
    * ``config``: backbone, layers, seed, sigma... (:class:`PatchCoreConfig`);
      its ``sampler`` and ``coreset_ratio`` are ignored (the widget sets them).
    * ``load``: ``"first"`` extracts the first category now and the others
      when they are first picked; ``"all"`` extracts them all now.
    * ``neighbours``: ``K`` of the neighbour tables; ``greedy_runs``: the
      ratios the greedy samplers run to (see :meth:`ExplorerState.greedy_run`).
    """
    from pcnotes.data.mvtec import list_categories
    from pcnotes.data.synth import ensure_default_dataset

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
    coverage_radius: float  # Euclidean, in the D-dim features the scores use
    radius_score: float  # the coverage radius as a patch score: squared when the scores are
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
    the test image whose map is returned (default: the defect that stands out
    most, :attr:`CategoryData.default_image`). Coresets and scores come
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
        coverage_radius=coreset.coverage_radius,
        radius_score=coreset.coverage_radius ** (2 if cache.config.squared else 1), **scored.metrics,
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
        ("coverage radius", f"{stats.coverage_radius:.2f} ({stats.train_features.shape[1]}-d, "
                            "the space of the scores)"),
        ("image AUROC", f"{stats.image_auroc:.3f} ({stats.num_test} test images)"),
        ("pixel AUROC", f"{stats.pixel_auroc:.3f} (all {stats.num_pixels:,} pixels)"),
        ("AUPRO", f"{stats.aupro:.3f} (all pixels, FPR up to 0.3)"),
        ("selection time", selection),
        ("scoring time", f"{format_seconds(stats.scoring_seconds)} per image "
                         f"({stats.patches_timed:,} × {stats.bank_size:,} distances)"),
        ("test image", f"{stats.image_label}, score {stats.image_score:.2f}"),
    ]
