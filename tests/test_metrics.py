"""Tests for pcnotes.stages.s8_metrics: small cases worked out by hand, plus a slow reference."""


import numpy as np
import pytest
import torch

from pcnotes.stages.s8_metrics import (
    aupro,
    clip_curve,
    image_auroc,
    label_regions,
    pixel_auroc,
    pro_curve,
    roc_curve_points,
)

# --------------------------------------------------------------------------
# image_auroc
# --------------------------------------------------------------------------


def test_image_auroc_perfect_and_reversed():
    labels = [0, 0, 1, 1]
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_image_auroc_mixed_by_hand():
    # Defect/good pairs: 0.35 > 0.1 yes, 0.35 > 0.4 no, 0.8 beats both -> 3 of 4.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-12)


def test_image_auroc_ties_count_half():
    # Pairs: 0.5 vs 0.1 -> 1, 0.5 vs 0.5 -> 1/2 (tie), 0.9 beats both -> 2. Total 3.5 / 4.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875, abs=1e-12)
    assert image_auroc([0, 1], [0.3, 0.3]) == pytest.approx(0.5, abs=1e-12)


def test_image_auroc_accepts_torch_tensors():
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    assert image_auroc(labels, scores) == pytest.approx(0.75, abs=1e-6)


def test_image_auroc_single_class_error():
    with pytest.raises(ValueError, match="both good and defective images; got only label 0"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="got only label 1"):
        image_auroc([1, 1], [0.1, 0.2])


def test_image_auroc_length_mismatch_error():
    with pytest.raises(ValueError, match="3 labels and 2 scores"):
        image_auroc([0, 1, 1], [0.1, 0.2])


def test_image_auroc_nan_error():
    with pytest.raises(ValueError, match="1 NaN"):
        image_auroc([0, 1], [0.1, float("nan")])


def test_image_auroc_non_binary_labels_error():
    with pytest.raises(ValueError, match="only 0 and 1"):
        image_auroc([0, 2], [0.1, 0.2])


def test_roc_curve_points_area_matches_auroc():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    fpr, tpr = roc_curve_points(labels, scores)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    area = np.sum(0.5 * (tpr[1:] + tpr[:-1]) * np.diff(fpr))
    assert area == pytest.approx(0.75, abs=1e-12)


# --------------------------------------------------------------------------
# pixel_auroc
# --------------------------------------------------------------------------

# 2 defect pixels (scores 0.9, 0.35), 7 good (0.1, 0.2, 0.3, 0.4, 0.0, 0.5, 0.1).
# 0.9 beats all 7; 0.35 beats 5 (loses to 0.4 and 0.5) -> 12 / 14 = 6/7.
TINY_MASK = np.array([[[0, 0, 0], [0, 1, 1], [0, 0, 0]]])
TINY_MAP = np.array([[[0.1, 0.2, 0.3], [0.4, 0.9, 0.35], [0.0, 0.5, 0.1]]])


def test_pixel_auroc_tiny_case_by_hand():
    assert pixel_auroc(TINY_MASK, TINY_MAP) == pytest.approx(6 / 7, abs=1e-12)


def test_pixel_auroc_accepts_channel_dim_and_tensors():
    masks = torch.from_numpy(TINY_MASK[:, None].astype(bool))  # (1, 1, 3, 3)
    assert pixel_auroc(masks, torch.from_numpy(TINY_MAP)) == pytest.approx(6 / 7, abs=1e-12)


def test_pixel_auroc_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 3, 3\).*\(1, 4, 4\)"):
        pixel_auroc(TINY_MASK, np.zeros((1, 4, 4)))


def test_pixel_auroc_errors():
    with pytest.raises(ValueError, match="only label 0"):
        pixel_auroc(np.zeros((1, 3, 3)), TINY_MAP)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(TINY_MASK, np.full((1, 3, 3), np.nan))
    with pytest.raises(ValueError, match="only 0 and 1"):
        pixel_auroc(TINY_MASK * 255, TINY_MAP)


# --------------------------------------------------------------------------
# pro_curve / aupro
# --------------------------------------------------------------------------


