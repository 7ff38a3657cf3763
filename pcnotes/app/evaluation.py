"""Fit on a category's good images, score its test set, compute the three metrics.

Shared by the CLI (``evaluate``, ``demo``) and the benchmarks, so that both
report the same numbers for the same configuration.

Memory is bounded by one batch and the memory bank, not by the data set:
every image is decoded once, in batches (a DataLoader over the split); the
test set's maps are handed to ``on_batch`` (the CLI writes heat maps there) and
dropped; the metrics come from a compact store (:class:`pcnotes.fast.metrics.MetricStore`:
score grids and packed defect masks).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcnotes.config import PatchCoreConfig
from pcnotes.data.mvtec import DataError, MaskValuesWarning, collect_notes, load_split
from pcnotes.fast.metrics import MetricStore
from pcnotes.model import PatchCore
from pcnotes.stages.s7_maps import anomaly_map

#: The phases of an evaluation, in the order they run (the CLI adds "writing").
PHASES = ("validate", "extract", "coreset", "search", "maps", "metrics")


@dataclass
class Batch:
    """One scored test batch, as ``on_batch`` gets it: ``b`` images of ``(H, W)``."""

    first: int  # index of its first image in the test set
    images: torch.Tensor  # (b, 3, H, W) as the model saw them
    maps: np.ndarray  # (b, H, W)
    masks: np.ndarray  # (b, H, W) bool
    scores: np.ndarray  # (b,)


@dataclass
class Evaluation:
    """Scores and metrics of one category's test set; maps on demand from the score grids."""

    category: str
    scores: np.ndarray  # (N,)
    grids: np.ndarray = field(repr=False)  # (N, h, w) patch scores
    labels: np.ndarray  # (N,) 0 good, 1 defective
    defects: list[str]
    paths: list[str]
    size: tuple[int, int]  # (H, W) the model saw, as maps and masks
    sigma: float
    cut: tuple[int, int, int] = (0, 0, 0)  # defect pixels the crop cut away, of all, in how many images
    metrics: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # seconds per phase of PHASES

    def maps(self, indices=slice(None)) -> np.ndarray:
        """Anomaly maps of some test images, recomputed from their grids: ``-> (n, H, W)``."""
        return anomaly_map(self.grids[indices], size=self.size, sigma=self.sigma)


def evaluate_category(
    root: str | Path, category: str, config: PatchCoreConfig | None = None,
    on_batch: Callable[[Batch], None] | None = None,
) -> tuple[PatchCore, Evaluation]:
    """Fit PatchCore on ``train/good`` and evaluate it on ``test``, one batch at a time.

    Everything that can be checked cheaply is checked before the fit: the
    test set must hold good and defective images (image AUROC needs both),
    the model's k and b must fit the memory bank that the coreset ratio will
    give, and every image and mask header is read (a missing or unreadable
    file, a mask of another size stop the run here). Each image is then
    decoded once, in batches; ``on_batch`` sees every scored test batch.
    The seconds it takes are not counted in any phase.
    """
    config = config or PatchCoreConfig()
    start = time.perf_counter()
    train = load_split(root, category, "train", config)
    test = load_split(root, category, "test", config)
    if len(set(test.labels)) < 2:
        only = "good" if test.labels[0] == 0 else "defective"
        raise DataError(f"{Path(root) / category / 'test'}: holds only {only} images; image AUROC and "
                        "AUPRO need good and defective test images: add test/good or a defect folder")
    model = PatchCore(config)
    model.check_fit(len(train))
    train.check_files()
    test.check_files()
    test.check_masks()  # masks only: an all-empty set stops here, before the fit
    phases = {"validate": time.perf_counter() - start}

    with warnings.catch_warnings(), collect_notes():  # rotated or large files: one line per kind for the run
        warnings.simplefilter("ignore", MaskValuesWarning)  # check_masks has said it, before the fit
        model.fit(DataLoader(train, batch_size=config.batch_size))
        fit_seconds = model.timings["extract_train"] + model.timings["coreset"]

        store, size, cut, cut_images, writing = None, None, 0, 0, 0.0
        current: dict = {}  # the batch being scored: predict_batches pulls one image batch per prediction
        start = time.perf_counter()
        for prediction in model.predict_batches(_images(DataLoader(test, batch_size=config.batch_size), current)):
            batch = current
            masks = batch["mask"][:, 0].numpy() > 0.5
            if store is None:
                size = masks.shape[1:]
                store = MetricStore(size, config.sigma)
            first = len(store)
            store.add(prediction.scores, batch["label"].numpy(), prediction.patch_scores, masks)
            cut += int(batch["cut"].sum())
            cut_images += int((batch["cut"] > 0).sum())
            if on_batch is not None:
                begin = time.perf_counter()
                on_batch(Batch(first, batch["image"], prediction.maps, masks, prediction.scores))
                writing += time.perf_counter() - begin
    predict_seconds = time.perf_counter() - start - writing
    timings = model.timings
    # decoding happens inside the DataLoader: it is counted with feature extraction
    phases["extract"] = timings["extract_train"] + predict_seconds - timings["search"] - timings["maps"]
    phases["coreset"], phases["search"], phases["maps"] = timings["coreset"], timings["search"], timings["maps"]
    start = time.perf_counter()
    metrics = store.metrics()
    phases["metrics"] = time.perf_counter() - start

    labels = np.asarray(test.labels)
    total = cut + sum(int(np.unpackbits(packed).sum()) for packed in store.masks.values())
    result = Evaluation(category, np.asarray(store.scores), np.stack(store.grids), labels, list(test.defects),
                        list(test.paths), tuple(size), config.sigma, (cut, total, cut_images), phases=phases)
    result.metrics = {
        **metrics,
        "n_train": len(train),
        "n_test": len(test),
        "memory_bank_size": int(model.memory_bank.shape[0]),
        "fit_seconds": round(fit_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
        "backbone": config.backbone,
        "weights": str(model.weights),
        "patch_feature": config.patch_feature,
        "feature_dim": int(model.memory_bank.shape[1]),
        "input_size": "{}x{}".format(*size),  # H x W the model saw, as maps and masks
    }
    return model, result


def _images(batches, current: dict):
    """Yield each batch's images, keeping the whole batch (masks, labels) in ``current``."""
    for batch in batches:
        current.update(batch)
        yield batch["image"]
