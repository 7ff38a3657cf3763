"""Stage 3: align a deeper layer's patches onto the first layer's grid.

layer3 sits at stride 16, so it yields a 14 x 14 grid of patches where layer2
yields 28 x 28. To concatenate them per position, every one of layer3's
``C*p*p`` patch entries is treated as a small 14 x 14 image and resized
bilinearly (``align_corners=False``) to 28 x 28::

    (B, 196, C, p, p) -> (B, 14, 14, C, p, p) -> (B, C, p, p, 14, 14)
      -> (B*C*p*p, 1, 14, 14) --bilinear--> (B*C*p*p, 1, 28, 28)
      -> (B, C, p, p, 28, 28) -> (B, 28, 28, C, p, p) -> (B, 784, C, p, p)

Note the order: the reference patchifies layer3 on its own grid *first* and
interpolates the patches afterwards; we reproduce that order exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def align_patches(
    patches: torch.Tensor, grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize patches from ``grid`` to ``target_grid`` bilinearly.

    ``(B, h*w, C, p, p) -> (B, H*W, C, p, p)``.
    """
    if patches.ndim != 5 or patches.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f"expected patches (B, {grid[0] * grid[1]}, C, p, p), got {tuple(patches.shape)}"
        )
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2)
    resized = F.interpolate(
        maps.reshape(-1, 1, *grid), size=target_grid, mode="bilinear", align_corners=False
    )
    resized = resized.reshape(batch, channels, p, p, *target_grid).permute(0, 4, 5, 1, 2, 3)
    return resized.reshape(batch, -1, channels, p, p)
