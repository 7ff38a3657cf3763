"""Stage 4, the other patch feature: pooled channels, concatenated (anomalib's).

The reference's mean mapper (:mod:`pcnotes.stages.s4_mean_mapped`) squeezes every layer's
flattened ``C_l x 3 x 3`` block to a fixed 1024 values, and the aggregator then
gives each layer half of the final vector. That fits wide_resnet50_2 (512 and
1024 channels). A narrow backbone such as mobilenet_v2 has 32 and 96
channels: its shallow layer's 288 values are stretched to 1024, and its
deeper, more semantic layer gets the same half as the shallow one although it
has three times the channels.

This feature keeps one number per channel instead::

    {layer: (B, C_l, H_l, W_l)}
      --3x3 average pool, stride 1, zero padding 1-->  (B, C_l, H_l, W_l)
      --bilinear to the first layer's grid-->           (B, C_l, H, W)
      --concatenate the channels-->                     (B, C_1 + C_2, H, W)
      --one row per position-->                         (B*H*W, C_1 + C_2)

For mobilenet_v2 that is 32 + 96 = 128 values per patch; for
wide_resnet50_2, 512 + 1024 = 1536. Each layer keeps a share proportional to
its channels.

It is the same locally aware patch as before, averaged over its 3x3 window:
the pool divides by 9 with the padded zeros counted, exactly as
``mean_map(patches, dim=C_l)`` averages each channel's 9 entries, and pooling
and bilinear resizing are both linear, so their order does not matter (a
test checks both, up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def pool_neighbourhood(features: torch.Tensor, patch_size: int = 3) -> torch.Tensor:
    """Average every position's p x p neighbourhood: ``(B, C, H, W) -> (B, C, H, W)``.

    Stride 1 and zero padding ``p // 2``; the padded zeros count in the mean.
    """
    if features.ndim != 4:
        raise ValueError(f"pool_neighbourhood expects (B, C, H, W), got {tuple(features.shape)}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and positive, got {patch_size}")
    return F.avg_pool2d(features, patch_size, stride=1, padding=patch_size // 2)


def resize_to_grid(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize onto ``grid``: ``(B, C, h, w) -> (B, C, H, W)``."""
    if tuple(features.shape[-2:]) == tuple(grid):
        return features
    return F.interpolate(features, size=tuple(grid), mode="bilinear", align_corners=False)


def pooled_concat(
    feature_maps: Mapping[str, torch.Tensor] | list[torch.Tensor], *, patch_size: int = 3
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Feature maps to patch features by pooling and concatenating the channels.

    ``{layer: (B, C_l, H_l, W_l)} -> (B*H*W, sum C_l)`` and the grid ``(H, W)``
    of the first layer, which the other layers are resized to.
    """
    maps = list(feature_maps.values()) if isinstance(feature_maps, Mapping) else list(feature_maps)
    if not maps:
        raise ValueError("pooled_concat needs at least one feature map")
    grid = tuple(maps[0].shape[-2:])
    pooled = [resize_to_grid(pool_neighbourhood(fmap, patch_size), grid) for fmap in maps]
    stacked = torch.cat(pooled, dim=1)  # (B, sum C_l, H, W)
    return stacked.permute(0, 2, 3, 1).reshape(-1, stacked.shape[1]), grid
