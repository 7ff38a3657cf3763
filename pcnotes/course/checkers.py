"""Checkers for the course's exercises: the learner writes a stage, pcnotes checks it.

Each ``check_NAME(fn)`` calls the learner's function ``fn`` on a few inputs
(random ones, then edge cases such as a 1x1 grid, a single image, ties and
duplicated points), compares every result with the library, prints **one
line** and returns True or False::

    >>> from pcnotes import exercises
    >>> exercises.check_patchify(my_patchify)          # doctest: +SKIP
    ✓ patchify: correct on all 5 inputs (...).

A wrong answer is never an exception. The checker also computes the answers
that the typical mistakes give (the missing padding, the wrong permute,
``align_corners=True``, squared distances, ties counted as 0, ...). When the
learner's result equals one of them, the line names that mistake and says how
to fix it; otherwise it says where the result differs. An exception raised by
the learner's function is reported in one line with its type and message.
The one exception that passes through is the learner edition's stub
(``NotImplementedError("... write your solution here ...")``), so that a
notebook stops at the first exercise nobody has written yet.

The exercises, their checkers and the notebook they belong to are listed in
:data:`CHECKERS`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.distance import cdist

from pcnotes.stages import s8_metrics as metrics
from pcnotes.stages.s3_align import align_patches
from pcnotes.stages.s5_coreset import coreset_size
from pcnotes.stages.s4_mean_mapped import aggregate, mean_map
from pcnotes.stages.s2_patches import patchify
from pcnotes.stages.s6_scoring import NearestNeighbours, image_scores, reweighted_image_scores, score_grid

__all__ = [
    "CHECKERS",
    "STUB_PHRASE",
    "check_patchify",
    "check_align",
    "check_mean_mapper",
    "check_aggregator",
    "check_coreset_size",
    "check_greedy_k_center",
    "check_image_score",
    "check_reweighting",
    "check_auroc",
    "check_pro",
    "greedy_k_center",
]

# The learner edition's stubs raise NotImplementedError with this phrase in their
# message (tools/learner.py writes them); a checker lets exactly that error through.
STUB_PHRASE = "write your solution here"


# --------------------------------------------------------------------------
# The reference greedy loop (exercise "greedy k-center", notebook 03)
# --------------------------------------------------------------------------


def greedy_k_center(points: np.ndarray, m: int) -> np.ndarray:
    """Greedy k-center: ``(N, D) -> (m,)`` int64 indices, in the order they were selected."""
    distances = cdist(points, points)  # (N, N) Euclidean, float64
    min_dist = np.linalg.norm(distances, axis=1)  # start: each row's norm, so the most remote point goes first
    selected = []
    for _ in range(m):
        centre = int(np.argmax(min_dist))  # the worst-covered point (ties: the lowest index)
        selected.append(centre)
        min_dist = np.minimum(min_dist, distances[:, centre])  # the new centre covers its neighbours
    return np.array(selected, dtype=np.int64)


# --------------------------------------------------------------------------
# The machinery every checker shares
# --------------------------------------------------------------------------


@dataclass
class _Case:
    """One input to call the learner's function with, the right answer, and the wrong ones.

    ``mistakes`` pairs a message naming a typical mistake with the answer that
    mistake gives on this input; the first one the learner's answer equals wins.
    """

    label: str
    args: tuple
    expected: Any
    mistakes: list[tuple[str, Any]] = field(default_factory=list)


class _Shape(tuple):
    """A mistake recognised by the shape of the answer alone (e.g. one index too many)."""


@dataclass
class _Answer:
    """What the exercise's function must return, to judge type, shape and values."""

    kind: str  # "tensor" | "indices" | "array" | "number" | "int"
    what: str  # e.g. "the patches tensor (B, H*W, C, p, p)"
    reference: str  # the library function the values come from
    covers: str = ""  # the inputs tried, for the success line
    atol: float = 1e-5
    rtol: float = 1e-4


def _to_numpy(value) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, numbers.Number, np.generic, list)):
        try:
            return np.asarray(value)
        except (ValueError, TypeError):
            return None
    return None


