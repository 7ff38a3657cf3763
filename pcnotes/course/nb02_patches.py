"""Checkers for notebook 02 (stages 2-4): patchify, align, the mean mapper, the aggregator."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pcnotes.course.checking import _Case, _Answer, _Shape, _attempt, _check, _generator
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s4_mean_mapped import aggregate, mean_map


def _unfold_to_patches(columns: torch.Tensor, batch: int, channels: int, p: int) -> torch.Tensor:
    return columns.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 2, 3)


def _patchify_case(label: str, features: torch.Tensor, p: int) -> _Case:
    batch, channels, height, width = features.shape
    columns = F.unfold(features, kernel_size=p, padding=p // 2)
    mistakes = [
        ("positions and channels are swapped: reshaping unfold's (B, C*p*p, H*W) straight to (B, H*W, C, p, p) "
         "mixes them up; reshape to (B, C, p, p, H*W) first, then permute(0, 4, 1, 2, 3)",
         columns.reshape(batch, height * width, channels, p, p)),
        ("the two window axes are swapped (permute(0, 4, 1, 3, 2)), so every p x p window is transposed; "
         "use permute(0, 4, 1, 2, 3)",
         columns.reshape(batch, channels, p, p, -1).permute(0, 4, 1, 3, 2)),
        ("unfold orders each column as (C, p, p), channel first, but you split it as (p, p, C); "
         "reshape to (B, C, p, p, H*W)",
         columns.reshape(batch, p, p, channels, -1).permute(0, 4, 3, 1, 2)),
        ("the positions are still last, (B, C, p, p, H*W); permute(0, 4, 1, 2, 3) puts them second",
         columns.reshape(batch, channels, p, p, -1)),
        ("the channel axis ended up last, (B, H*W, p, p, C); permute(0, 4, 1, 2, 3) keeps (C, p, p) in order",
         columns.reshape(batch, channels, p, p, -1).permute(0, 4, 2, 3, 1)),
        ("you returned unfold's columns (B, C*p*p, H*W) as they are; reshape them to (B, C, p, p, H*W) "
         "and permute the positions to axis 1", columns),
    ]
    if p > 1 and height >= p and width >= p:
        unpadded = _unfold_to_patches(F.unfold(features, kernel_size=p), batch, channels, p)
        mistakes.append((
            f"you get a {height - p + 1}x{width - p + 1} grid instead of {height}x{width}: the padding is missing; "
            "unfold needs padding=p // 2 so that every position keeps its window (28x28 stays 28x28, not 26x26)",
            unpadded))
    if p != 3:
        mistakes.append((f"you cut 3x3 windows for patch_size={p}: use the patch_size argument, not a fixed 3",
                         patchify(features, 3)[0]))
        if min(height, width) + 2 >= p:
            padding_one = _unfold_to_patches(F.unfold(features, kernel_size=p, padding=1), batch, channels, p)
            mistakes.append((f"padding=1 is right only for p=3: use padding=patch_size // 2 ({p // 2} here)",
                             padding_one))
    half = p // 2
    for mode, what in [("reflect", "mirrors the values next to the border"), ("replicate", "repeats the border"),
                       ("circular", "wraps the opposite border around")]:
        padded = _attempt(lambda: F.pad(features, (half,) * 4, mode=mode))
        mistakes.append((f"you padded with mode='{mode}', which {what}; PatchCore pads with zeros: "
                         f"F.unfold(features, kernel_size=p, padding=p // 2) (no F.pad needed)",
                         None if padded is None else _unfold_to_patches(F.unfold(padded, p), batch, channels, p)))
    for padding in (half, 0):
        strided = _attempt(lambda: _unfold_to_patches(F.unfold(features, kernel_size=p, padding=padding, stride=p),
                                                      batch, channels, p))
        if strided is not None:
            mistakes.append((f"you cut the windows with stride={p} (the patch size), so only {strided.shape[1]} of "
                             f"the {height * width} grid positions get a patch; use stride 1 (unfold's default) "
                             f"with padding=p // 2: one patch per grid position, the windows overlap", strided))
    for padding in sorted({p - 1, p} - {half, 0, 1}):
        rows, cols = height + 2 * padding - p + 1, width + 2 * padding - p + 1
        mistakes.append((f"padding={padding} gives a {rows}x{cols} grid instead of {height}x{width}: "
                         f"use padding=patch_size // 2 ({half} here), which keeps the grid's size",
                         _attempt(lambda: _unfold_to_patches(F.unfold(features, kernel_size=p, padding=padding),
                                                             batch, channels, p))))
    expected = patchify(features, p)[0]
    mistakes += [
        ("your positions run down the columns (grid flattened as (W, H)); unfold's columns run row by row, "
         "position i * W + j: keep the (H, W) order when you flatten",
         expected.reshape(batch, height, width, channels, p, p).transpose(1, 2).reshape(expected.shape)),
        ("you kept the grid as two axes, (B, H, W, C, p, p); flatten it to (B, H*W, C, p, p)",
         expected.reshape(batch, height, width, channels, p, p)),
    ]
    return _Case(label, (features, p), expected, mistakes)


_PATCHIFY = _Answer("tensor", "the patches tensor (B, H*W, C, p, p)", "pcnotes.stages.s2_patches.patchify",
                    covers="random maps, a single image, p=5, p=1 and a 1x1 grid",
                    tuple_hint="not (patches, grid) as the library's patchify does")


def check_patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Exercise "patchify" (notebook 02): cut a feature map into p x p patches with ``unfold``.

    ``fn(features: Tensor (B, C, H, W), patch_size: int) -> Tensor (B, H*W, C, p, p)``,
    stride 1 and zero padding ``p // 2`` (the grid keeps its size). Compared with
    the first element of ``pcnotes.stages.s2_patches.patchify``, which returns ``(patches, grid)``.
    """
    return _check("patchify", fn, _patchify_cases(), _PATCHIFY)


