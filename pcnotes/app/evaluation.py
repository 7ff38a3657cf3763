"""Fit on a category's good images, score its test set, compute the three metrics.

Shared by the CLI (``evaluate``, ``demo``) and the benchmarks, so that both
report the same numbers for the same configuration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pcnotes.config import PatchCoreConfig
from pcnotes.data.mvtec import DataError, load_split, stack
from pcnotes.model import PatchCore
from pcnotes.stages.s8_metrics import compute_metrics


@dataclass
class Evaluation:
    """Scores, maps and metrics of one category's test set."""

    category: str
    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W): the model's input size, like the masks
    images: torch.Tensor = field(repr=False)  # (N, 3, H, W): the test images as the model saw them
    labels: np.ndarray  # (N,) 0 good, 1 defective
    masks: np.ndarray  # (N, H, W) bool
    defects: list[str]
    paths: list[str]
    metrics: dict = field(default_factory=dict)


def evaluate_category(
    root: str | Path, category: str, config: PatchCoreConfig | None = None
) -> tuple[PatchCore, Evaluation]:
    """Fit PatchCore on ``train/good`` and evaluate it on ``test``.

    Everything that can be checked is checked before the fit: the test set
    must hold good and defective images (image AUROC needs both), the model's
    k and b must fit the memory bank that the coreset ratio will give, and
    every image and mask of both splits is decoded (once: the fit and the
    scoring use those very tensors).
    """
    config = config or PatchCoreConfig()
    train = load_split(root, category, "train", config)
    test = load_split(root, category, "test", config)
    if len(set(test.labels)) < 2:
        only = "good" if test.labels[0] == 0 else "defective"
        raise DataError(f"{Path(root) / category / 'test'}: holds only {only} images; image AUROC and "
                        "AUPRO need good and defective test images: add test/good or a defect folder")
    model = PatchCore(config)
    model.check_fit(len(train))
    start = time.perf_counter()
    train_images, _ = stack(train)
    decode_train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_images, masks = stack(test)  # decoded before the fit too, so a bad file stops the run first
    decode_test_seconds = time.perf_counter() - start
    check_defect_pixels(test, masks)

    start = time.perf_counter()
    model.fit(train_images)
    fit_seconds = time.perf_counter() - start + decode_train_seconds

    start = time.perf_counter()
    scores, maps = model.predict(test_images)
    predict_seconds = time.perf_counter() - start + decode_test_seconds

    labels = np.asarray(test.labels)
    result = Evaluation(category, scores, maps, test_images, labels, masks, list(test.defects), list(test.paths))
    result.metrics = {
        **compute_metrics(labels, scores, masks, maps),
        "n_train": len(train),
        "n_test": len(test),
        "memory_bank_size": int(model.memory_bank.shape[0]),
        "fit_seconds": round(fit_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
        "backbone": config.backbone,
        "weights": str(model.weights),
        "patch_feature": config.patch_feature,
        "feature_dim": int(model.memory_bank.shape[1]),
        "input_size": "{}x{}".format(*test_images.shape[-2:]),  # H x W the model saw, as maps and masks
    }
    return model, result


def check_defect_pixels(test, masks: np.ndarray) -> None:
    """Refuse, before the fit, a test set whose defect masks hold no defect pixel.

    Pixel AUROC and AUPRO need good and defective pixels; ``masks`` are the
    decoded ``(N, H, W)`` masks of ``test`` (a test split), as the model sees them.
    """
    if masks.any():
        return
    defective = [path for path, label in zip(test.mask_paths, test.labels) if label == 1]
    raise DataError(f"{Path(defective[0]).parent.parent}: every defect mask is empty ({len(defective)} masks, "
                    f"e.g. {defective[0]}); pixel AUROC and AUPRO need defect pixels: draw the defects in "
                    "the masks (white on black)")