def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 16, 16)) < 0.2
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)
    # Curve: (0,0) -> (0,1) at t=1 (all regions, no false positives) -> (1,1) at t=0.
    fpr, pro = pro_curve(masks, masks.astype(float))
    np.testing.assert_allclose(fpr, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 1, 1], atol=1e-12)


def test_aupro_all_negatives_ranked_first_is_zero():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 16, 16)) < 0.2
    # Good pixels get distinct scores in [2, 3), defect pixels in [0, 1).
    maps = np.where(masks, rng.random(masks.shape), 2 + rng.random(masks.shape))
    assert aupro(masks, maps) == 0.0
    assert aupro(masks, maps, max_fpr=1.0) == 0.0


# Two regions of very different size in one 3x5 image, 10 good pixels:
#     A . . B B        A = 1 pixel, B = 4 pixels (2x2); A and B do not touch.
#     . . . B B
#     . . . . .
TWO_REGIONS_MASK = np.array(
    [[[1, 0, 0, 1, 1],
      [0, 0, 0, 1, 1],
      [0, 0, 0, 0, 0]]]
)
# A = 0.9 (found first); half of B = 0.8, other half = 0.2; good pixels: one 0.5,
# one 0.4, the other eight 0.1.
TWO_REGIONS_MAP = np.array(
    [[[0.9, 0.1, 0.1, 0.8, 0.8],
      [0.1, 0.5, 0.1, 0.2, 0.2],
      [0.1, 0.1, 0.4, 0.1, 0.1]]]
)
# Threshold sweep, PRO = mean over the 2 regions, FPR = false positives / 10:
#   t = +inf : A 0,   B 0     -> PRO 0,                 FPR 0
#   t = 0.9  : A 1,   B 0     -> PRO (1 + 0) / 2 = 0.5, FPR 0
#   t = 0.8  : A 1,   B 2/4   -> PRO (1 + .5)/2 = 0.75, FPR 0
#   t = 0.5  :                   PRO 0.75,              FPR 1/10
#   t = 0.4  :                   PRO 0.75,              FPR 2/10
#   t = 0.2  : A 1,   B 4/4   -> PRO 1,                 FPR 2/10
#   t = 0.1  :                   PRO 1,                 FPR 10/10
# Area for FPR in [0, 0.3]: 0.75 * 0.2 (flat at 0.75) + 1 * 0.1 (flat at 1) = 0.25,
# so AUPRO = 0.25 / 0.3 = 5/6.
# Pixel-weighted overlap (fraction of all 5 defect pixels found) would instead be
# 1/5 at t = 0.9 and 3/5 at t = 0.8: area 0.6 * 0.2 + 1 * 0.1 = 0.22 -> 0.22/0.3 = 11/15.
TWO_REGIONS_FPR = [0, 0, 0, 0.1, 0.2, 0.2, 1]
TWO_REGIONS_PRO = [0, 0.5, 0.75, 0.75, 0.75, 1, 1]


def test_pro_curve_two_regions_by_hand():
    fpr, pro = pro_curve(TWO_REGIONS_MASK, TWO_REGIONS_MAP)
    np.testing.assert_allclose(fpr, TWO_REGIONS_FPR, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pro, TWO_REGIONS_PRO, rtol=0, atol=1e-9)
    assert aupro(TWO_REGIONS_MASK, TWO_REGIONS_MAP) == pytest.approx(5 / 6, abs=1e-9)


