"""The three metrics of a test set from a compact store, filled one batch at a time.

:func:`pcnotes.stages.s8_metrics.compute_metrics` takes every map and mask of a
test set at once: ``N * H * W`` floats, 400 MB for 2,000 images at 224 x 224,
and a sort of all of them. :class:`MetricStore` keeps, per image, the image
score, the label, the patch score grid ``(h, w)`` (64 times smaller than its
map at stride 8) and, for defective images only, the mask as packed bits. The
maps are recomputed from the grids chunk by chunk (:func:`anomaly_map` is
deterministic) into histograms over ``BINS`` equal bins of the score range:

* per bin, the good pixels and the defect pixels (the pixel ROC curve);
* per bin, the summed PRO steps ``1 / |region|`` of its defect pixels.

Every bin edge is a threshold, so each point of these curves is a point of the
exact curves of :mod:`pcnotes.stages.s8_metrics`; only thresholds *inside* a
bin are skipped, which treats the pixels of one bin as tied. Pixel AUROC then
differs from the exact one by at most half the share of (good, defect) pixel
pairs that share a bin (:attr:`MetricStore.pixel_auroc_bound`, a few 1e-6 at
worst on small test sets with 2**20 bins); in practice the ties split both
ways and the difference is far smaller: below 1e-9 on the embedded ``wood``
(tests/test_streaming.py holds both to 1e-6). AUPRO differs by the area of
the skipped trapezoid corners, of the same order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

from pcnotes.stages.s7_maps import anomaly_map
from pcnotes.stages.s8_metrics import clip_curve, image_auroc

BINS = 1 << 20
_EIGHT = np.ones((3, 3), dtype=int)  # 8-connectivity within one image, as MVTec's evaluation


class MetricStore:
    """Image scores, labels, score grids and packed defect masks of a test set; see the module."""

    def __init__(self, size: tuple[int, int], sigma: float):
        self.size, self.sigma = tuple(size), sigma
        self.scores: list[np.ndarray] = []
        self.labels: list[int] = []
        self.grids: list[np.ndarray] = []
        self.masks: dict[int, np.ndarray] = {}  # image index -> np.packbits of its (H, W) mask
        self.pixel_auroc_bound = float("nan")

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, scores, labels, grids, masks) -> None:
        """One batch: ``scores (B,)``, ``labels (B,)``, ``grids (B, h, w)``, ``masks (B, H, W)`` bool."""
        for score, label, grid, mask in zip(scores, labels, grids, masks):
            if mask.any():
                self.masks[len(self.labels)] = np.packbits(mask)
            self.scores.append(np.float32(score))
            self.labels.append(int(label))
            self.grids.append(np.asarray(grid, dtype=np.float32))

    @property
    def nbytes(self) -> int:
        """Bytes held for the test set so far: per image a score, a label, a grid and, if defective, a packed mask."""
        return (4 * len(self.scores) + 8 * len(self.labels) + sum(grid.nbytes for grid in self.grids)
                + sum(packed.nbytes for packed in self.masks.values()))

    def _mask(self, index: int) -> np.ndarray:
        packed = self.masks.get(index)
        if packed is None:
            return np.zeros(self.size, dtype=bool)
        return np.unpackbits(packed, count=self.size[0] * self.size[1]).reshape(self.size).astype(bool)

    def histograms(self, bins: int = BINS, chunk: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Per bin: good pixels, defect pixels, PRO steps (unnormalised); and the number of regions."""
        grids = np.stack(self.grids)
        low, high = float(grids.min()), float(grids.max())  # maps are convex blends of their grid
        scale = bins / max(high - low, np.finfo(np.float32).tiny)
        good = np.zeros(bins, dtype=np.int64)
        defect = np.zeros(bins, dtype=np.int64)
        steps = np.zeros(bins, dtype=np.float64)
        regions = 0
        for start in range(0, len(grids), chunk):
            maps = anomaly_map(grids[start : start + chunk], size=self.size, sigma=self.sigma)
            for offset, amap in enumerate(maps):
                where = np.clip(((amap.astype(np.float64) - low) * scale).astype(np.int64), 0, bins - 1)
                mask = self._mask(start + offset)
                good += np.bincount(where[~mask], minlength=bins)
                if mask.any():
                    labeled, count = ndimage.label(mask, structure=_EIGHT)
                    sizes = np.bincount(labeled.ravel())
                    defect += np.bincount(where[mask], minlength=bins)
                    steps += np.bincount(where[mask], weights=1.0 / sizes[labeled[mask]], minlength=bins)
                    regions += count
        return good, defect, steps, regions

    def metrics(self, bins: int = BINS) -> dict[str, float]:
        """image AUROC (exact), pixel AUROC and AUPRO (FPR <= 0.3) from the histograms."""
        good, defect, steps, regions = self.histograms(bins)
        if regions == 0 or good.sum() == 0:
            raise ValueError("pixel AUROC and AUPRO need defect pixels and good pixels in the test masks")
        # Thresholds from the top bin down: (0, 0) first, (1, 1) last.
        fpr = np.concatenate(([0.0], np.cumsum(good[::-1]) / good.sum()))
        tpr = np.concatenate(([0.0], np.cumsum(defect[::-1]) / defect.sum()))
        pro = np.concatenate(([0.0], np.minimum(np.cumsum(steps[::-1]) / regions, 1.0)))
        pro[-1] = 1.0
        self.pixel_auroc_bound = 0.5 * float(np.dot(good, defect)) / (good.sum() * defect.sum())
        return {
            "image_auroc": image_auroc(np.asarray(self.labels), np.asarray(self.scores)),
            "pixel_auroc": float(auc(fpr, tpr)),
            "aupro": float(auc(*clip_curve(fpr, pro, 0.3))) / 0.3,
        }
