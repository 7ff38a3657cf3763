"""Checkers for notebook 05 (stage 8): AUROC and PRO."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from pcnotes.course.checking import _Case, _Answer, _check
from pcnotes.stages import s8_metrics as metrics


def _pair_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int, int, int]:
    """(wins, ties, defective, good): pairs where the defective image scores higher / the same."""
    bad, good = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    difference = bad[:, None] - good[None, :]
    return int((difference > 0).sum()), int((difference == 0).sum()), len(bad), len(good)


def _auroc_case(label: str, labels: np.ndarray, scores: np.ndarray) -> _Case:
    wins, ties, n_bad, n_good = _pair_counts(labels, scores)
    n = len(labels)
    pairs = n_bad * n_good
    mistakes = [
        ("ties counted as 0; a tie between a defective and a good image counts 1/2", wins / pairs),
        ("ties counted as 1; a tie between a defective and a good image counts 1/2", (wins + ties) / pairs),
        ("you counted the pairs where the good image scores higher (labels swapped); count defective > good",
         1 - (wins + 0.5 * ties) / pairs),
        (f"wrong denominator: divide by n_defective * n_good = {pairs} pairs, not N * N",
         (wins + 0.5 * ties) / (n * n)),
        (f"wrong denominator: divide by n_defective * n_good = {pairs} pairs, not N * (N - 1) / 2",
         (wins + 0.5 * ties) / (n * (n - 1) / 2)),
        (f"you returned the count, {wins + 0.5 * ties:g} winning pairs; divide it by the number of "
         f"(defective, good) pairs, n_defective * n_good = {pairs}", wins + 0.5 * ties),
        ("you returned a percentage; return the fraction of pairs, between 0 and 1",
         100 * (wins + 0.5 * ties) / pairs),
    ]
    if pairs > ties:
        mistakes += [("you left the tied pairs out of the denominator; a tie counts 1/2 and stays among the "
                      "n_defective * n_good pairs", won / (pairs - ties)) for won in (wins, wins + 0.5 * ties)]
    if labels.dtype != bool:  # 0/1 integers used as indices pick scores[0] and scores[1]
        as_indices = np.asarray(labels)
        for good in (1 - as_indices, ~as_indices):
            won, tied = _index_counts(scores[as_indices], scores[good])
            mistakes.append((
                "you indexed the scores with the 0/1 labels as integers (scores[labels] gives scores[0] and "
                "scores[1] over and over); index with a boolean mask, labels == 1 and labels == 0 "
                "(or labels.astype(bool))", (won + 0.5 * tied) / (len(as_indices) ** 2)))
    return _Case(label, (labels, scores), metrics.image_auroc(labels, scores), mistakes)


def _index_counts(bad: np.ndarray, good: np.ndarray) -> tuple[int, int]:
    difference = bad[:, None] - good[None, :]
    return int((difference > 0).sum()), int((difference == 0).sum())


_AUROC = _Answer("number", "the AUROC, a float", "pcnotes.stages.s8_metrics.image_auroc", atol=1e-9, rtol=1e-9,
                 covers="no ties, ties, all equal, perfect separation, one defective image, boolean labels")


def check_auroc(fn: Callable[[np.ndarray, np.ndarray], float]) -> bool:
    """Exercise "AUROC by counting pairs" (notebook 05).

    ``fn(labels: np.ndarray (N,) of 0/1 (1 = defective), scores: np.ndarray (N,)) -> float``:
    the fraction of (defective, good) pairs in which the defective image scores
    higher, a tie counting 1/2. Compared with ``pcnotes.stages.s8_metrics.image_auroc``.
    """
    return _check("AUROC", fn, _auroc_cases(), _AUROC)


def _auroc_cases() -> list[_Case]:
    rng = np.random.default_rng(7)
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    cases = [
        # No ties, not separable, and no two mistakes give the same number here.
        _auroc_case("8 images, no ties", labels, np.array([0.35, 0.9, 0.6, 0.4, 0.75, 0.1, 0.8, 0.55])),
        _auroc_case("ties between good and defective images", labels,
                    np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.2, 0.3, 0.3])),
        _auroc_case("every score equal", labels, np.full(8, 0.7)),
        _auroc_case("perfect separation", labels, labels * 2.0 + rng.uniform(size=8)),
        _auroc_case("a single defective image among 5", np.array([0, 0, 1, 0, 0]),
                    np.array([0.3, 0.8, 0.6, 0.1, 0.6])),
        _auroc_case("boolean labels", labels.astype(bool), rng.normal(size=8)),
    ]
    return cases


def _pro_at(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    """PRO(t) read off the library's exact curve: its points run over the distinct map values, high to low."""
    _, pro = metrics.pro_curve(masks, maps)
    at_or_above = int((np.unique(maps) >= threshold).sum())  # point 0 is the threshold above every value
    return float(pro[at_or_above])


def _overlaps(labeled: np.ndarray, detected: np.ndarray, regions) -> list[float]:
    return [float(detected[labeled == r].mean()) for r in regions]


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _per_image_overlaps(masks: np.ndarray, detected: np.ndarray, regions) -> list[float]:
    """Each image labelled on its own, 8-connected, over the labels ``regions(count)`` names."""
    overlaps = []
    for mask, found in zip(masks, detected):
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        overlaps += [float(found[labeled == r].mean()) for r in regions(count) if (labeled == r).any()]
    return overlaps


def _overlaps_of_detections(masks: np.ndarray, detected: np.ndarray) -> list[float]:
    """The roles swapped: every 8-connected region of the detected pixels, and the part of it inside a mask."""
    overlaps = []
    for mask, found in zip(masks, detected):
        labeled, count = ndimage.label(found, structure=np.ones((3, 3)))
        overlaps += [float(mask[labeled == r].mean()) for r in range(1, count + 1)]
    return overlaps