def test_pro_weights_regions_not_pixels():
    mask = TWO_REGIONS_MASK.astype(bool)
    # At t = 0.8, 3 of 5 defect pixels are found, but PRO is 0.75, not 0.6:
    # the 1-pixel region counts as much as the 4-pixel one.
    pixel_overlap = (mask & (TWO_REGIONS_MAP >= 0.8)).sum() / mask.sum()
    assert pixel_overlap == pytest.approx(0.6)
    _, pro = pro_curve(mask, TWO_REGIONS_MAP)
    assert pro[2] == pytest.approx(0.75, abs=1e-9)
    assert aupro(mask, TWO_REGIONS_MAP) != pytest.approx(11 / 15, abs=1e-3)

    # Finding only the tiny region or only the big one scores the same PRO
    # (pixel-weighted it would be 1/5 versus 4/5).
    only_small = np.where(TWO_REGIONS_MASK == 1, 0.0, 0.5)
    only_small[0, 0, 0] = 1.0
    only_big = np.where(TWO_REGIONS_MASK == 1, 1.0, 0.5)
    only_big[0, 0, 0] = 0.0
    for maps in (only_small, only_big):
        fpr, pro = pro_curve(mask, maps)
        np.testing.assert_allclose(fpr, [0, 0, 1, 1], atol=1e-12)
        np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1], atol=1e-12)
        assert aupro(mask, maps) == pytest.approx(0.5, abs=1e-12)


# An L of 3 pixels (B) and a single pixel (A) that touches it only at a corner:
#     B B . .
#     B . . .
#     . A . .    A meets B only at the corner between (1, 0) and (2, 1).
#     . . . .
DIAGONAL_MASK = np.array(
    [[[1, 1, 0, 0],
      [1, 0, 0, 0],
      [0, 1, 0, 0],
      [0, 0, 0, 0]]]
)


def test_diagonal_neighbours_form_one_region_8_connectivity():
    labeled, count = label_regions(DIAGONAL_MASK)
    assert count == 1  # 8-connectivity, as in MVTec's evaluation (4-connectivity: 2)
    assert set(np.unique(labeled[DIAGONAL_MASK == 1])) == {1}
    # Consequence for PRO: finding only A (1 of 4 pixels of the single region)
    # gives overlap 1/4. Under 4-connectivity it would be mean(1, 0) = 1/2.
    maps = np.zeros((1, 4, 4))
    maps[0, 2, 1] = 1.0
    _, pro = pro_curve(DIAGONAL_MASK, maps)
    assert pro[1] == pytest.approx(0.25, abs=1e-12)


def test_regions_never_span_images():
    # The same pixel set in two images = two regions, not one.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[:, 1, 1] = True
    assert label_regions(masks)[1] == 2


# A single region of 2 pixels and 4 good pixels, with a tie that makes a sloped segment:
#     mask [1, 1, 0, 0, 0, 0]
#     map  [.9, .5, .5, .5, .1, .1]
#   t = 0.9: PRO 1/2, FPR 0        t = 0.5: PRO 1, FPR 2/4        t = 0.1: (1, 1)
# Curve: (0, 0), (0, 0.5), (0.5, 1), (1, 1).
SLOPE_MASK = np.array([[[1, 1, 0, 0, 0, 0]]])
SLOPE_MAP = np.array([[[0.9, 0.5, 0.5, 0.5, 0.1, 0.1]]])


def test_aupro_full_range_trapezoid():
    # (0,0)-(0,.5): width 0; (0,.5)-(.5,1): 0.5 * (0.5 + 1) / 2 = 0.375;
    # (.5,1)-(1,1): 0.5. Total 0.875, divided by max_fpr = 1.
    fpr, pro = pro_curve(SLOPE_MASK, SLOPE_MAP)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.5, 1, 1], atol=1e-12)
    assert aupro(SLOPE_MASK, SLOPE_MAP, max_fpr=1.0) == pytest.approx(0.875, abs=1e-12)


def test_aupro_interpolates_endpoint_at_max_fpr():
    # At FPR 0.3 the curve is on the segment (0, 0.5)-(0.5, 1):
    # PRO(0.3) = 0.5 + 0.5 * 0.3 / 0.5 = 0.8. Area = 0.3 * (0.5 + 0.8) / 2 = 0.195,
    # AUPRO = 0.195 / 0.3 = 0.65.
    fpr, pro = clip_curve(*pro_curve(SLOPE_MASK, SLOPE_MAP), 0.3)
    np.testing.assert_allclose(fpr, [0, 0, 0.3], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.5, 0.8], atol=1e-12)
    assert aupro(SLOPE_MASK, SLOPE_MAP, max_fpr=0.3) == pytest.approx(0.65, abs=1e-12)
    # Exactly on a vertex: no interpolation, area 0.375 / 0.5 = 0.75.
    assert aupro(SLOPE_MASK, SLOPE_MAP, max_fpr=0.5) == pytest.approx(0.75, abs=1e-12)