def _same(a: np.ndarray, b, expect: _Answer) -> bool:
    if isinstance(b, _Shape):
        return a.shape == tuple(b)
    b = _to_numpy(b)
    if b is None or a.shape != b.shape:
        return False
    if expect.kind in ("indices", "int"):
        return bool(np.array_equal(a, b))
    return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), atol=expect.atol, rtol=expect.rtol))


def _type_problem(answer, expected, expect: _Answer) -> str | None:
    """Right values, wrong container or dtype: what to change."""
    if expect.kind == "tensor":
        if not isinstance(answer, torch.Tensor):
            return f"your values are right but you returned a {type(answer).__name__}; return a torch tensor"
        if answer.dtype != expected.dtype:
            return f"your values are right but the dtype is {answer.dtype}, not the input's {expected.dtype}"
    if expect.kind == "indices":
        if isinstance(answer, torch.Tensor):
            return ("you returned a torch tensor where indices were expected: "
                    "return a numpy array of integers, e.g. np.array(selected)")
        if not isinstance(answer, np.ndarray):
            return (f"you returned a {type(answer).__name__}; "
                    f"return a numpy array of integers, e.g. np.array(selected)")
        if not np.issubdtype(answer.dtype, np.integer):
            return f"your indices have dtype {answer.dtype}; indices are integers (np.int64)"
    if expect.kind == "number" and isinstance(answer, torch.Tensor):
        return "you returned a torch tensor; return a plain number, e.g. float(...)"
    if expect.kind == "int" and (isinstance(answer, bool) or not isinstance(answer, numbers.Integral)):
        return f"you returned {answer!r} ({type(answer).__name__}); return an int, e.g. int(...)"
    return None


def _verdict(answer, case: _Case, expect: _Answer) -> str | None:
    """None when ``answer`` is right, else one sentence (or two) saying what is wrong."""
    if isinstance(answer, tuple):
        return f"you returned a tuple of {len(answer)} items; return only {expect.what}"
    values = _to_numpy(answer)
    if values is None or values.dtype.kind not in "biuf":
        kind = type(answer).__name__ if values is None else f"{type(answer).__name__} of {values.dtype}"
        return f"you returned a {kind}; return {expect.what}"
    if _same(values, case.expected, expect):
        return _type_problem(answer, case.expected, expect)
    for message, wrong in case.mistakes:
        if _same(values, wrong, expect):
            return message
    expected = _to_numpy(case.expected)
    if values.shape != expected.shape:
        return f"your result has shape {tuple(values.shape)}, expected {tuple(expected.shape)}: {expect.what}"
    if values.dtype.kind == "f" and np.isnan(values).any():
        return ("your result contains NaN: a square root of a tiny negative number "
                "(a² - 2ab + b² rounding below 0)? Clamp at 0 first, or use torch.cdist")
    if expected.ndim == 0:
        return f"you returned {values.item():.6g}, {expect.reference} gives {expected.item():.6g}"
    if expect.kind == "indices":
        step = int(np.argmax(values != expected))
        if step == 0:
            return (f"your first pick is point {values[0]}, expected point {expected[0]}: start from the point "
                    f"whose row of the distance matrix has the largest norm")
        return (f"your first {step} picks are right, then you chose point {values[step]} where the point "
                f"farthest from the chosen set is {expected[step]}")
    difference = np.abs(values.astype(np.float64) - expected.astype(np.float64))
    where = np.unravel_index(int(np.argmax(difference)), difference.shape)
    return (f"the shape is right but the values differ from {expect.reference}: "
            f"at index {tuple(int(i) for i in where)} you have {values[where]:.6g}, expected {expected[where]:.6g}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else "(no message)"


def _check(exercise: str, fn: Callable, cases: list[_Case], expect: _Answer) -> bool:
    """Run ``fn`` on every case, print one line, return whether all were right."""
    for case in cases:
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a.copy() if isinstance(a, np.ndarray) else a
                     for a in case.args)  # the learner may change its inputs in place
        try:
            answer = fn(*args)
        except NotImplementedError as error:
            if STUB_PHRASE in str(error):
                raise  # the learner edition's stub: nothing written yet, stop here
            return _say(exercise, False, f"your function raised NotImplementedError: {_first_line(error)} "
                                         f"[on {case.label}]")
        except Exception as error:  # noqa: BLE001 - any learner error becomes one line
            return _say(exercise, False,
                        f"your function raised {type(error).__name__}: {_first_line(error)} [on {case.label}]")
        try:
            problem = _verdict(answer, case, expect)
        except Exception as error:  # noqa: BLE001 - an odd answer must not crash the checker
            problem = (f"your result ({type(answer).__name__}) could not be compared ({type(error).__name__}: "
                       f"{_first_line(error)}); return {expect.what}")
        if problem:
            return _say(exercise, False, f"{problem}. [on {case.label}]")
    return _say(exercise, True, f"correct on all {len(cases)} inputs ({expect.covers}).")