def _patchify_cases() -> list[_Case]:
    g = _generator(0)
    cases = [
        _patchify_case("2 images, 3 channels, a 5x6 grid, p=3", torch.randn(2, 3, 5, 6, generator=g), 3),
        _patchify_case("a single image, 4 channels, a 4x4 grid, p=3", torch.randn(1, 4, 4, 4, generator=g), 3),
        _patchify_case("2 images, 2 channels, a 7x6 grid, p=5", torch.randn(2, 2, 7, 6, generator=g), 5),
        _patchify_case("p=1 (each patch is one position)", torch.randn(2, 3, 3, 4, generator=g), 1),
        _patchify_case("a 1x1 grid, p=3", torch.randn(2, 4, 1, 1, generator=g), 3),
    ]
    return cases


def _resize(patches, grid, target, **interpolate):
    batch, _, channels, p, _ = patches.shape
    maps = patches.reshape(batch, *grid, channels, p, p).permute(0, 3, 4, 5, 1, 2).reshape(-1, 1, *grid)
    return F.interpolate(maps, size=target, **interpolate).reshape(batch, channels, p, p, *target)


def _align_case(label: str, features: torch.Tensor, target: tuple[int, int]) -> _Case:
    patches, grid = patchify(features, 3)
    batch, channels = features.shape[:2]
    flat = lambda resized: resized.permute(0, 4, 5, 1, 2, 3).reshape(batch, -1, channels, 3, 3)  # noqa: E731
    corners = flat(_resize(patches, grid, target, mode="bilinear", align_corners=True))
    mixed = F.interpolate(patches.reshape(-1, 1, *grid), size=target, mode="bilinear", align_corners=False)
    resized = _resize(patches, grid, target, mode="bilinear", align_corners=False)
    height, width = target
    swapped = F.interpolate(patches.reshape(batch, *grid, -1).permute(0, 3, 1, 2), size=(width, height),
                            mode="bilinear", align_corners=False)
    mistakes = [
        ("you resized with align_corners=True; PatchCore resizes with align_corners=False, which lines up "
         "the pixel centres instead of the corner pixels", corners),
        ("you resized with nearest neighbours (mode='nearest', or 'area', which copies too when it enlarges); "
         "use mode='bilinear' (align_corners=False)", flat(_resize(patches, grid, target, mode="nearest"))),
        ("you resized with nearest neighbours (mode='nearest-exact'); use mode='bilinear' (align_corners=False)",
         flat(_resize(patches, grid, target, mode="nearest-exact"))),
        *[("you resized with mode='bicubic'; PatchCore resizes bilinearly: mode='bilinear', align_corners=False",
           flat(_resize(patches, grid, target, mode="bicubic", align_corners=corners_too)))
          for corners_too in (False, True)],
        (f"the target's height and width are swapped: you resized to {width}x{height}, but F.interpolate's "
         f"size is (height, width), rows first; pass size=target_grid = {tuple(target)} as it comes",
         swapped.flatten(2).permute(0, 2, 1).reshape(batch, -1, *patches.shape[2:])),
        (f"you read the grid as {grid[1]}x{grid[0]}; the patches run row by row over grid = (h, w) = "
         f"{tuple(grid)}: reshape to (B, h, w, C, p, p)",
         _attempt(lambda: flat(_resize(patches, grid[::-1], target, mode="bilinear", align_corners=False)))),
        (f"you returned the patches on their own {grid[0]}x{grid[1]} grid: resize every map to the target grid "
         f"{tuple(target)}", _Shape(patches.shape) if tuple(grid) != tuple(target) else None),
        ("each resized map mixes entries of different positions: reshape to (B, h, w, C, p, p) and "
         "permute(0, 3, 4, 5, 1, 2) so that the grid axes are last before you interpolate",
         mixed.reshape(batch, -1, channels, 3, 3)),
        ("you return (B, H, W, C, p, p); flatten the grid to (B, H*W, C, p, p)", resized.permute(0, 4, 5, 1, 2, 3)),
        ("the grid axes are still last, (B, C, p, p, H, W); permute(0, 4, 5, 1, 2, 3) and flatten the grid "
         "to (B, H*W, C, p, p)", resized),
    ]
    return _Case(label, (patches, grid, target), align_patches(patches, grid, target), mistakes)