def test_pro_curve_subsampling_keeps_ends():
    rng = np.random.default_rng(2)
    masks = rng.random((2, 20, 20)) < 0.1
    maps = rng.random((2, 20, 20))
    fpr, pro = pro_curve(masks, maps, num_thresholds=10)
    full_fpr, full_pro = pro_curve(masks, maps)
    assert fpr.size == 10 and full_fpr.size == 801  # 800 distinct values + (0, 0)
    assert (fpr[0], pro[0]) == (0.0, 0.0) and (fpr[-1], pro[-1]) == (1.0, 1.0)
    assert np.all(np.isin(fpr, full_fpr))


def test_aupro_errors():
    with pytest.raises(ValueError, match="all masks are empty"):
        aupro(np.zeros((2, 4, 4)), np.random.default_rng(0).random((2, 4, 4)))
    with pytest.raises(ValueError, match="every pixel in masks is defective"):
        aupro(np.ones((2, 4, 4)), np.random.default_rng(0).random((2, 4, 4)))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        aupro(np.ones((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(SLOPE_MASK, SLOPE_MAP, max_fpr=0.0)


# --------------------------------------------------------------------------
# Cross-check against a slow, obviously correct reference
# --------------------------------------------------------------------------


def _reference_regions(mask):
    """8-connected regions of one (H, W) mask by flood fill: list of pixel lists."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            stack, pixels = [(i, j)], []
            seen[i, j] = True
            while stack:
                y, x = stack.pop()
                pixels.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            regions.append(pixels)
    return regions


def _reference_pro_curve(masks, maps):
    regions = [(n, r) for n in range(len(masks)) for r in _reference_regions(masks[n])]
    good = [maps[n][~masks[n]] for n in range(len(masks))]
    n_good = sum(g.size for g in good)
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        overlaps = [sum(maps[n][p] >= t for p in r) / len(r) for n, r in regions]
        pros.append(sum(overlaps) / len(overlaps))
        fprs.append(sum(int((g >= t).sum()) for g in good) / n_good)
    return np.array(fprs), np.array(pros)


def _reference_aupro(fprs, pros, max_fpr):
    area = 0.0
    for k in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[k - 1], fprs[k], pros[k - 1], pros[k]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last trapezoid at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pro_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 12, 12)) < 0.25  # many small regions, some touching diagonally
    masks[2] = False  # an image with no defect only adds good pixels
    # Scores rounded to 2 decimals (many ties), higher on defects on average.
    maps = np.round(rng.random(masks.shape) * 0.7 + 0.3 * masks, 2)
    fpr, pro = pro_curve(masks, maps)
    ref_fpr, ref_pro = _reference_pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pro, ref_pro, rtol=0, atol=1e-9)
    assert label_regions(masks)[1] == sum(len(_reference_regions(m)) for m in masks)
    for max_fpr in (0.05, 0.3, 1.0):
        expected = _reference_aupro(ref_fpr, ref_pro, max_fpr)
        assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-9)


def test_metrics_on_a_realistic_test_set():
    """30 images of 224x224: a map that adds the mask to noise ranks defects high."""
    rng = np.random.default_rng(0)
    masks = np.zeros((30, 224, 224), dtype=bool)
    masks[::2, 60:120, 80:150] = True  # 15 defective images
    masks[1::4, 10:14, 10:14] = True
    maps = rng.random(masks.shape).astype(np.float32) + masks
    # noise in [0, 1) plus 1 on defects: every defect pixel outranks every good one
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert pixel_auroc(masks, maps) == pytest.approx(1.0)
    noisy = maps - 0.5 * masks  # now defects overlap the top half of the good pixels
    assert 0.5 < pixel_auroc(masks, noisy) < 1.0
