"""Stage 7: from patch scores to a pixel-level anomaly map.

The patch grid (28 x 28 for a 224 px input at stride 8) is upsampled
bilinearly to the image size and smoothed with a Gaussian of sigma 4, as in
the paper and the reference code::

    (B, 28, 28) --bilinear--> (B, 224, 224) --gaussian sigma=4--> (B, 224, 224)

The reference then min-max normalises the maps over the *whole test set*
(``normalize_maps(..., per_image=False)``), which keeps maps comparable across
images; per-image normalisation makes every map look alarming, even a clean one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def upsample_scores(score_grid, size: int | tuple[int, int] = 224) -> np.ndarray:
    """Bilinear resize of patch scores: ``(B, h, w) -> (B, H, W)`` (float32)."""
    grid = torch.as_tensor(np.asarray(score_grid, dtype=np.float32))
    if grid.ndim != 3:
        raise ValueError(f"expected patch scores (B, h, w), got shape {tuple(grid.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    upsampled = F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)
    return upsampled[:, 0].numpy()


def anomaly_map(score_grid, size: int | tuple[int, int] = 224, sigma: float = 4.0) -> np.ndarray:
    """Patch scores to smoothed pixel maps: ``(B, h, w) -> (B, H, W)`` (float32)."""
    upsampled = upsample_scores(score_grid, size)
    if sigma <= 0:
        return upsampled
    # scipy's defaults (mode="reflect", truncate=4.0), image by image as in the reference.
    return np.stack([gaussian_filter(image, sigma=sigma) for image in upsampled])


def normalize_maps(maps, per_image: bool = False) -> np.ndarray:
    """Min-max scale maps to [0, 1]: over all maps together, or each on its own.

    ``(B, H, W) -> (B, H, W)``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    axes = (1, 2) if per_image else None
    low = maps.min(axis=axes, keepdims=True)
    high = maps.max(axis=axes, keepdims=True)
    return (maps - low) / np.maximum(high - low, np.finfo(np.float32).tiny)
