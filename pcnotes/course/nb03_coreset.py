"""Checkers for notebook 03 (stage 5): the coreset size and greedy k-center."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

from pcnotes.course.checking import _Case, _Shape, _Answer, _check, _first_difference, _repick
from pcnotes.stages.s5_coreset import coreset_size, greedy_k_center


def _coreset_size_case(num_points: int, ratio: float) -> _Case:
    expected = coreset_size(num_points, ratio)
    exact = int(num_points * ratio)
    mistakes = [  # in this order: the first that equals the answer names it
        (f"you rounded to the nearest integer; PatchCore keeps int(N * ratio), which rounds down "
         f"(N * ratio is {num_points * ratio!r} here)", max(1, round(num_points * ratio))),
        ("you rounded up (math.ceil); PatchCore keeps int(N * ratio), which rounds down",
         max(1, math.ceil(num_points * ratio))),
        ("you keep 0 points when N * ratio < 1; keep at least one: max(1, int(N * ratio))", exact),
    ]
    for whole, how in [(round(1 / ratio), "round(1 / ratio)"), (int(1 / ratio), "int(1 / ratio)")]:
        for kept in (num_points // whole, max(1, num_points // whole)):
            mistakes.append((
                f"you divided N by {how} = {whole}: that is N * ratio only when 1 / ratio is a whole number "
                f"(1 / {ratio!r} is {1 / ratio:.6g}); multiply instead, max(1, int(N * ratio))", kept))
    for how, value in [("N // (1 / ratio)", num_points // (1 / ratio)), ("N / (1 / ratio)", num_points / (1 / ratio))]:
        for kept in (int(value), max(1, int(value))):
            mistakes.append((
                f"you divided N by 1 / ratio: 1 / {ratio!r} is rounded in floating point, and {how} is {value!r} "
                f"here; multiply instead, max(1, int(N * ratio)) = {expected}", kept))
    dropped = int(num_points * (1 - ratio))
    for kept in (dropped, max(1, dropped)):
        mistakes.append((f"you kept int(N * (1 - ratio)) = {dropped}; the ratio is the fraction of the points a "
                         f"coreset keeps: max(1, int(N * ratio)) = {expected}", kept))
    mistakes += [  # last: an answer off by one for a reason named above gets that reason
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


def _replaced_message(replaced: np.ndarray, expected: np.ndarray) -> str:
    """min_dist = distances[:, centre]: the running minimum forgets every pick but the last."""
    repicked = _repick(replaced, _first_difference(replaced, expected))
    return repicked or ("min_dist = distances[:, centre] forgets every pick but the last: fold the new centre's "
                        "distances into min_dist, min_dist = np.minimum(min_dist, distances[:, centre])")


def _greedy_case(label: str, points: np.ndarray, m: int) -> _Case:
    expected = greedy_k_center(points, m)
    distances = cdist(points, points)
    first = int(expected[0])
    replaced = _greedy_variant(points, m, update=lambda old, new: new)  # min_dist = distances[:, centre]
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
        (f"your first pick is the most central point, the smallest row norm (np.argmin); start from the most "
         f"remote one, the largest norm of its distance-matrix row, np.argmax (point {first} here)",
         _greedy_variant(points, m, first=int(np.argmin(np.linalg.norm(distances, axis=1))))),
        ("you picked the points in the order of their row norms: min_dist never learns about the chosen "
         "points. After each pick, min_dist = np.minimum(min_dist, distances[:, centre])",
         np.argsort(-np.linalg.norm(distances, axis=1), kind="stable")[:m]),
        (_replaced_message(replaced, expected), replaced),
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
