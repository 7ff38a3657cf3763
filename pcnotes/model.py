"""The PatchCore model: the stages composed, nothing added.

``fit`` embeds every training patch and keeps a coreset of them as the memory
bank; ``predict`` scores new images against it::

    fit:     images (B, 3, 224, 224) -> patch features (B*784, D) -> coreset -> bank (M, D)
    predict: images (B, 3, 224, 224) -> patch features (B*784, D)
             -> kNN scores (B*784,) -> (B, 784) -> (B, 28, 28)
             -> image scores (B,), anomaly maps (B, 224, 224)

Other input sizes work the same way: the grid follows the input at stride 8
(a 320 x 320 crop gives 40 x 40, a 256 x 608 whole image 32 x 76) and the maps
come out at the input size, so they lie on the pixels the model saw. ``D`` is
1024 for the reference's ``"mean_mapped"`` feature and the summed channels
(128 for mobilenet_v2) for ``"pooled_concat"``.

``PatchCore(config, stages={"patchify": fn, ...})`` runs the pipeline with
any of the course's exercise functions in place of the library's stage of
the same signature (:data:`STAGES` names them, with their defaults): the
learner's own code then builds the bank and scores the images.
``fit_features`` and ``score_features`` are the seam below images: they take
patch features ``(B*h*w, D)`` and their grid, as ``extract`` gives them, or
``patch_features`` from backbone maps computed once for several models.

``save`` writes ``config.json`` plus ``memory_bank.npy``: no pickle, and the
backbone is rebuilt from the config (its weights are named there, random ones
with their seed), so a round trip gives bit-identical scores. It replaces a
folder only through :func:`pcnotes.util.folders.replace_folder` (an earlier saved
model, never a folder of other files). ``load`` checks every key and type of
``config.json`` and the ``.npy`` header of the bank before it reads the array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pcnotes import __version__
from pcnotes.config import ConfigError, PatchCoreConfig, is_int
from pcnotes.stages.s1_features import FeatureExtractor, feature_layers, load_backbone, sha256sum
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s4_mean_mapped import aggregate, mean_map
from pcnotes.stages.s4_pooled_concat import pooled_concat
from pcnotes.stages.s5_coreset import coreset_size, greedy_k_center, random_projection, select_coreset
from pcnotes.stages.s6_scoring import (
    NearestNeighbours,
    image_scores,
    reweighted_image_scores,
    scores_to_grid,
    unpatch_scores,
)
from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import compute_metrics, image_auroc
from pcnotes.util.folders import replace_folder

FORMAT_VERSION = 2  # 2: config.json under the model's hash, the weights file's sha256
_LOAD_TRIES = 6  # a model replaced while it is read is read again, waiting 0.05, 0.1, ... 1.6 s


def _patches_only(features: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The exercise's patchify: ``(B, C, H, W) -> (B, H*W, C, p, p)``, without the grid."""
    return patchify(features, patch_size)[0]


def _image_score(features: np.ndarray, bank: np.ndarray, batch_size: int) -> np.ndarray:
    """Eq. 6 with the exercise's signature: ``(B*h*w, D)``, ``(M, D)`` -> ``(B,)``."""
    distances = NearestNeighbours(bank).search(features, 1)[0][:, 0]
    return distances.reshape(batch_size, -1).max(axis=1)


def _reweighted_score(features: np.ndarray, bank: np.ndarray, batch_size: int, b: int) -> np.ndarray:
    """Eq. 7 with the exercise's signature: ``(B*h*w, D)``, ``(M, D)`` -> ``(B,)``."""
    return reweighted_image_scores(NearestNeighbours(bank), features, batch_size, b)