def _say(exercise: str, ok: bool, message: str) -> bool:
    print(f"{'✓' if ok else '✗'} {exercise}: {message}")
    return ok


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------
# Notebook 02: patchify, align, mean mapper, aggregator
# --------------------------------------------------------------------------


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
    return _Case(label, (features, p), patchify(features, p)[0], mistakes)


_PATCHIFY = _Answer("tensor", "the patches tensor (B, H*W, C, p, p), not (patches, grid)",
                    "pcnotes.stages.s2_patches.patchify", covers="random maps, a single image, p=5, p=1 and a 1x1 grid")


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
    mistakes = [
        ("you resized with align_corners=True; PatchCore resizes with align_corners=False, which lines up "
         "the pixel centres instead of the corner pixels", corners),
        ("you resized with nearest neighbours; use mode='bilinear' (align_corners=False)",
         flat(_resize(patches, grid, target, mode="nearest"))),
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
    ]
    return _Case(label, (patches, dim), expected, mistakes)


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
        ("you concatenated the layers (N, L*D) but did not pool them down to dim",
         stacked.reshape(n, -1)),
        ("you took the maximum of each window; the aggregator averages (adaptive_avg_pool1d)",
         F.adaptive_max_pool1d(stacked.reshape(n, 1, -1), dim).reshape(n, -1)),
        ("you kept the pooling axis, (N, 1, dim); reshape to (N, dim)", expected[:, None]),
    ]
    if layers > 1:
        mistakes.append(("you kept only the first layer; flatten all L layers before pooling",
                         pool(stacked[:, 0])))
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


# --------------------------------------------------------------------------
# Notebook 03: the coreset
# --------------------------------------------------------------------------


def _coreset_size_case(num_points: int, ratio: float) -> _Case:
    expected = coreset_size(num_points, ratio)
    exact = int(num_points * ratio)
    mistakes = [  # in this order: the first that equals the answer names it
        (f"you rounded to the nearest integer; PatchCore keeps int(N * ratio), which rounds down "
         f"(N * ratio is {num_points * ratio!r} here)", max(1, round(num_points * ratio))),
        ("you rounded up (math.ceil); PatchCore keeps int(N * ratio), which rounds down",
         max(1, math.ceil(num_points * ratio))),
        ("you keep 0 points when N * ratio < 1; keep at least one: max(1, int(N * ratio))", exact),
        (f"off by one: you keep {expected + 1}, one more than max(1, int(N * ratio)) = {expected}", expected + 1),
        (f"off by one: you keep {expected - 1}, one fewer than max(1, int(N * ratio)) = {expected}", expected - 1),
    ]
    return _Case(f"N={num_points}, ratio={ratio}", (num_points, ratio), expected, mistakes)


_CORESET_SIZE = _Answer("int", "the number of points to keep, an int", "pcnotes.stages.s5_coreset.coreset_size",
                        covers="exact and fractional N*ratio, float rounding, N*ratio < 1, ratio 1")


def check_coreset_size(fn: Callable[[int, float], int]) -> bool:
    """Exercise "coreset size" (notebook 03): how many bank rows a ratio keeps.

    ``fn(num_points: int, ratio: float) -> int``: ``max(1, int(N * ratio))``,
    as the reference code does. Compared with ``pcnotes.stages.s5_coreset.coreset_size``.
    """
    return _check("coreset size", fn, _coreset_size_cases(), _CORESET_SIZE)


def _coreset_size_cases() -> list[_Case]:
    # The order matters: each case is the first to tell one mistake from the right answer.
    cases = [_coreset_size_case(n, r) for n, r in
             [(784, 0.5), (12544, 0.1), (7, 0.5), (1000, 0.29), (50, 0.01), (784, 1.0)]]
    return cases


