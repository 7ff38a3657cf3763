"""Stage 2: locally aware patches with ``unfold``.

PatchCore describes the feature at grid position (h, w) together with its
p x p neighbourhood, so that a patch "knows" a little context. ``unfold`` cuts
out every p x p window (stride 1, zero padding p // 2 so the grid keeps its
size) and lays it out as one column::

    (B, C, H, W) --unfold--> (B, C*p*p, H*W) --reshape/permute--> (B, H*W, C, p, p)

For wide_resnet50_2's layer2: (2, 512, 28, 28) -> (2, 4608, 784) -> (2, 784, 512, 3, 3).

The padded zeros are real values here: they enter every average later on,
exactly as in the reference code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(
    features: torch.Tensor, patch_size: int = 3, stride: int = 1
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a feature map into overlapping p x p patches, one per grid position.

    ``(B, C, H, W) -> (B, H'*W', C, p, p)`` and the grid ``(H', W')``; with
    stride 1 and odd ``p`` the grid is ``(H, W)``.
    """
    if features.ndim != 4:
        raise ValueError(f"patchify expects (B, C, H, W), got shape {tuple(features.shape)}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and positive, got {patch_size}")
    batch, channels, height, width = features.shape
    padding = (patch_size - 1) // 2
    columns = F.unfold(features, kernel_size=patch_size, stride=stride, padding=padding)
    grid = tuple((size + 2 * padding - patch_size) // stride + 1 for size in (height, width))
    # unfold orders each column as (C, p, p) and the columns row by row over the grid.
    patches = columns.reshape(batch, channels, patch_size, patch_size, -1)
    return patches.permute(0, 4, 1, 2, 3), grid

