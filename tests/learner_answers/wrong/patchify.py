import torch
import torch.nn.functional as F


def patchify(features: torch.Tensor, patch_size: int) -> torch.Tensor:
    # wrong on purpose: reflect padding instead of zeros
    batch, channels, height, width = features.shape
    padded = F.pad(features, (patch_size // 2,) * 4, mode="reflect")
    columns = F.unfold(padded, kernel_size=patch_size)
    return columns.reshape(batch, channels, patch_size, patch_size, height * width).permute(0, 4, 1, 2, 3)