def _greedy_variant(points: np.ndarray, m: int, *, start: np.ndarray | None = None, first: int | None = None,
                    update=np.minimum, pick=np.argmax) -> np.ndarray:
    """The reference loop with one thing changed, to recognise a typical mistake."""
    distances = cdist(points, points)
    min_dist = np.linalg.norm(distances, axis=1) if start is None else start.astype(np.float64)
    selected = []
    for step in range(m):
        centre = first if step == 0 and first is not None else int(pick(min_dist))
        selected.append(centre)
        min_dist = update(min_dist, distances[:, centre])
    return np.array(selected, dtype=np.int64)


def _greedy_case(label: str, points: np.ndarray, m: int) -> _Case:
    expected = greedy_k_center(points, m)
    distances = cdist(points, points)
    first = int(expected[0])
    mistakes = [
        (f"your first pick is point 0; start from the point whose row of the distance matrix has the largest "
         f"norm, np.linalg.norm(distances, axis=1) (point {first} here)", _greedy_variant(points, m, first=0)),
        (f"you started from the point with the largest norm ||x||; start from the largest norm of its "
         f"distance-matrix row (point {first} here)",
         _greedy_variant(points, m, first=int(np.argmax(np.linalg.norm(points, axis=1))))),
        ("your first pick comes from squared distances; the row norms are those of the Euclidean distance matrix",
         _greedy_variant(points, m, first=int(np.argmax(np.linalg.norm(distances**2, axis=1))))),
        ("the same point wins every time because min_dist never goes down: after each pick, "
         "min_dist = np.minimum(min_dist, distances[:, centre]) (np.maximum, or no update, never lowers it)",
         _greedy_variant(points, m, update=np.maximum)),
        ("np.argmin picks the best-covered point; greedy k-center adds the worst-covered one, np.argmax",
         _greedy_variant(points, m, pick=np.argmin)),
        ("on a tie you pick the later point; np.argmax picks the lowest index, and so should you",
         len(points) - 1 - greedy_k_center(points[::-1], m)),
        ("your indices are sorted; return them in the order they were selected", np.sort(expected)),
        ("you returned the selected points, not their indices: return the (m,) array of row numbers",
         points[expected]),
        (f"you returned {m + 1} indices for m={m}: off by one, loop m times", _Shape((m + 1,))),
        (f"you returned {m - 1} indices for m={m}: off by one, loop m times", _Shape((m - 1,))),
    ]
    return _Case(label, (points, m), expected, mistakes)


_GREEDY_K_CENTER = _Answer("indices", "the (m,) numpy array of selected indices, in selection order",
                           "the reference greedy_k_center",
                           covers="random points, duplicated points, ties, a start that squared distances "
                                  "get wrong, m=1, m=N and a single point")


def check_greedy_k_center(fn: Callable[[np.ndarray, int], np.ndarray]) -> bool:
    """Exercise "greedy k-center" (notebook 03): the coreset loop in numpy.

    ``fn(points: np.ndarray (N, D), m: int) -> np.ndarray (m,)`` integer indices
    in selection order. It starts from the point with the largest norm of its
    row of the N x N Euclidean distance matrix, then adds, m - 1 times, the point
    farthest from the chosen set (ties: the lowest index, as ``np.argmax``).
    Compared with :func:`greedy_k_center`, which picks the same points as
    ``pcnotes.stages.s5_coreset.greedy_coreset(..., projection_dim=None, loop="plain")``.
    """
    return _check("greedy k-center", fn, _greedy_k_center_cases(), _GREEDY_K_CENTER)


def _greedy_k_center_cases() -> list[_Case]:
    rng = np.random.default_rng(4)
    twice = np.repeat(rng.normal(size=(6, 3)), 2, axis=0)  # every point appears twice
    line = np.arange(5.0)[:, None] * np.array([[1.0, 0.0]])  # equal gaps: the ends tie, and so on
    cases = [
        _greedy_case("60 random points in 5-D, m=8", rng.normal(size=(60, 5)), 8),
        _greedy_case("duplicated points (each of 6 twice), m=6", twice[rng.permutation(12)], 6),
        _greedy_case("5 points on a line with equal gaps (ties), m=3", line, 3),
        _greedy_case("5 points in the plane, m=3", np.array([[2.0, 1], [0, 1], [3, 4], [4, 1], [0, 4]]), 3),
        _greedy_case("m=1", rng.normal(size=(20, 4)), 1),
        _greedy_case("m=N, every point", rng.normal(size=(7, 2)), 7),
        _greedy_case("a single point, m=1", rng.normal(size=(1, 3)), 1),
    ]
    return cases