#: The stages a ``PatchCore(stages={...})`` can replace, keyed by the course's exercise
#: names, and the library function of the same signature that runs by default.
#: ``pro`` is checked in notebook 05 but not run by the model (AUPRO integrates a curve).
STAGES = {
    "patchify": _patches_only,  # (B, C, H, W), p -> (B, H*W, C, p, p)
    "align": align_patches,  # (B, h*w, C, p, p), (h, w), (H, W) -> (B, H*W, C, p, p)
    "mean_mapper": mean_map,  # (N, C, p, p), dim -> (N, dim)
    "aggregator": aggregate,  # (N, L, D), dim -> (N, dim)
    "coreset_size": coreset_size,  # N, ratio -> M
    "greedy_k_center": greedy_k_center,  # (N, d), m -> (m,) indices
    "image_score": _image_score,  # (B*h*w, D), (M, D), B -> (B,)
    "reweighted_score": _reweighted_score,  # (B*h*w, D), (M, D), B, b -> (B,)
    "auroc": image_auroc,  # labels (N,), scores (N,) -> float
}


def _check_stages(stages: dict, config: PatchCoreConfig) -> dict:
    """The learner's stages, refused in one line where the name is unknown or the config does not run them."""
    for name, fn in stages.items():
        if name not in STAGES:
            valid = ", ".join(STAGES)
            raise ConfigError("stages", f"has an unknown stage {name!r}: valid names are {valid}")
        if not callable(fn):
            raise ConfigError("stages", f"[{name!r}] is a {type(fn).__name__}, not a function")
    unused = {
        "aggregator": "patch_feature='mean_mapped'" if config.patch_feature != "mean_mapped" else None,
        "greedy_k_center": "sampler='greedy'" if config.sampler != "greedy" else None,
        "image_score": "reweight=0" if config.reweight else None,
        "reweighted_score": "reweight=b (b > 0)" if not config.reweight else None,
    }  # fmt: skip
    for name in stages:
        if unused.get(name):
            raise ConfigError("stages", f"[{name!r}] is not run by this config: use {unused[name]} to run it")
    return {**STAGES, **stages}


def _quiet() -> bool:
    """Progress bars only on a terminal: not in notebooks, logs or CI."""
    return not sys.stderr.isatty()


@dataclass
class Prediction:
    """What ``predict`` returns: ``scores (B,)`` and ``maps (B, H, W)``.

    It holds every map it was asked for (``B * H * W`` float32); score a long
    list of images with :meth:`PatchCore.predict_batches`, one batch at a time.
    """

    scores: np.ndarray
    maps: np.ndarray
    patch_scores: np.ndarray = field(repr=False)  # (B, h, w), before upsampling

    def __iter__(self):  # allows ``scores, maps = model.predict(images)``
        return iter((self.scores, self.maps))


