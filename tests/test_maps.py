import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from pcnotes.stages.s7_maps import anomaly_map, normalize_maps, upsample_scores


def test_anomaly_map_shapes_and_reference_numerics():
    grid = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    maps = anomaly_map(grid)
    assert maps.shape == (2, 224, 224) and maps.dtype == np.float32
    up = F.interpolate(torch.from_numpy(grid)[:, None], size=224, mode="bilinear", align_corners=False)
    expected = gaussian_filter(up[1, 0].numpy(), sigma=4)
    np.testing.assert_allclose(maps[1], expected, rtol=1e-6)


def test_blur_spreads_a_single_hot_patch_and_keeps_its_mass_centred():
    grid = np.zeros((1, 28, 28), np.float32)
    grid[0, 14, 14] = 1.0
    sharp, blurred = upsample_scores(grid), anomaly_map(grid, sigma=4)
    assert blurred.max() < sharp.max()
    assert np.isclose(blurred.sum(), sharp.sum(), rtol=1e-3)  # reflect mode keeps the mass
    peak = np.unravel_index(blurred[0].argmax(), (224, 224))
    assert all(abs(p - 116) <= 4 for p in peak)  # patch 14 covers pixels 112..119


def test_sigma_zero_is_plain_upsampling_and_bad_rank_fails():
    grid = np.ones((1, 4, 4), np.float32)
    np.testing.assert_allclose(anomaly_map(grid, size=16, sigma=0), np.ones((1, 16, 16)))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        anomaly_map(np.ones((4, 4)))


def test_normalisation_over_the_set_versus_per_image():
    maps = np.stack([np.full((2, 2), 1.0), np.array([[1.0, 3.0], [1.0, 1.0]])]).astype(np.float32)
    together = normalize_maps(maps)
    assert together[0].max() == 0.0 and together[1].max() == 1.0  # the clean map stays dark
    each = normalize_maps(maps, per_image=True)
    assert each[1].max() == 1.0 and np.all(np.isfinite(each))