# --------------------------------------------------------------------------
# Notebook 04: scores
# --------------------------------------------------------------------------


def _nearest_and_farthest(features: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = cdist(features.astype(np.float64), bank.astype(np.float64))
    return distances.min(axis=1), distances.max(axis=1)


def _image_score_case(label: str, features: np.ndarray, bank: np.ndarray, batch: int) -> _Case:
    per_image = len(features) // batch
    grid = (1, per_image)
    expected = image_scores(score_grid(NearestNeighbours(bank, backend="torch"), features, batch, grid))
    nearest, farthest = _nearest_and_farthest(features, bank)
    mistakes = [
        ("your scores are squared distances (faiss and the a² - 2ab + b² trick give squared L2); take the "
         "square root: the paper scores a patch by its Euclidean distance", (nearest**2).reshape(batch, -1).max(1)),
        ("you averaged the patch scores; eq. 6 takes each image's largest patch score (max)",
         nearest.reshape(batch, -1).mean(1)),
        ("the patches went to the wrong images: the scores are in image order, so reshape(batch_size, -1), "
         "not reshape(-1, batch_size)", nearest.reshape(-1, batch).max(0)),
        ("you measured the distance to the farthest bank entry; a patch score is the distance to the nearest one",
         farthest.reshape(batch, -1).max(1)),
        ("you returned one score per patch, (B*H*W,); the image score is the max over each image's patches",
         nearest),
        ("you returned one number; return one score per image, an array (batch_size,): reshape the patch "
         "scores to (batch_size, -1) and take the max of each row", np.array(nearest.max())),
    ]
    return _Case(label, (features, bank, batch), expected, mistakes)


def _score_inputs(rng, batch: int, per_image: int, bank_size: int, scale: float = 1.0,
                  dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    bank = rng.normal(scale=scale, size=(bank_size, dim)).astype(np.float32)
    features = rng.normal(scale=1.3 * scale, size=(batch * per_image, dim)).astype(np.float32)
    return features, bank


_IMAGE_SCORE = _Answer("array", "the image scores (B,)", "pcnotes.stages.s6_scoring.image_scores", atol=1e-3, rtol=1e-4,
                       covers="random patches, a single image, a 1x1 grid and a zero distance")


def check_image_score(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> bool:
    """Exercise "kNN patch scores -> image score" (notebook 04), eq. 6.

    ``fn(features: np.ndarray (B*H*W, D), bank: np.ndarray (M, D), batch_size: int) -> (B,)``
    image scores (numpy array or tensor): each patch scores its Euclidean
    distance to the nearest bank entry, each image the largest of its patch
    scores. Compared with ``pcnotes.stages.s6_scoring`` (``score_grid`` then ``image_scores``).
    """
    return _check("image score", fn, _image_score_cases(), _IMAGE_SCORE)


def _image_score_cases() -> list[_Case]:
    rng = np.random.default_rng(5)
    cases = [_image_score_case("3 images of 16 patches, a bank of 40", *_score_inputs(rng, 3, 16, 40), 3),
             _image_score_case("a single image of 9 patches", *_score_inputs(rng, 1, 9, 30), 1),
             _image_score_case("a 1x1 grid: one patch per image, 4 images", *_score_inputs(rng, 4, 1, 25), 4)]
    bank = rng.normal(size=(20, 8)).astype(np.float32)
    on_bank = np.concatenate([bank[:6], rng.normal(scale=1.3, size=(6, 8)).astype(np.float32)])
    cases.append(_image_score_case("an image whose patches are all bank entries (score 0)", on_bank, bank, 2))
    return cases


def _eq7_variant(features: np.ndarray, bank: np.ndarray, batch: int, b: int, *, weight: str = "1-softmax",
                 squared_softmax: bool = False, neighbours_of: str = "m*", include_m_star: bool = False,
                 sign: float = 1.0) -> np.ndarray:
    """Eq. 7 in float64 with one thing changed, to recognise a typical mistake."""
    features, bank = features.astype(np.float64), bank.astype(np.float64)
    to_bank = cdist(bank, bank)
    scores = []
    for patches in features.reshape(batch, -1, bank.shape[1]):
        distances = cdist(patches, bank)
        worst = int(np.argmax(distances.min(axis=1)))
        test_patch, m_star = patches[worst], int(np.argmin(distances[worst]))
        s_star = distances[worst, m_star]
        if neighbours_of == "test patch":
            support = np.argsort(distances[worst], kind="stable")[: b + 1]
        else:
            order = np.argsort(to_bank[m_star], kind="stable")
            around = order[:b] if include_m_star else [j for j in order if j != m_star][:b]
            support = np.array([m_star, *around])
        d = np.linalg.norm(bank[support] - test_patch, axis=1)
        d = sign * (d**2 if squared_softmax else d)
        softmax = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
        factor = {"1-softmax": 1.0 - softmax[0], "softmax": softmax[0], "none": 1.0}[weight]
        scores.append(factor * s_star)
    return np.array(scores)


def _reweighting_case(label: str, features: np.ndarray, bank: np.ndarray, batch: int, b: int) -> _Case:
    expected = reweighted_image_scores(NearestNeighbours(bank, backend="torch"), features, batch, b)
    variant = lambda **changed: _eq7_variant(features, bank, batch, b, **changed)  # noqa: E731
    mistakes = [
        ("you returned s* without its weight; eq. 7 multiplies it by 1 - softmax(d)[m*]", variant(weight="none")),
        ("you multiplied by softmax(d)[m*]; eq. 7's weight is 1 - softmax(d)[m*], the 1 - is missing",
         variant(weight="softmax")),
        ("your softmax runs over squared distances; eq. 7 takes the softmax of the Euclidean distances",
         variant(squared_softmax=True)),
        ("your softmax runs over -d; eq. 7 takes the softmax of +d (a nearby crowd of bank entries lowers the "
         "weight)", variant(sign=-1.0)),
        ("you took the test patch's nearest bank entries; eq. 7 uses N_b(m*), the b nearest neighbours of m* "
         "in the bank", variant(neighbours_of="test patch")),
        ("m* is counted as one of its own b neighbours: search b + 1 neighbours of m* and leave m* out",
         variant(include_m_star=True)),
    ]
    return _Case(f"{label}, b={b}", (features, bank, batch, b), expected, mistakes)


_REWEIGHTING = _Answer("array", "the re-weighted image scores (B,)", "pcnotes.stages.s6_scoring.reweighted_image_scores",
                       atol=1e-3, rtol=1e-3,
                       covers="random patches, b=1, a single image, a 1x1 grid, duplicated bank entries")


def check_reweighting(fn: Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]) -> bool:
    """Exercise "eq. 7 re-weighting" (notebook 04).

    ``fn(features: np.ndarray (B*H*W, D), bank: np.ndarray (M, D), batch_size: int, b: int) -> (B,)``:
    per image, take the most anomalous patch m_test* (score s*, eq. 6) and its
    nearest bank entry m*, then return ``(1 - softmax(d)[m*]) * s*`` where ``d``
    holds the Euclidean distances from m_test* to m* and to m*'s b nearest bank
    neighbours. Compared with ``pcnotes.stages.s6_scoring.reweighted_image_scores``.
    """
    return _check("eq. 7 re-weighting", fn, _reweighting_cases(), _REWEIGHTING)


def _reweighting_cases() -> list[_Case]:
    rng = np.random.default_rng(6)
    cases = [_reweighting_case("2 images of 9 patches, a bank of 30",
                               *_score_inputs(rng, 2, 9, 30, scale=0.3), 2, 3),
             _reweighting_case("a single image", *_score_inputs(rng, 1, 6, 20), 1, 1),
             _reweighting_case("a 1x1 grid: one patch per image, 3 images", *_score_inputs(rng, 3, 1, 20), 3, 2)]
    features, bank = _score_inputs(rng, 2, 4, 10)
    cases.append(_reweighting_case("duplicated bank entries", features, np.concatenate([bank, bank[:5]]), 2, 2))
    return cases


# --------------------------------------------------------------------------
# Notebook 05: metrics
# --------------------------------------------------------------------------


def _pair_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int, int, int]:
    """(wins, ties, defective, good): pairs where the defective image scores higher / the same."""
    bad, good = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    difference = bad[:, None] - good[None, :]
    return int((difference > 0).sum()), int((difference == 0).sum()), len(bad), len(good)


def _auroc_case(label: str, labels: np.ndarray, scores: np.ndarray) -> _Case:
    wins, ties, n_bad, n_good = _pair_counts(labels, scores)
    n = len(labels)
    pairs = n_bad * n_good
    mistakes = [
        ("ties counted as 0; a tie between a defective and a good image counts 1/2", wins / pairs),
        ("ties counted as 1; a tie between a defective and a good image counts 1/2", (wins + ties) / pairs),
        ("you counted the pairs where the good image scores higher (labels swapped); count defective > good",
         1 - (wins + 0.5 * ties) / pairs),
        (f"wrong denominator: divide by n_defective * n_good = {pairs} pairs, not N * N",
         (wins + 0.5 * ties) / (n * n)),
        (f"wrong denominator: divide by n_defective * n_good = {pairs} pairs, not N * (N - 1) / 2",
         (wins + 0.5 * ties) / (n * (n - 1) / 2)),
    ]
    return _Case(label, (labels, scores), metrics.image_auroc(labels, scores), mistakes)


_AUROC = _Answer("number", "the AUROC, a float", "pcnotes.stages.s8_metrics.image_auroc", atol=1e-9, rtol=1e-9,
                 covers="no ties, ties, all equal, perfect separation, one defective image, boolean labels")


def check_auroc(fn: Callable[[np.ndarray, np.ndarray], float]) -> bool:
    """Exercise "AUROC by counting pairs" (notebook 05).

    ``fn(labels: np.ndarray (N,) of 0/1 (1 = defective), scores: np.ndarray (N,)) -> float``:
    the fraction of (defective, good) pairs in which the defective image scores
    higher, a tie counting 1/2. Compared with ``pcnotes.stages.s8_metrics.image_auroc``.
    """
    return _check("AUROC", fn, _auroc_cases(), _AUROC)


def _auroc_cases() -> list[_Case]:
    rng = np.random.default_rng(7)
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    cases = [
        _auroc_case("8 images, no ties", labels, rng.normal(size=8) + labels),
        _auroc_case("ties between good and defective images", labels,
                    np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.2, 0.3, 0.3])),
        _auroc_case("every score equal", labels, np.full(8, 0.7)),
        _auroc_case("perfect separation", labels, labels * 2.0 + rng.uniform(size=8)),
        _auroc_case("a single defective image among 5", np.array([0, 0, 1, 0, 0]),
                    np.array([0.3, 0.8, 0.6, 0.1, 0.6])),
        _auroc_case("boolean labels", labels.astype(bool), rng.normal(size=8)),
    ]
    return cases


