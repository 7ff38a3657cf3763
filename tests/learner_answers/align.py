import torch
import torch.nn.functional as F


def align(patches: torch.Tensor, grid: tuple, target_grid: tuple) -> torch.Tensor:
    # one permute: every patch entry becomes a channel of an (h, w) image, resized as a whole
    batch, _, channels, p, _ = patches.shape
    height, width = target_grid
    images = patches.reshape(batch, grid[0], grid[1], channels * p * p).permute(0, 3, 1, 2)
    resized = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return resized.flatten(2).transpose(1, 2).reshape(batch, height * width, channels, p, p)
