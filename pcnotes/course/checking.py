"""Checkers for the course's exercises: the learner writes a stage, pcnotes checks it.

Each ``check_NAME(fn)`` calls the learner's function ``fn`` on a few inputs
(random ones, then edge cases such as a 1x1 grid, a single image, ties and
duplicated points), compares every result with the library, prints **one
line** and returns True or False::

    >>> from pcnotes import course
    >>> course.check_patchify(my_patchify)          # doctest: +SKIP
    ✓ patchify: correct on all 5 inputs (...).

A wrong answer is never an exception. The checker also computes the answers
that the typical mistakes give (the missing or reflected padding, the wrong
permute, ``align_corners=True`` or bicubic, a fixed pooling window, squared,
cosine or L1 distances, the mean of the top k patch scores, another eq. 7
convention, ties counted as 0, ...) on inputs large enough to tell them apart
(images of 64 patches and more, so that a top-10 % mean is not the max). When
the learner's result equals one of them, the line names that mistake and says
how to fix it. A greedy loop that picks a point it already chose is told so.
Otherwise the line says where the result differs. An exception raised by
the learner's function is reported in one line with its type and message.
The learner edition's stub (``NotImplementedError("... write your solution
here ...")``) is reported as "not done yet", so that "Run all" reaches the
end of a notebook with the library's stage in its place
(:func:`pcnotes.course.adopt`).

This module holds what every checker shares; the checkers themselves live in one
module per notebook (``nb02_patches`` to ``nb05_evaluation``), and
:data:`pcnotes.course.CHECKERS` lists them with their notebooks.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


# The learner edition's stubs raise NotImplementedError with this phrase in their
# message (tools/learner.py writes them); a checker lets exactly that error through.
STUB_PHRASE = "write your solution here"


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
    tuple_hint: str = ""  # added to the message for a tuple, e.g. "not (patches, grid)"


def _attempt(compute: Callable[[], Any]) -> Any:
    """The answer a mistake gives on one input, or None where that mistake cannot run on it.

    Some mistakes fail on an edge case (reflect padding of a 1x1 grid, a reshape
    that does not divide): there the learner's function would have raised, and
    the checker reports that error instead.
    """
    try:
        return compute()
    except Exception:  # noqa: BLE001 - a mistake that cannot run here names nothing here
        return None


def _repick(values: np.ndarray, step: int) -> str | None:
    """The message for a greedy loop whose first wrong pick (at ``step``) is a point it already chose."""
    if values.ndim != 1 or not 0 <= step < len(values):
        return None
    earlier = np.flatnonzero(values[:step] == values[step])
    if not len(earlier):
        return None
    return (f"point {values[step]} was already chosen at step {earlier[0] + 1}, and your step {step + 1} picks it "
            f"again: after each pick, fold the new centre's distances into min_dist, "
            f"min_dist = np.minimum(min_dist, distances[:, centre]), so that a chosen point's entry drops to 0")


def _first_difference(values: np.ndarray, expected: np.ndarray) -> int:
    """Where two 1-D index arrays of the same length first differ (their length where they do not)."""
    differ = np.flatnonzero(values != expected)
    return int(differ[0]) if len(differ) else len(values)


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
        hint = f", {expect.tuple_hint}" if expect.tuple_hint else ""
        return f"you returned a tuple of {len(answer)} items; return only {expect.what}{hint}"
    values = _to_numpy(answer)
    if values is None or values.dtype.kind not in "biuf":
        kind = type(answer).__name__ if values is None else f"{type(answer).__name__} of {values.dtype}"
        return f"you returned a {kind}; return {expect.what}"
    if _same(values, case.expected, expect):
        return _type_problem(answer, case.expected, expect)
    for message, wrong in case.mistakes:
        if wrong is not None and _same(values, wrong, expect):
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
        step = _first_difference(values, expected)
        repicked = _repick(values, step)
        if repicked:
            return repicked
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
            if STUB_PHRASE in str(error):  # the learner edition's stub: the notebook goes on
                return _say(exercise, False, "not done yet: write your solution in place of the "
                                             "`raise NotImplementedError` line above, then run this check again")
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
