"""Stage 8: evaluation metrics for anomaly detection: image AUROC, pixel AUROC and AUPRO.

PatchCore produces two outputs per test image: one *anomaly score* (is this
image defective?) and an *anomaly map* (where is the defect?). No single number
judges both, so the paper, like most MVTec AD work, reports three:

1. **Image-level AUROC** (`image_auroc`), for *detection*. Each test image has a
   label (0 = good, 1 = defective) and a score. The AUROC is the probability
   that a randomly chosen defective image scores higher than a randomly chosen
   good one (ties count 1/2). It needs no threshold: 1.0 means some threshold
   separates the two classes perfectly, 0.5 is chance level.

2. **Pixel-level AUROC** (`pixel_auroc`), for *segmentation*. The same
   statistic, but every pixel of every image is a sample, with the ground-truth
   mask as its label and the anomaly map as its score. Its weakness: pixels
   count, not defects. One large defect contributes far more pixels than many
   small ones, so a method that finds the big blobs and misses every scratch
   can still score highly. And because good pixels vastly outnumber defective
   ones, the ROC curve is dominated by the low false-positive rates that a
   practical threshold would never use.

3. **AUPRO** (`pro_curve`, `aupro`), the *per-region overlap* of Bergmann et
   al. (MVTec AD, IJCV 2021). Every connected defect region in the ground truth
   is one unit. For a threshold t, the overlap of a region is the fraction of
   its pixels whose map value is >= t; PRO(t) is the *mean over regions* of that
   fraction, so a 1-pixel defect and a 10,000-pixel defect weigh the same. It
   is plotted against the false-positive rate FPR(t) (fraction of defect-free
   pixels with map >= t), and the area is taken only for FPR in [0, 0.3]:
   beyond that, the segmentation is too noisy to be useful. The area is divided
   by 0.3, so a perfect map scores 1.0.

Connectivity: defect regions are the 8-connected components of each mask
(pixels touching by an edge *or a corner* belong to the same region). That is
what MVTec's official evaluation code does (`scipy.ndimage.label` with a 3x3
structure of ones), so numbers computed here are comparable to published ones.

All inputs may be numpy arrays or torch tensors. Masks and maps are stacks of
shape (N, H, W); (N, 1, H, W) is accepted too and the channel is dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score, roc_curve

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "roc_curve_points",
    "label_regions",
    "pro_curve",
    "clip_curve",
    "pro_steps",
    "roc_and_pro",
    "aupro",
    "compute_metrics",
]

# 8-connectivity in the image plane, and *no* connection along axis 0, so one
# call to `ndimage.label` on an (N, H, W) stack labels each image separately
# (and still gives every region in the stack its own label number).
_STRUCTURE_8 = np.zeros((3, 3, 3), dtype=int)
_STRUCTURE_8[1] = 1


# --------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    """Tensor or array-like -> numpy array (without importing torch here)."""
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_finite(scores: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(scores)
    if bad.any():
        n_nan = int(np.isnan(scores).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name} must be finite; found {n_nan} NaN and {n_inf} infinite value(s)"
        )


def _check_binary(labels: np.ndarray, name: str) -> np.ndarray:
    """Return labels as a bool array, or raise if they are not all 0/1."""
    if labels.dtype == bool:
        return labels
    values = np.unique(labels)
    if not np.isin(values, (0, 1)).all():
        shown = values[:5].tolist()
        raise ValueError(
            f"{name} must contain only 0 and 1 (or True/False); found values {shown}"
            + (" ..." if values.size > 5 else "")
            + ". Binarise first, e.g. mask > 0."
        )
    return labels.astype(bool)


def _check_both_classes(labels: np.ndarray, what: str) -> None:
    """AUROC compares positives with negatives, so both must be present."""
    present = np.unique(labels.astype(int))
    if present.size < 2:
        raise ValueError(
            f"AUROC needs both good and defective {what}; got only label {present[0]}"
        )


def _as_stack(a: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) -> (N, H, W)."""
    if a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0]
    if a.ndim == 3:
        return a
    raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W); got {a.shape}")