def _pro_case(label: str, masks: np.ndarray, maps: np.ndarray, threshold: float) -> _Case:
    masks = masks.astype(bool)
    detected = maps >= threshold
    four_connected = np.stack([ndimage.label(mask)[0] + 1000 * i for i, mask in enumerate(masks)]) * masks
    three_d, count_3d = ndimage.label(masks)  # 3-D: joins regions of neighbouring images
    eight, count = metrics.label_regions(masks)
    per_image = [np.mean(_overlaps(eight[i], detected[i], np.unique(eight[i][eight[i] > 0])))
                 for i in range(len(masks)) if masks[i].any()]
    mistakes = [
        ("your regions are 4-connected; MVTec's PRO joins pixels that touch at a corner too "
         "(8-connectivity: ndimage.label(mask, structure=np.ones((3, 3))))",
         np.mean(_overlaps(four_connected, detected, np.unique(four_connected[four_connected > 0])))),
        ("you labelled the (N, H, W) stack as one 3-D volume, which joins regions of neighbouring images at the "
         "same place; label each image on its own", np.mean(_overlaps(three_d, detected, range(1, count_3d + 1)))),
        ("you pooled all defect pixels (that is pixel recall); PRO averages the overlap per region, so a "
         "1-pixel defect counts as much as a large one", float(detected[masks].mean())),
        ("you counted pixels with map > t; a region's overlap counts the pixels with map >= t",
         np.mean(_overlaps(eight, maps > threshold, range(1, count + 1)))),
        ("you counted the background (label 0) as a region; average over the defect regions only",
         np.mean(_overlaps(eight, detected, range(0, count + 1)))),
        ("you counted the background (label 0) as a region; average over the defect regions only",
         _mean_or_none(_per_image_overlaps(masks, detected, lambda n: range(0, n + 1)))),
        ("you averaged per image; PRO averages over all regions of all images, each region once",
         float(np.mean(per_image))),
        ("you counted the pixels below the threshold; a region's overlap counts its pixels with map >= t",
         np.mean(_overlaps(eight, maps < threshold, range(1, count + 1)))),
        ("you computed each region's IoU with the detected pixels; PRO's overlap is the fraction of the "
         "region's pixels that are detected, |region ∩ detected| / |region|",
         _mean_or_none([(detected[i] & (eight[i] == r)).sum() / (detected[i] | (eight[i] == r)).sum()
                        for i in range(len(masks)) for r in np.unique(eight[i][eight[i] > 0])])),
        ("you skipped the last region of each image: ndimage.label numbers the regions 1 to count, so loop "
         "over range(1, count + 1)", _mean_or_none(_per_image_overlaps(masks, detected, lambda n: range(1, n)))),
        ("your regions run over range(count): label 0 is the background, and the last region, label count, is "
         "missed; loop over range(1, count + 1)",
         _mean_or_none(_per_image_overlaps(masks, detected, lambda n: range(0, n)))),
        ("you labelled the regions of the thresholded map; PRO labels the defect regions of the masks and "
         "measures how much of each one the map >= t detects",
         _mean_or_none(_overlaps_of_detections(masks, detected))),
    ]
    return _Case(label, (masks, maps, threshold), _pro_at(masks, maps, threshold), mistakes)


_PRO = _Answer("number", "PRO(t), a float", "pcnotes.stages.s8_metrics.pro_curve", atol=1e-9, rtol=1e-9,
               covers="regions of 1 to 12 pixels, corner contact, two images, ties at the threshold, a single image")


def check_pro(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> bool:
    """Exercise "the PRO of one threshold" (notebook 05).

    ``fn(masks: np.ndarray (N, H, W) bool, maps: np.ndarray (N, H, W), threshold: float) -> float``:
    the mean, over every 8-connected defect region of every image, of the
    fraction of the region's pixels whose map value is ``>= threshold``.
    Compared with ``pcnotes.stages.s8_metrics.pro_curve`` at that threshold.
    """
    return _check("PRO", fn, _pro_cases(), _PRO)


def _pro_cases() -> list[_Case]:
    rng = np.random.default_rng(8)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True  # 9 pixels
    masks[0, 6, 6] = True  # a 1-pixel defect
    masks[1, 1:5, 5:8] = True  # 12 pixels, not touching the others even across the two images
    maps = rng.uniform(size=masks.shape) + 0.6 * masks
    corner = np.zeros((1, 6, 6), dtype=bool)
    corner[0, 1:3, 1:3] = True
    corner[0, 3, 3] = True  # touches the 2x2 block at a corner only
    corner_map = np.where(corner, 0.9, 0.1)
    corner_map[0, 3, 3] = 0.2
    stacked = np.zeros((2, 5, 5), dtype=bool)
    stacked[0, 1:4, 1:4] = True  # 9 pixels, all found
    stacked[1, 1:3, 1:3] = True  # 4 pixels at the same place in the next image, one found
    stacked_map = np.where(stacked, 0.3, 0.1)
    stacked_map[0][stacked[0]] = 0.8
    stacked_map[1, 1, 1] = 0.8
    cases = [
        _pro_case("2 images, 3 regions (one of 1 pixel)", masks, maps, 0.9),
        _pro_case("a region that touches itself at a corner", corner, corner_map, 0.5),
        _pro_case("regions at the same place in two images", stacked, stacked_map, 0.5),
        _pro_case("a threshold equal to map values (>=)", corner, corner_map, 0.2),
        _pro_case("a threshold above every value", masks, maps, 2.0),
        _pro_case("a single image", masks[1:], maps[1:], 0.8),
    ]
    return cases