_ALIGN = _Answer("tensor", "the aligned patches (B, H*W, C, p, p)", "pcnotes.stages.s3_align.align_patches",
                 covers="random patches, a single image, a 1x1 grid and an unchanged grid")


def check_align(fn: Callable[[torch.Tensor, tuple, tuple], torch.Tensor]) -> bool:
    """Exercise "align layer3 onto the layer2 grid" (notebook 02).

    ``fn(patches: Tensor (B, h*w, C, p, p), grid: (h, w), target_grid: (H, W)) -> Tensor (B, H*W, C, p, p)``:
    every one of the ``C*p*p`` patch entries is an ``h x w`` map, resized
    bilinearly (``align_corners=False``) to ``H x W``. Compared with
    ``pcnotes.stages.s3_align.align_patches``.
    """
    return _check("align", fn, _align_cases(), _ALIGN)


def _align_cases() -> list[_Case]:
    g = _generator(1)
    cases = [
        _align_case("2 images, a 3x4 grid onto 6x8", torch.randn(2, 2, 3, 4, generator=g), (6, 8)),
        _align_case("a single image, a 7x7 grid onto 14x14", torch.randn(1, 3, 7, 7, generator=g), (14, 14)),
        _align_case("a 1x1 grid onto 2x3", torch.randn(2, 2, 1, 1, generator=g), (2, 3)),
        _align_case("the same grid (nothing to resize)", torch.randn(2, 2, 4, 4, generator=g), (4, 4)),
    ]
    return cases


def _array_split_pool(flat: torch.Tensor, dim: int) -> torch.Tensor:
    """Non-overlapping windows: the wrong answer to adaptive average pooling."""
    return torch.stack([chunk.mean(dim=1) for chunk in torch.tensor_split(flat, dim, dim=1)], dim=1)


