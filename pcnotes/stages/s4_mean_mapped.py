"""Stage 4: one vector per patch: mean mappers and the aggregator.

After patchify and alignment every layer gives, per grid position, a block
``(C_l, p, p)``: (512, 3, 3) from layer2 and (1024, 3, 3) from layer3. Two
adaptive average pools turn them into one vector of a fixed size:

1. the *mean mapper* flattens each layer's block (C_l*p*p values) and pools it
   to ``pretrain_dim``; stacking the layers gives ``(N, L, pretrain_dim)``;
2. the *aggregator* flattens that to ``L*pretrain_dim`` values and pools to
   ``target_dim``: ``(N, target_dim)``.

For wide_resnet50_2 at 1024/1024 this has a closed form worth knowing: the
4608 -> 1024 pool averages overlapping windows of 5, so each layer2 channel
becomes a 3x3 kernel of weight 0.2 at the centre and 0.1 around it; and the
2048 -> 1024 pool averages neighbours *within* each layer's half, never across
layers (dims 0-511 come from layer2, 512-1023 average pairs of layer3 channels).

This is the reference's patch feature (``patch_feature="mean_mapped"``); the
other one, which suits narrow backbones, is in :mod:`pcnotes.stages.s4_pooled_concat`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s2_patches import patchify


def mean_map(patches: torch.Tensor, dim: int = 1024) -> torch.Tensor:
    """Pool each flattened patch to ``dim`` values: ``(N, C, p, p) -> (N, dim)``."""
    if patches.ndim < 2:
        raise ValueError(f"mean_map expects (N, ...), got shape {tuple(patches.shape)}")
    flat = patches.reshape(len(patches), 1, -1)
    return F.adaptive_avg_pool1d(flat, dim).squeeze(1)


def aggregate(layer_embeddings: torch.Tensor, dim: int = 1024) -> torch.Tensor:
    """Pool the stacked layers into one vector: ``(N, L, D) -> (N, dim)``."""
    if layer_embeddings.ndim != 3:
        raise ValueError(f"aggregate expects (N, L, D), got shape {tuple(layer_embeddings.shape)}")
    flat = layer_embeddings.reshape(len(layer_embeddings), 1, -1)
    return F.adaptive_avg_pool1d(flat, dim).reshape(len(layer_embeddings), -1)


def embed(
    feature_maps: Mapping[str, torch.Tensor] | list[torch.Tensor],
    *,
    pretrain_dim: int = 1024,
    target_dim: int = 1024,
    patch_size: int = 3,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """All of stages 2-4: feature maps to patch features.

    ``{layer: (B, C_l, H_l, W_l)} -> (B*H*W, target_dim)`` and the grid ``(H, W)``
    of the first layer, which every other layer is aligned to.
    """
    maps = list(feature_maps.values()) if isinstance(feature_maps, Mapping) else list(feature_maps)
    if not maps:
        raise ValueError("embed needs at least one feature map")
    patched = [patchify(fmap, patch_size) for fmap in maps]
    grid = patched[0][1]
    layers = [patches if layer_grid == grid else align_patches(patches, layer_grid, grid)
              for patches, layer_grid in patched]
    per_layer = [mean_map(patches.reshape(-1, *patches.shape[2:]), pretrain_dim)
                 for patches in layers]
    return aggregate(torch.stack(per_layer, dim=1), target_dim), grid