def _image_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,), (N,) -> bool labels (N,), float scores (N,)."""
    labels, scores = _to_numpy(labels), _to_numpy(scores)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(
            f"labels and scores must be 1-D; got shapes {labels.shape} and {scores.shape}"
        )
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must have the same length; got {labels.shape[0]} labels "
            f"and {scores.shape[0]} scores"
        )
    scores = scores.astype(np.float64)
    _check_finite(scores, "scores")
    return _check_binary(labels, "labels"), scores


def _pixel_inputs(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W), (N, H, W) -> bool masks, float64 maps, both (N, H, W)."""
    masks, maps = _to_numpy(masks), _to_numpy(maps)
    masks_3d, maps_3d = _as_stack(masks, "masks"), _as_stack(maps, "maps")
    if masks_3d.shape != maps_3d.shape:
        raise ValueError(
            f"masks shape {masks.shape} does not match maps shape {maps.shape}"
        )
    maps_3d = maps_3d.astype(np.float64)
    _check_finite(maps_3d, "maps")
    return _check_binary(masks_3d, "masks"), maps_3d


# --------------------------------------------------------------------------
# ROC-based metrics
# --------------------------------------------------------------------------


def image_auroc(labels, scores) -> float:
    """Image-level AUROC: (N,) labels in {0, 1}, (N,) scores -> float in [0, 1].

    The probability that a defective image outscores a good one (ties = 1/2).
    """
    labels, scores = _image_inputs(labels, scores)
    _check_both_classes(labels, "images")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC: (N, H, W) binary masks, (N, H, W) maps -> float.

    Every pixel of every image is one sample; images are simply concatenated,
    so large defects weigh more than small ones (see `aupro` for the remedy).
    """
    masks, maps = _pixel_inputs(masks, maps)
    _check_both_classes(masks, "pixels")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def roc_curve_points(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve for plotting: (N,), (N,) -> (fpr, tpr), each (K,), from (0, 0) to (1, 1).

    A thin wrapper of `sklearn.metrics.roc_curve` with the same input checks as
    `image_auroc`; the trapezoidal area under it equals `image_auroc(labels, scores)`.
    Works for pixels too: pass `masks.ravel(), maps.ravel()`.
    """
    labels, scores = _image_inputs(labels, scores)
    _check_both_classes(labels, "samples")
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


# --------------------------------------------------------------------------
# Per-region overlap (PRO)
# --------------------------------------------------------------------------


def label_regions(masks) -> tuple[np.ndarray, int]:
    """Connected defect regions: (N, H, W) binary masks -> ((N, H, W) int labels, count).

    Label 0 is background; regions are numbered 1..count across the whole
    stack. Uses 8-connectivity within each image (diagonal neighbours join),
    matching MVTec's official evaluation; regions never span two images.
    """
    masks = _check_binary(_as_stack(_to_numpy(masks), "masks"), "masks")
    labeled, count = ndimage.label(masks, structure=_STRUCTURE_8)
    return labeled, int(count)


def pro_steps(masks) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's part in the PRO curve: (N, H, W) masks -> (N*H*W,) region labels and steps.

    The label is 0 for a good pixel and r for a pixel of defect region r;
    the step is what detecting that pixel adds to PRO, 1 / (|r| * n_regions)
    (0 for a good pixel). Depends on the masks only, so a caller scoring many
    maps of one test set computes it once.
    """
    labeled, n_regions = label_regions(masks)
    if n_regions == 0:
        raise ValueError("PRO needs at least one defect region; all masks are empty")
    if not (labeled == 0).any():
        raise ValueError(
            "PRO needs defect-free pixels to measure false positives; "
            "every pixel in masks is defective"
        )
    labels = labeled.ravel()
    region_size = np.bincount(labels)  # every region's size
    return labels, np.where(labels == 0, 0.0, 1.0 / region_size[labels]) / n_regions


def roc_and_pro(maps, labels: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixel ROC and PRO curves from one sort: maps (N, H, W) and :func:`pro_steps` -> fpr, tpr, pro.

    One point per distinct map value, in order of decreasing threshold, plus
    (0, 0) first; the last point is (1, 1). The trapezoidal area under
    ``(fpr, tpr)`` is the pixel AUROC.
    """
    values = np.asarray(maps).ravel()
    order = np.argsort(values, kind="stable")[::-1]  # descending score
    ranked = values[order]
    is_good = labels[order] == 0
    # Last pixel of each run of tied scores = one distinct threshold.
    last_of_run = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    # Count pixels as integers, so FPR and TPR are exact fractions.
    false_positives = np.cumsum(is_good)[last_of_run]
    true_positives = last_of_run + 1 - false_positives
    fpr = np.concatenate(([0.0], false_positives / is_good.sum()))
    tpr = np.concatenate(([0.0], true_positives / (is_good.size - is_good.sum())))
    pro = np.concatenate(([0.0], np.minimum(np.cumsum(steps[order])[last_of_run], 1.0)))
    # At the lowest threshold every pixel is detected: (1, 1) by definition,
    # which the float cumulative sum of PRO steps only reaches to ~1e-16.
    pro[-1] = 1.0
    return fpr, tpr, pro