def _pro_at(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    """PRO(t) read off the library's exact curve: its points run over the distinct map values, high to low."""
    _, pro = metrics.pro_curve(masks, maps)
    at_or_above = int((np.unique(maps) >= threshold).sum())  # point 0 is the threshold above every value
    return float(pro[at_or_above])


def _overlaps(labeled: np.ndarray, detected: np.ndarray, regions) -> list[float]:
    return [float(detected[labeled == r].mean()) for r in regions]


def _pro_case(label: str, masks: np.ndarray, maps: np.ndarray, threshold: float) -> _Case:
    masks = masks.astype(bool)
    detected = maps >= threshold
    four_connected = np.stack([ndimage.label(mask)[0] + 1000 * i for i, mask in enumerate(masks)]) * masks
    three_d, count_3d = ndimage.label(masks)  # 3-D: joins regions of neighbouring images
    eight, count = metrics.label_regions(masks)
    per_image = [np.mean(_overlaps(eight[i], detected[i], np.unique(eight[i][eight[i] > 0])))
                 for i in range(len(masks)) if masks[i].any()]
    mistakes = [
        ("your regions are 4-connected; MVTec's PRO joins pixels that touch at a corner too "
         "(8-connectivity: ndimage.label(mask, structure=np.ones((3, 3))))",
         np.mean(_overlaps(four_connected, detected, np.unique(four_connected[four_connected > 0])))),
        ("you labelled the (N, H, W) stack as one 3-D volume, which joins regions of neighbouring images at the "
         "same place; label each image on its own", np.mean(_overlaps(three_d, detected, range(1, count_3d + 1)))),
        ("you pooled all defect pixels (that is pixel recall); PRO averages the overlap per region, so a "
         "1-pixel defect counts as much as a large one", float(detected[masks].mean())),
        ("you counted pixels with map > t; a region's overlap counts the pixels with map >= t",
         np.mean(_overlaps(eight, maps > threshold, range(1, count + 1)))),
        ("you counted the background (label 0) as a region; average over the defect regions only",
         np.mean(_overlaps(eight, detected, range(0, count + 1)))),
        ("you averaged per image; PRO averages over all regions of all images, each region once",
         float(np.mean(per_image))),
    ]
    return _Case(label, (masks, maps, threshold), _pro_at(masks, maps, threshold), mistakes)


_PRO = _Answer("number", "PRO(t), a float", "pcnotes.stages.s8_metrics.pro_curve", atol=1e-9, rtol=1e-9,
               covers="regions of 1 to 12 pixels, corner contact, two images, ties at the threshold, a single image")


def check_pro(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> bool:
    """Exercise "the PRO of one threshold" (notebook 05).

    ``fn(masks: np.ndarray (N, H, W) bool, maps: np.ndarray (N, H, W), threshold: float) -> float``:
    the mean, over every 8-connected defect region of every image, of the
    fraction of the region's pixels whose map value is ``>= threshold``.
    Compared with ``pcnotes.stages.s8_metrics.pro_curve`` at that threshold.
    """
    return _check("PRO", fn, _pro_cases(), _PRO)


def _pro_cases() -> list[_Case]:
    rng = np.random.default_rng(8)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True  # 9 pixels
    masks[0, 6, 6] = True  # a 1-pixel defect
    masks[1, 1:5, 5:8] = True  # 12 pixels, not touching the others even across the two images
    maps = rng.uniform(size=masks.shape) + 0.6 * masks
    corner = np.zeros((1, 6, 6), dtype=bool)
    corner[0, 1:3, 1:3] = True
    corner[0, 3, 3] = True  # touches the 2x2 block at a corner only
    corner_map = np.where(corner, 0.9, 0.1)
    corner_map[0, 3, 3] = 0.2
    stacked = np.zeros((2, 5, 5), dtype=bool)
    stacked[0, 1:4, 1:4] = True  # 9 pixels, all found
    stacked[1, 1:3, 1:3] = True  # 4 pixels at the same place in the next image, one found
    stacked_map = np.where(stacked, 0.3, 0.1)
    stacked_map[0][stacked[0]] = 0.8
    stacked_map[1, 1, 1] = 0.8
    cases = [
        _pro_case("2 images, 3 regions (one of 1 pixel)", masks, maps, 0.9),
        _pro_case("a region that touches itself at a corner", corner, corner_map, 0.5),
        _pro_case("regions at the same place in two images", stacked, stacked_map, 0.5),
        _pro_case("a threshold equal to map values (>=)", corner, corner_map, 0.2),
        _pro_case("a threshold above every value", masks, maps, 2.0),
        _pro_case("a single image", masks[1:], maps[1:], 0.8),
    ]
    return cases


# --------------------------------------------------------------------------
# The list of exercises
# --------------------------------------------------------------------------

#: exercise name -> (checker, the core notebook it belongs to)
CHECKERS: dict[str, tuple[Callable[[Callable], bool], str]] = {
    "patchify": (check_patchify, "02_locally_aware_patches"),
    "align": (check_align, "02_locally_aware_patches"),
    "mean mapper": (check_mean_mapper, "02_locally_aware_patches"),
    "aggregator": (check_aggregator, "02_locally_aware_patches"),
    "coreset size": (check_coreset_size, "03_coreset"),
    "greedy k-center": (check_greedy_k_center, "03_coreset"),
    "image score": (check_image_score, "04_scoring_and_heatmaps"),
    "eq. 7 re-weighting": (check_reweighting, "04_scoring_and_heatmaps"),
    "AUROC": (check_auroc, "05_evaluation"),
    "PRO": (check_pro, "05_evaluation"),
}