def _mean_mapper_case(label: str, patches: torch.Tensor, dim: int) -> _Case:
    n = len(patches)
    flat = patches.reshape(n, -1)
    pool = lambda x: F.adaptive_avg_pool1d(x.reshape(n, 1, -1), dim).squeeze(1)  # noqa: E731
    expected = mean_map(patches, dim)
    mistakes = [
        ("you averaged each channel's p x p window first; the mean mapper pools the whole flattened patch "
         "(C*p*p values, channel first) down to dim", pool(patches.reshape(n, patches.shape[1], -1).mean(dim=2))),
        ("you flattened the patch as (p, p, C); flatten it as it comes, (C, p, p), so that each window "
         "averages neighbouring entries of one channel", pool(patches.movedim(1, -1))),
        ("your windows do not overlap: adaptive_avg_pool1d's window i runs from floor(i*L/dim) to "
         "ceil((i+1)*L/dim), so neighbouring windows share an entry when dim does not divide L",
         _array_split_pool(flat, dim)),
        ("you took the maximum of each window; the mean mapper averages (adaptive_avg_pool1d)",
         F.adaptive_max_pool1d(flat[:, None], dim).squeeze(1)),
        ("you interpolated; the mean mapper averages windows with F.adaptive_avg_pool1d",
         F.interpolate(flat[:, None], size=dim, mode="linear", align_corners=False).squeeze(1)),
        ("you kept the pooling axis, (N, 1, dim); squeeze(1) it to (N, dim)", expected[:, None]),
        ("you flattened each p x p window column by column (transposed); flatten the patch as it comes, "
         "(C, p, p)", pool(patches.transpose(2, 3))),
    ]
    mistakes += _fixed_window_mistakes(flat, dim)
    return _Case(label, (patches, dim), expected, mistakes)