class PatchCore:
    """``PatchCore(config)`` or ``PatchCore(backbone="resnet18", coreset_ratio=0.01, ...)``."""

    def __init__(self, config: PatchCoreConfig | None = None, *, stages: dict | None = None, **overrides):
        if config is None:
            config = PatchCoreConfig(**overrides)
        elif overrides:
            if "backbone" in overrides and "layers" not in overrides:
                overrides["layers"] = ()  # the new backbone's default layers, not the old ones
            if "backbone" in overrides and "patch_feature" not in overrides:
                overrides["patch_feature"] = ""  # and its default patch feature
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.replaced = sorted(stages or {})  # the stages that are not the library's
        self.stages = _check_stages(dict(stages or {}), config)
        backbone, self.weights = load_backbone(config.backbone, config.weights, seed=config.seed)
        valid = feature_layers(backbone)
        unknown = [layer for layer in config.layers if layer not in valid]
        if unknown:
            raise ConfigError("layers", f"must be feature layers of {config.backbone} ({valid[0]} to {valid[-1]}), "
                                        f"got {', '.join(unknown)}")
        self.extractor = FeatureExtractor(backbone, config.layers)
        self.memory_bank: np.ndarray | None = None
        self.grid: tuple[int, int] | None = None
        self.index: NearestNeighbours | None = None
        self.timings: dict[str, float] = {}
        self._probed: tuple[tuple[int, int], int] | None = None  # (grid, D) of one model input

    def __repr__(self) -> str:
        bank = None if self.memory_bank is None else self.memory_bank.shape
        return (f"PatchCore(backbone={self.config.backbone!r}, layers={self.config.layers}, "
                f"weights={self.weights}, memory_bank={bank})")

    # -- features ----------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features of a batch: ``(B, 3, H, W) -> (B*h*w, D)`` and grid ``(h, w)``.

        ``D`` is ``target_dim`` for ``"mean_mapped"`` and the layers' summed
        channels for ``"pooled_concat"`` (see :attr:`feature_dim`).
        """
        return self.patch_features(self.extractor(images))

    @torch.no_grad()
    def patch_features(self, feature_maps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stages 2-4 on the backbone's maps: ``{layer: (B, C_l, H_l, W_l)} -> (B*h*w, D)`` and ``(h, w)``.

        The maps are what :attr:`extractor` gives for the config's layers, so
        maps computed once can be turned into the patch features of several
        models (the library's and the learner's stages, say).
        """
        if list(feature_maps) != list(self.config.layers):
            raise ValueError(f"feature maps of the layers {', '.join(self.config.layers)} expected (the config's), "
                             f"got {', '.join(map(str, feature_maps)) or 'none'}")
        maps = list(feature_maps.values())
        feature_stages = {"patchify", "align", "mean_mapper", "aggregator"}
        if self.config.patch_feature == "pooled_concat" and not feature_stages & set(self.replaced):
            return pooled_concat(maps, patch_size=self.config.patch_size)
        return self._embed_by_stages(maps)

    def _embed_by_stages(self, feature_maps: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stages 2-4 from :attr:`stages`: ``[(B, C_l, H_l, W_l)] -> (B*H*W, D)`` and ``(H, W)``.

        ``"mean_mapped"``: patchify, align, a mean mapper per layer, the aggregator.
        ``"pooled_concat"``: the same, but each layer mapped to its channel count
        and concatenated (notebook 02 shows that this equals the pooled feature).
        """
        stage, cfg = self.stages, self.config
        grids = [tuple(fmap.shape[-2:]) for fmap in feature_maps]
        per_layer = []
        for fmap, grid in zip(feature_maps, grids):
            patches = stage["patchify"](fmap, cfg.patch_size)
            if grid != grids[0]:
                patches = stage["align"](patches, grid, grids[0])
            flat = patches.reshape(-1, *patches.shape[2:])
            dim = fmap.shape[1] if cfg.patch_feature == "pooled_concat" else cfg.pretrain_dim
            per_layer.append(stage["mean_mapper"](flat, dim))
        if cfg.patch_feature == "pooled_concat":
            return torch.cat(per_layer, dim=1), grids[0]
        return stage["aggregator"](torch.stack(per_layer, dim=1), cfg.target_dim), grids[0]

    def _probe(self) -> tuple[tuple[int, int], int]:
        """The patch grid ``(h, w)`` and ``D`` of one model input (the crop, or the whole
        resized image): one forward pass of zeros, made once per model."""
        if self._probed is None:
            size = self.config.crop if self.config.crop is not None else self.config.resize
            height, width = size if isinstance(size, tuple) else (size, size)
            features, grid = self.embed(torch.zeros(1, 3, height, width))
            self._probed = tuple(grid), int(features.shape[1])
        return self._probed

    @property
    def feature_dim(self) -> int:
        """``D``, the length of one patch feature."""
        if self.config.patch_feature == "mean_mapped":
            return self.config.target_dim
        return self._probe()[1]

    def _batches(self, images) -> Iterable[torch.Tensor]:
        """Accept a tensor (B, 3, H, W), or any iterable of such tensors or of dicts."""
        if isinstance(images, torch.Tensor):
            check_images(images)
            step = self.config.batch_size
            return [images[i : i + step] for i in range(0, len(images), step)]
        return (check_images(b["image"] if isinstance(b, dict) else b) for b in images)

    def extract(self, images, desc: str = "features") -> tuple[np.ndarray, tuple[int, int]]:
        """Patch features of all images: ``-> (N*h*w, D)`` float32 numpy and the grid."""
        chunks, grid = [], None
        total = len(images) if hasattr(images, "__len__") else None
        if isinstance(images, torch.Tensor):
            total = -(-len(images) // self.config.batch_size)
        for batch in tqdm(self._batches(images), total=total, desc=desc, disable=_quiet(), leave=False):
            features, grid = self.embed(batch)
            chunks.append(features.numpy())
        if not chunks:
            raise ValueError("no images given to predict()")
        return np.concatenate(chunks), grid

    # -- fit / predict -----------------------------------------------------------
    def fit(self, images) -> "PatchCore":
        """Build the memory bank from normal images (a tensor or a DataLoader)."""
        start = time.perf_counter()
        features, grid = self.extract(images, desc="train features")
        self.timings["extract_train"] = time.perf_counter() - start
        return self.fit_features(features, grid)

    def fit_features(self, features: np.ndarray, grid: tuple[int, int]) -> "PatchCore":
        """Build the memory bank from patch features: ``(N*h*w, D)`` on grid ``(h, w)`` -> bank ``(M, D)``."""
        start = time.perf_counter()
        self.grid = tuple(grid)
        features = np.asarray(features, dtype=np.float32)
        if not np.isfinite(features).all():
            raise ValueError(f"{np.count_nonzero(~np.isfinite(features).all(axis=1))} patch features are "
                             "not finite (NaN or inf): check the images and the backbone weights")
        self._check_bank_size(self._bank_size(len(features)), len(features) // math.prod(self.grid))
        if self.config.coreset_ratio < 1:
            indices = self._select_coreset(features)
            features = features[np.sort(indices)]  # sorted: the bank's order never matters
        self.timings["coreset"] = time.perf_counter() - start
        self._set_bank(features)
        return self

    def _select_coreset(self, features: np.ndarray) -> np.ndarray:
        """``(N, D) -> (M,)`` indices: the configured sampler, or the stages' greedy k-center."""
        cfg = self.config
        size = self._bank_size(len(features))
        if "greedy_k_center" not in self.replaced:
            return select_coreset(features, sampler=cfg.sampler, size=size, seed=cfg.seed)
        projected = random_projection(torch.from_numpy(features), 128, seed=cfg.seed)  # as greedy_coreset
        return np.asarray(self.stages["greedy_k_center"](projected.numpy(), size), dtype=np.int64)

    # -- the bank's size, known before the fit ----------------------------------
    def _bank_size(self, num_patches: int) -> int:
        ratio = self.config.coreset_ratio
        return num_patches if ratio >= 1 else int(self.stages["coreset_size"](num_patches, ratio))

    def planned_bank_size(self, num_images: int) -> int:
        """Memory bank entries that a fit on ``num_images`` images will keep.

        ``coreset_size(num_images * h * w, coreset_ratio)``, with the patch grid
        ``(h, w)`` of one model input (the crop, or the whole resized image).
        """
        return self._bank_size(num_images * math.prod(self._probe()[0]))

    def check_fit(self, num_images: int) -> None:
        """Raise before any work if the input size, ``num_neighbors`` or ``reweight`` cannot work."""
        self.check_input_size()
        self._check_bank_size(self.planned_bank_size(num_images), num_images)

    # -- the input size, checked before any image is read ------------------------
    def deepest_stride(self) -> tuple[str, int]:
        """The deepest requested layer and its stride (input pixels per feature-map cell)."""
        side = 224
        maps = self.extractor(torch.zeros(1, 3, side, side))
        layer = max(maps, key=lambda name: side / maps[name].shape[-1])
        return layer, round(side / maps[layer].shape[-1])

    def check_input_size(self) -> None:
        """Refuse an input size below one patch of the deepest layer, or above what memory holds.

        The smallest side is the deepest layer's stride times ``patch_size``
        (48 pixels for the default layers: 16 x 3); smaller inputs give
        feature maps of one or two cells, with patches of nothing but padding.
        The largest is an estimate (:func:`memory_estimate`) against this
        machine's physical memory, so that ``resize=100000`` fails at once
        instead of asking Pillow for 30 GB.
        """
        cfg = self.config
        option, size = ("crop", cfg.crop) if cfg.crop is not None else ("resize", cfg.resize)
        height, width = size if isinstance(size, tuple) else (size, size)
        needed, available = memory_estimate(cfg), _physical_memory()
        if available is not None and needed > available:
            raise ConfigError("resize", f"{_size_text(cfg.resize)} (crop {_size_text(cfg.crop)}) needs about "
                                        f"{needed / 2**30:.0f} GiB of memory, an estimate, more than this "
                                        f"machine's {available / 2**30:.0f} GiB: use a smaller size")
        layer, stride = self.deepest_stride()
        smallest = stride * cfg.patch_size
        if min(height, width) < smallest:
            raise ConfigError(option, f"{_size_text(size)} gives {height}x{width} inputs, smaller than one "
                                      f"{cfg.patch_size}x{cfg.patch_size} patch of {layer} (stride {stride}): "
                                      f"use at least {smallest} pixels a side")

    def _check_bank_size(self, size: int, num_images: int | None = None) -> None:
        cfg = self.config
        source = "" if num_images is None else (
            f" that {num_images} training images give at a coreset ratio of {cfg.coreset_ratio:g}")
        advice = "lower it or raise the coreset ratio"
        if cfg.num_neighbors > size:
            raise ConfigError("num_neighbors", f"({cfg.num_neighbors}) is larger than the memory bank "
                                               f"of {size} entries{source}: {advice}")
        if cfg.reweight and cfg.reweight + 1 > size:
            raise ConfigError("reweight", f"({cfg.reweight}) needs a memory bank of at least "
                                          f"{cfg.reweight + 1} entries, not the {size}{source}: {advice}")

    def _set_bank(self, bank: np.ndarray) -> None:
        self.memory_bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.index = NearestNeighbours(
            self.memory_bank, backend=self.config.knn_backend, squared=self.config.squared,
            approximate=self.config.index,
        )

    def predict(self, images) -> Prediction:
        """Score images: ``(B, 3, H, W) -> scores (B,), maps (B, H, W)``.

        The returned :class:`Prediction` holds every map: ``N * H * W`` floats.
        For many images iterate :meth:`predict_batches` instead, which holds
        one batch at a time.
        """
        parts = list(self.predict_batches(images))
        if not parts:
            raise ValueError("no images given to predict()")
        return Prediction(*(np.concatenate([getattr(part, name) for part in parts])
                            for name in ("scores", "maps", "patch_scores")))

    def predict_batches(self, images):
        """Score images batch by batch: yields one :class:`Prediction` per batch.

        ``images``: a tensor ``(N, 3, H, W)`` (cut into batches) or any iterable
        of batches (tensors, or dicts with ``"image"``, e.g. a DataLoader), so a
        test set is decoded and held one batch at a time. Adds the seconds spent
        in ``extract``, ``search`` and ``maps`` to :attr:`timings`.
        """
        if self.index is None:
            raise RuntimeError("call fit() or PatchCore.load() before predict()")
        for key in ("extract_test", "search", "maps"):
            self.timings[key] = 0.0
        total = -(-len(images) // self.config.batch_size) if isinstance(images, torch.Tensor) else None
        for batch in tqdm(self._batches(images), total=total, desc="scoring", disable=_quiet(), leave=False):
            start = time.perf_counter()
            features, grid = self.embed(batch)
            self._check_grid(tuple(grid), batch.shape[-2:])
            self.timings["extract_test"] += time.perf_counter() - start
            yield self.score_features(features.numpy(), grid, size=tuple(batch.shape[-2:]))

    def _check_grid(self, grid: tuple[int, int], size) -> None:
        """Scores mean something only on the patch grid the bank was built on."""
        if self.grid is not None and tuple(self.grid) != grid:
            raise ValueError(f"images of {size[0]}x{size[1]} give a {grid[0]}x{grid[1]} patch grid, but the model "
                             f"was fitted on a {self.grid[0]}x{self.grid[1]} grid: prepare them with the model's "
                             "own transform (pcnotes.image_transform with its config's resize and crop)")

    def score_features(self, features: np.ndarray, grid: tuple[int, int],
                       size: tuple[int, int] | None = None) -> Prediction:
        """Score patch features of B images: ``(B*h*w, D)`` on grid ``(h, w)``
        -> scores ``(B,)``, maps ``(B, H, W)`` (``size``, by default 8 x the grid) and patch scores ``(B, h, w)``.

        Adds its seconds to ``timings["search"]`` and ``timings["maps"]``.
        """
        if self.index is None:
            raise RuntimeError("call fit() or PatchCore.load() before score_features()")
        start = time.perf_counter()
        cfg, stage = self.config, self.stages
        features = np.asarray(features, dtype=np.float32)
        num_images = len(features) // math.prod(grid)
        nearest = self.index.search(features, cfg.num_neighbors)  # every patch searched once
        grid_scores = scores_to_grid(unpatch_scores(nearest[0].mean(axis=1), num_images), grid)
        if "reweighted_score" in self.replaced:
            scores = stage["reweighted_score"](features, self.memory_bank, num_images, cfg.reweight)
        elif cfg.reweight:
            scores = reweighted_image_scores(self.index, features, num_images, cfg.reweight, nearest)
        elif "image_score" in self.replaced:
            scores = stage["image_score"](features, self.memory_bank, num_images)
        else:
            scores = image_scores(grid_scores)
        middle = time.perf_counter()
        size = size or (8 * grid[0], 8 * grid[1])
        maps = anomaly_map(grid_scores, size=size, sigma=cfg.sigma)
        self.timings["search"] = self.timings.get("search", 0.0) + middle - start
        self.timings["maps"] = self.timings.get("maps", 0.0) + time.perf_counter() - middle
        return Prediction(np.asarray(scores).reshape(num_images), maps, grid_scores)

    def metrics(self, labels, scores, masks, maps) -> dict[str, float]:
        """image AUROC (the ``auroc`` stage), pixel AUROC and AUPRO of one test set."""
        return {**compute_metrics(labels, scores, masks, maps),
                "image_auroc": float(self.stages["auroc"](np.asarray(labels), np.asarray(scores)))}

    # -- save / load -------------------------------------------------------------
    def save(self, directory: str | os.PathLike, *, force: bool = False) -> Path:
        """Write ``config.json`` and ``memory_bank.npy`` to ``directory``, all or nothing.

        ``directory`` may be new, empty or an earlier saved model; any other
        folder (the working folder, a project) is refused before anything is
        written (:class:`pcnotes.util.folders.UnsafeTargetError`); ``force``
        replaces a saved model even when its files were edited.

        ``config.json`` records the sha256 of a weights file, and
        ``model_sha256`` covers the whole config and the bank, so that
        :meth:`load` notices a replaced weights file or an edited config.
        """
        if self.memory_bank is None:
            raise RuntimeError("nothing to save: call fit() first")
        bank = io.BytesIO()  # written with one write(): a full disk raises ENOSPC, not a byte count
        np.save(bank, self.memory_bank, allow_pickle=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "pcnotes_version": __version__,
            "config": self.config.to_dict(),
            "weights": str(self.weights),
            "grid": list(self.grid),
            "memory_bank_shape": list(self.memory_bank.shape),
            "memory_bank_sha256": hashlib.sha256(self.memory_bank.tobytes()).hexdigest(),
            "weights_sha256": _weights_sha256(self.config.weights),
        }
        meta["model_sha256"] = _model_sha256(meta, self.memory_bank)
        with replace_folder(directory, "fit", force=force) as staging:
            (staging / "memory_bank.npy").write_bytes(bank.getbuffer())
            (staging / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, expect: PatchCoreConfig | None = None) -> "PatchCore":
        """Rebuild a saved model. With ``expect``, its config must match exactly.

        A model that another process replaces meanwhile (:meth:`save` renames a
        complete new folder into place) is read again once the new folder is
        there; if it keeps changing, the error says that it is being written.
        """
        directory = Path(directory)
        for attempt in range(_LOAD_TRIES):
            before = _identity(directory)
            try:
                model = cls._load_once(directory, expect)
            except (ValueError, FileNotFoundError):
                if _identity(directory) == before and not _being_written(directory):
                    raise
            else:
                if _identity(directory) == before:
                    return model
            time.sleep(0.05 * 2**attempt)  # the writer's two renames are microseconds apart
        raise ValueError(f"{directory}: the model is being written by another process; load it when "
                         "that process is done")

    @classmethod
    def _load_once(cls, directory: Path, expect: PatchCoreConfig | None) -> "PatchCore":
        """One read of a saved model, see :meth:`load`."""
        meta_path, bank_path = directory / "config.json", directory / "memory_bank.npy"
        for path in (meta_path, bank_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {directory} is not a saved PatchCore model")
        meta, config = _read_meta(meta_path)
        if expect is not None and expect != config:
            changed = {k: (v, getattr(expect, k)) for k, v in config.to_dict().items()
                       if getattr(expect, k) != getattr(config, k)}
            raise ValueError(f"{directory} was made with another config (saved, expected): {changed}")
        bank = _read_bank(bank_path, tuple(meta["memory_bank_shape"]))
        if hashlib.sha256(bank.tobytes()).hexdigest() != meta["memory_bank_sha256"]:
            raise ValueError(f"{bank_path}: checksum mismatch, the file is corrupt")
        if _model_sha256(meta, bank) != meta["model_sha256"]:
            raise ValueError(f"{meta_path}: was changed since the model was saved (model_sha256 no longer "
                             "matches): fit the model again")
        if not np.isfinite(bank).all():
            raise ValueError(f"{bank_path}: {np.count_nonzero(~np.isfinite(bank).all(axis=1))} memory bank "
                             "entries are not finite (NaN or inf): fit the model again")
        _check_weights_file(meta_path, config.weights, meta["weights_sha256"])
        try:  # a bad saved value is the file's problem, not an option's
            model = cls(config)
            if bank.shape[1] != model.feature_dim:
                raise ValueError(f"{bank_path}: {bank.shape[1]} values per patch, but {meta_path}'s "
                                 f"{config.patch_feature!r} patch feature gives {model.feature_dim}")
            model.grid = tuple(meta["grid"])
            model._check_bank_size(len(bank))
            model._set_bank(bank)
        except ConfigError as error:
            raise ValueError(f"{meta_path}: {error}: fit the model again") from None
        return model


def _read_meta(path: Path) -> tuple[dict, PatchCoreConfig]:
    """``config.json`` checked key by key: ``-> (meta, config)``; ValueError naming ``path``."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: holds a JSON {type(meta).__name__}, not the object pcnotes fit writes; "
                         "fit the model again")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path.parent} was saved by pcnotes {meta.get('pcnotes_version')} in format "
            f"{meta.get('format_version')}; this pcnotes {__version__} reads format "
            f"{FORMAT_VERSION}: fit the model again"
        )
    expected = {"config": dict, "weights": str, "grid": list, "memory_bank_shape": list,
                "memory_bank_sha256": str, "weights_sha256": (str, type(None)), "model_sha256": str}
    missing = [key for key in expected if key not in meta]
    wrong = [key for key, kind in expected.items() if key in meta and not isinstance(meta[key], kind)]
    for key in ("grid", "memory_bank_shape"):
        value = meta.get(key)
        if isinstance(value, list) and not (len(value) == 2 and all(is_int(v) and v > 0 for v in value)):
            wrong.append(key)
    if missing or wrong:
        raise ValueError(f"{path}: {'lacks ' + ', '.join(missing) if missing else ''}"
                         f"{'; ' if missing and wrong else ''}"
                         f"{'has bad values for ' + ', '.join(wrong) if wrong else ''}: fit the model again")
    try:
        config = PatchCoreConfig.from_dict(meta["config"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}: fit the model again") from None
    return meta, config


def _read_bank(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read ``memory_bank.npy`` after checking its header: ``-> (M, D)`` float32.

    The header (dtype, order, shape) is compared with ``config.json`` and the
    file size before anything is allocated, so a header claiming a huge shape
    fails at once instead of asking numpy for terabytes.
    """
    expected = (shape, False, np.dtype(np.float32))  # (shape, fortran_order, dtype) as numpy reads it
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            header = read_header(stream)
            offset = stream.tell()
            size = os.fstat(stream.fileno()).st_size
            if header != expected:
                order = " in Fortran order" if header[1] else ""
                raise ValueError(f"holds a {header[0]} {header[2]} array{order}, but config.json says "
                                 f"{shape} float32")
            if size != offset + math.prod(shape) * 4:
                raise ValueError(f"is {size} bytes, not the {offset + math.prod(shape) * 4} its header implies")
            bank = np.fromfile(stream, dtype=np.float32, count=math.prod(shape))
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path}: not the memory bank of this model ({error}): fit the model again") from None
    return bank.reshape(shape)


def check_images(images) -> torch.Tensor:
    """Refuse, in one line, what cannot be a batch of model inputs: ``(B, 3, H, W)`` float, finite, B >= 1."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have the shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor normalised like pcnotes.image_transform gives, "
                        f"got {images.dtype}; e.g. (images / 255 - mean) / std")
    if len(images) == 0:
        raise ValueError(f"no images given: the tensor's shape is {tuple(images.shape)}")
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images {bad[:5]}{' ...' if len(bad) > 5 else ''} hold NaN or inf values")
    return images


def _weights_sha256(weights: str) -> str | None:
    """The sha256 of a weights file; ``None`` for ``imagenet`` and ``random``."""
    return None if weights in ("imagenet", "random") else sha256sum(weights)


def _check_weights_file(meta_path: Path, weights: str, expected: str | None) -> None:
    """The weights file named in ``config.json`` must be there, with the content the model was fitted with."""
    if weights in ("imagenet", "random"):
        return
    if not Path(weights).is_file():
        raise ValueError(f"{meta_path}: the model was fitted with the weights file {weights}, which is gone: "
                         "put it back there or fit the model again")
    if sha256sum(weights) != expected:
        raise ValueError(f"{weights}: is not the weights file the model in {meta_path.parent} was fitted with "
                         "(its sha256 differs): put the original back or fit the model again")


def _model_sha256(meta: dict, bank: np.ndarray) -> str:
    """sha256 of everything a saved model is: ``config.json`` (but this hash) and the bank's bytes."""
    described = {key: value for key, value in meta.items() if key != "model_sha256"}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(bank, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder now at ``directory``: :meth:`PatchCore.save` renames a new one into place."""
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _being_written(directory: Path) -> bool:
    """A save of ``directory`` is under way: its staging or moved-aside sibling exists."""
    prefix = f".{Path(os.path.abspath(directory)).name[:160]}.pcnotes-"
    parent = Path(os.path.abspath(directory)).parent
    return parent.is_dir() and any(p.name.startswith(prefix) for p in parent.iterdir())


def _size_text(size) -> str:
    return "none" if size is None else "{}x{}".format(*size) if isinstance(size, tuple) else str(size)


def memory_estimate(config: PatchCoreConfig) -> int:
    """Bytes a batch needs, roughly: the resized images (8-bit and float) and the backbone's activations.

    15 bytes per resized pixel (3 for Pillow's copy, 12 for the float
    tensor); 256 bytes per model-input pixel for the backbone's early
    activations (mobilenet_v2's 96 channels at stride 2 take 96; a ResNet's
    64 channels at stride 2 and 256 at stride 4 take 128), doubled for what
    autograd-free inference still keeps alive. An ``int`` resize fixes the
    shorter side only: a square is the least it can be.
    """
    resize = config.resize if isinstance(config.resize, tuple) else (config.resize, config.resize)
    size = config.crop if config.crop is not None else resize
    size = size if isinstance(size, tuple) else (size, size)
    return config.batch_size * (math.prod(resize) * 15 + math.prod(size) * 256)


def _physical_memory() -> int | None:
    """This machine's physical memory in bytes; ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