def pro_curve(masks, maps, *, num_thresholds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-region-overlap curve: (N, H, W) masks, (N, H, W) maps -> (fpr, pro), each (K,).

    One point per distinct map value t (every pixel is "detected" when map >= t),
    in order of decreasing t, plus a first point (0, 0) for a threshold above
    every value; the last point is always (1, 1). `fpr` is non-decreasing, and
    so is `pro`.

    How it stays exact and fast: lowering the threshold past one pixel changes
    the curve by a fixed amount that depends only on that pixel -- a good pixel
    adds 1 / n_good to FPR, and a pixel of region r adds
    1 / (|r| * n_regions) to PRO. So we sort all pixels once by score
    (descending), take cumulative sums of those increments, and read off the
    curve at the last pixel of each run of equal scores (a threshold cannot
    split tied pixels). This is the method of MVTec's `generic_util.compute_pro`.

    `num_thresholds`, if given, keeps only that many points (evenly spaced
    along the curve, first and last always kept) for lighter plots. `aupro`
    always uses the full curve.
    """
    masks, maps = _pixel_inputs(masks, maps)
    fpr, _, pro = roc_and_pro(maps, *pro_steps(masks))
    if num_thresholds is not None:
        fpr, pro = _subsample(fpr, pro, num_thresholds)
    return fpr, pro


def _subsample(fpr: np.ndarray, pro: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep k points of a curve, evenly spaced by index, including both ends."""
    if k < 2:
        raise ValueError(f"num_thresholds must be at least 2; got {k}")
    if k >= fpr.size:
        return fpr, pro
    keep = np.unique(np.linspace(0, fpr.size - 1, k).round().astype(int))
    return fpr[keep], pro[keep]


def clip_curve(fpr, y, max_fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut a curve at FPR = max_fpr: (K,), (K,) -> (M,), (M,).

    Keeps the points with fpr <= max_fpr and, if the curve has no point
    exactly at max_fpr, appends one whose y is linearly interpolated between
    its neighbours -- the same correction as MVTec's `trapezoid`. `fpr` must be
    non-decreasing and start at 0.
    """
    fpr, y = np.asarray(fpr, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = fpr <= max_fpr
    if np.any(fpr == max_fpr) or keep.all():
        return fpr[keep], y[keep]
    i = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[i-1] < max_fpr < fpr[i]
    x0, x1, y0, y1 = fpr[i - 1], fpr[i], y[i - 1], y[i]
    y_end = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
    return np.append(fpr[keep], max_fpr), np.append(y[keep], y_end)


def aupro(masks, maps, *, max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve: (N, H, W), (N, H, W) -> float in [0, 1].

    Trapezoidal area of `pro_curve` over FPR in [0, max_fpr], divided by
    max_fpr so that a perfect map scores 1.0 (and a map that ranks every good
    pixel above every defective one scores 0.0). PatchCore and MVTec use
    max_fpr = 0.3.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr}")
    fpr, pro = clip_curve(*pro_curve(masks, maps), max_fpr)
    return float(auc(fpr, pro)) / max_fpr


def compute_metrics(labels, scores, masks, maps) -> dict[str, float]:
    """image AUROC, pixel AUROC and AUPRO (FPR <= 0.3) of one test set."""
    return {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks, maps, max_fpr=0.3),
    }
