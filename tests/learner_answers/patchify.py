import torch
import torch.nn.functional as F


def patchify(features: torch.Tensor, patch_size: int) -> torch.Tensor:
    # unfold's columns (B, C*p*p, H*W), transposed to one row per position, then split into (C, p, p)
    batch, channels, height, width = features.shape
    rows = F.unfold(features, kernel_size=patch_size, padding=patch_size // 2).transpose(1, 2)
    return rows.reshape(batch, height * width, channels, patch_size, patch_size)