def _fixed_window_mistakes(flat: torch.Tensor, dim: int) -> list[tuple[str, torch.Tensor]]:
    """avg_pool1d with one window size for all: the usual stand-in for the adaptive pool."""
    length = flat.shape[1]
    mistakes = []
    for kernel in sorted({max(1, length // dim), -(-length // dim)}):
        for stride in sorted({kernel, max(1, length // dim)}):
            for ceil_mode in (False, True):
                pooled = _attempt(lambda: F.avg_pool1d(flat[:, None], kernel, stride, ceil_mode=ceil_mode)[:, 0])
                if pooled is None:
                    continue
                size = pooled.shape[1]
                gives = f"{size} values here, not dim = {dim}" if size != dim else "other windows than the adaptive pool"
                mistakes.append((
                    f"F.avg_pool1d with a fixed window (kernel_size={kernel}, stride={stride}) gives {gives}; "
                    f"F.adaptive_avg_pool1d(x, dim) picks window i from floor(i*L/dim) to ceil((i+1)*L/dim), "
                    f"exactly dim of them, overlapping where needed", pooled))
    return mistakes


_MEAN_MAPPER = _Answer("tensor", "one vector per patch (N, dim)", "pcnotes.stages.s4_mean_mapped.mean_map",
                       covers="overlapping and exact windows, a single patch, p=1, nothing to average")


def check_mean_mapper(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Exercise "mean mapper" (notebook 02): one layer's patch to ``dim`` numbers.

    ``fn(patches: Tensor (N, C, p, p), dim: int) -> Tensor (N, dim)``: flatten
    each patch to ``C*p*p`` values and average-pool them adaptively to ``dim``.
    Compared with ``pcnotes.stages.s4_mean_mapped.mean_map``.
    """
    return _check("mean mapper", fn, _mean_mapper_cases(), _MEAN_MAPPER)


def _mean_mapper_cases() -> list[_Case]:
    g = _generator(2)
    cases = [
        _mean_mapper_case("5 patches (4, 3, 3) -> 8 (windows overlap)", torch.randn(5, 4, 3, 3, generator=g), 8),
        _mean_mapper_case("6 patches (2, 3, 3) -> 6 (windows of 3)", torch.randn(6, 2, 3, 3, generator=g), 6),
        _mean_mapper_case("a single patch, p=1: (1, 8, 1, 1) -> 4", torch.randn(1, 8, 1, 1, generator=g), 4),
        _mean_mapper_case("dim = C*p*p (nothing to average)", torch.randn(3, 1, 3, 3, generator=g), 9),
    ]
    return cases


def _aggregator_case(label: str, stacked: torch.Tensor, dim: int) -> _Case:
    n, layers, _ = stacked.shape
    pool = lambda x: F.adaptive_avg_pool1d(x.reshape(n, 1, -1), dim).reshape(n, -1)  # noqa: E731
    expected = aggregate(stacked, dim)
    mistakes = [
        ("you averaged over the layers (axis 1); the aggregator flattens the L layer vectors one after the "
         "other (L*D values) and pools that to dim, so at dim = D it never mixes two layers",
         pool(stacked.mean(dim=1))),
        ("you flattened as (D, L), interleaving the layers; flatten the stack (N, L, D) as it comes",
         pool(stacked.transpose(1, 2))),
        ("you concatenated the layers (N, L*D) but did not pool them down to dim"
         + (" (pooling each layer on its own to dim = D changes nothing)" if stacked.shape[2] == dim else "")
         + "; flatten them into one row, reshape(N, 1, L*D), and pool that to dim", stacked.reshape(n, -1)),
        ("you took the maximum of each window; the aggregator averages (adaptive_avg_pool1d)",
         F.adaptive_max_pool1d(stacked.reshape(n, 1, -1), dim).reshape(n, -1)),
        ("you kept the pooling axis, (N, 1, dim); reshape to (N, dim)", expected[:, None]),
        ("you summed the layers; the aggregator does not add them up, it flattens the L layer vectors one "
         "after the other (N, 1, L*D) and average-pools that to dim", pool(stacked.sum(dim=1))),
        ("you summed the layers; the aggregator does not add them up, it flattens the L layer vectors one "
         "after the other (N, 1, L*D) and average-pools that to dim", stacked.sum(dim=1)),
        ("you averaged over the layers (axis 1) and did not pool; the aggregator flattens the L layer vectors "
         "one after the other (N, 1, L*D) and average-pools that to dim", stacked.mean(dim=1)),
        ("you pooled each layer on its own, (N, L, dim): adaptive_avg_pool1d pools the last axis of every "
         "row, so flatten the layers into one row first, reshape(N, 1, L*D), then pool to dim",
         F.adaptive_avg_pool1d(stacked, dim)),
        ("you pooled each layer on its own to dim and kept them all, (N, L*dim): flatten the layers into one "
         "row first, reshape(N, 1, L*D), then pool that to dim", F.adaptive_avg_pool1d(stacked, dim).reshape(n, -1)),
    ]
    if layers > 1:
        mistakes.append(("you kept only the first layer; flatten all L layers before pooling",
                         pool(stacked[:, 0])))
        mistakes.append(("you kept only the last layer; flatten all L layers before pooling",
                         pool(stacked[:, -1])))
    mistakes += _fixed_window_mistakes(stacked.reshape(n, -1), dim)
    return _Case(label, (stacked, dim), expected, mistakes)


_AGGREGATOR = _Answer("tensor", "one vector per patch (N, dim)", "pcnotes.stages.s4_mean_mapped.aggregate",
                      covers="2 and 3 layers, a single patch, a single layer")


def check_aggregator(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Exercise "aggregator" (notebook 02): the stacked layers to one vector.

    ``fn(layer_embeddings: Tensor (N, L, D), dim: int) -> Tensor (N, dim)``:
    flatten the L layer vectors one after the other and average-pool the
    ``L*D`` values adaptively to ``dim``. Compared with ``pcnotes.stages.s4_mean_mapped.aggregate``.
    """
    return _check("aggregator", fn, _aggregator_cases(), _AGGREGATOR)


def _aggregator_cases() -> list[_Case]:
    g = _generator(3)
    cases = [
        _aggregator_case("4 patches, 2 layers of 6 -> 6", torch.randn(4, 2, 6, generator=g), 6),
        _aggregator_case("3 patches, 3 layers of 5 -> 4", torch.randn(3, 3, 5, generator=g), 4),
        _aggregator_case("a single patch, 2 layers of 4 -> 2", torch.randn(1, 2, 4, generator=g), 2),
        _aggregator_case("one layer of 6 -> 6 (nothing to average)", torch.randn(2, 1, 6, generator=g), 6),
    ]
    return cases
