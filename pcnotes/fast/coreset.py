"""The fast exact greedy loop behind ``loop="fast"`` of :mod:`pcnotes.stages.s5_coreset`.

:func:`pcnotes.stages.s5_coreset.greedy_k_center` states greedy k-center as the paper
does: every step, the distance from the new centre to every point.  This
module selects the same points with far less work.  Read that loop first;
nothing here is needed to understand PatchCore.

1. The arithmetic contract
--------------------------
A loop that skips work can only promise the *same indices* if the distances
it does compute are bit for bit those of a loop that computes all of them.
So both follow one contract:

* the points are first centred and rotated into their principal axes
  (:func:`rotate_to_principal_axes`; no distance changes, but the first
  coordinates now carry most of every distance, which the pruning uses);
* a key is a float32 **squared** distance (sqrt is monotone), summed in a
  fixed order: the dimensions (zero-padded to a multiple of 8) are split
  into 8 interleaved lanes, lane ``l`` adds ``(x_k - c_k)^2`` for
  ``k = l, l + 8, ...`` in that order, and the 8 lane sums are folded in
  halves, ``(a0+a4, a1+a5, a2+a6, a3+a7)`` and so on.  Every operation is an
  ordinary rounded elementwise one, so numpy, torch and an LLVM vector
  register all give the same bits, with no fast-math;
* a selected point's key becomes ``-1``, so it is never chosen again;
  ``argmax`` ties go to the lowest index.

:func:`lane_loop` is that contract written as a plain numpy loop, and
:func:`torch_lane_loop` is its twin for a GPU.  :func:`fast_loop` returns
exactly the indices of :func:`lane_loop` on any input, ties included
(tests/test_coreset.py checks this on random points, integer grids full of
exact ties, duplicates, tiny and huge scales, and with every way
forced).

What "identical to the plain loop" means.  ``loop="plain"``
(:func:`pcnotes.stages.s5_coreset.greedy_k_center`) computes float64 distances in the
original coordinates.  Both loops pick the farthest point at each step, so
they agree step for step unless two candidates are so close to tied that
float32 rounding in the rotated axes orders them differently from float64
(a relative gap below about 1e-6); after the first such step the runs
differ.  Exact ties between *different* points in the input (an integer
grid) are such near-ties once rotated.  On the features of the tests,
notebooks and benchmarks the two agree at every position.

2. Three ways to run a step
---------------------------
*The flat pass* (:func:`_flat_steps_threaded`) visits every point, like the
plain loop, split into one part per thread.  It first sums the squared
differences over the first 64 coordinates only, from a dense copy of them:
a sum of non-negative terms never shrinks as terms are added, and rounded
addition is monotone, so if that partial sum already reaches a point's key
the full distance cannot be smaller and the point is skipped (no error
margin needed).  In principal axes the first 64 coordinates hold most of
every distance, so only a few percent of the points get their exact
distance.  The pass is branch-free where the outcome is unpredictable, and
costs nearly the same at every step: one streaming read of the copy.

*flat32* is the flat pass with a narrower first test: the first 32
coordinates, from a denser copy (half the bytes to stream), and the first 64
only for the points that test did not skip, which are read one by one
(scattered reads, so each costs far more than a streamed one).  It wins once
the keys are small enough that the first 32 coordinates skip nearly every
point (on the embedded data and on brick, most of the run); where they skip
only most (grass), the scattered reads cost more than the saved half.

*The pruning walk* (:func:`_prune_steps`) does not visit most points.  It
keeps the points grouped by the centre that last lowered their key (the
*cluster* of that centre), each cluster sorted by key, largest first.  By
the triangle inequality, if ``d(c, c_s) >= 2 d(x, c_s)`` then
``d(x, c) >= d(x, c_s)``: the new centre ``c`` cannot lower the key of a
point ``x`` of cluster ``s``.  That holds for a whole cluster when it holds
for its largest key, and otherwise for a tail of it, so whole clusters and
tails are skipped after one centre-to-centre distance.  Late in a run on
well-clustered features it touches a few percent of the points per step;
on features of high intrinsic dimension (photographs of grass) the test
rarely succeeds, and the walk costs more than the flat pass.

3. Choosing, from what is observed
----------------------------------
Which one is faster depends on the features and on the step, so the loop
measures it (:class:`_Chooser`): it runs chunks of steps with the way that
was fastest per step, and now and then a short *trial* of another; a trial
takes over when it is clearly faster, and losing trials are spaced out so
that they cost at most about 2 % of the run each.  All three keep the same
per-point keys, so switching is cheap (the walk re-files only the points
that a flat pass moved).  The choice changes
only the speed, never an index.

Threads follow one rule: the flat pass of a bank of at least
``_PARALLEL_MIN_POINTS`` points is split over all of numba's threads
(``numba.set_num_threads`` or ``NUMBA_NUM_THREADS`` sets how many), and the
walk runs on one.  benchmarks/results/coreset.md has the timings.
"""

from __future__ import annotations

import math
import time

from pcnotes.util.folders import use_writable_numba_cache

use_writable_numba_cache()  # before numba is imported: it reads NUMBA_CACHE_DIR once

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from llvmlite import ir as llvm_ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

__all__ = [
    "LANES",
    "WAYS",
    "pad_to_lanes",
    "lane_squared_distances",
    "torch_lane_squared_distances",
    "rotate_to_principal_axes",
    "lane_loop",
    "torch_lane_loop",
    "fast_loop",
    "select",
]

LANES = 8
SELECTED = -1.0  # the key of a selected point: below every squared distance
WAYS = ("auto", "flat", "flat32", "prune", "brute")  # "brute": the flat pass without its bound, for comparisons


# --------------------------------------------------------------------------
# 1. The contract, in numpy and torch
# --------------------------------------------------------------------------


def pad_to_lanes(points: np.ndarray) -> np.ndarray:
    """``(N, d) -> (N, ceil(d / 8) * 8)`` C-contiguous float32, zero-padded (padded terms add 0)."""
    n, d = points.shape
    padded_dim = -(-d // LANES) * LANES
    if padded_dim == d:
        return np.ascontiguousarray(points, dtype=np.float32)
    out = np.zeros((n, padded_dim), dtype=np.float32)
    out[:, :d] = points
    return out


def lane_squared_distances(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``(N, d), (d,) -> (N,)`` float32 squared distances in the lane order (d a multiple of 8)."""
    diff = points - centre
    squares = (diff * diff).reshape(len(points), -1, LANES)  # (N, d/8, 8)
    lane_sums = squares[:, 0, :].copy()
    for block in range(1, squares.shape[1]):  # left to right within each lane
        lane_sums += squares[:, block, :]
    while lane_sums.shape[1] > 1:  # fold 8 -> 4 -> 2 -> 1
        half = lane_sums.shape[1] // 2
        lane_sums = lane_sums[:, :half] + lane_sums[:, half:]
    return lane_sums[:, 0]


def torch_lane_squared_distances(points: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Same as :func:`lane_squared_distances`, in torch (any device)."""
    diff = points - centre
    squares = (diff * diff).view(points.shape[0], -1, LANES)
    lane_sums = squares[:, 0, :].clone()
    for block in range(1, squares.shape[1]):
        lane_sums += squares[:, block, :]
    while lane_sums.shape[1] > 1:
        half = lane_sums.shape[1] // 2
        lane_sums = lane_sums[:, :half] + lane_sums[:, half:]
    return lane_sums[:, 0]


def rotate_to_principal_axes(points: torch.Tensor, sample_size: int = 8192) -> torch.Tensor:
    """``(N, d) -> (N, d)``: the points centred and expressed in their principal axes, largest variance first.

    A translation plus a rotation changes no distance (up to float32
    rounding).  The axes come from an evenly spaced sample of at most
    ``sample_size`` points (a float64 eigendecomposition of a d x d matrix):
    any orthonormal basis keeps every distance, so they only need to be good.
    """
    mean = points.mean(dim=0)
    sample = points[:: max(1, len(points) // sample_size)] - mean
    _, axes = torch.linalg.eigh((sample.T @ sample).double())  # eigenvalues ascending
    axes = axes.flip(dims=(1,)).to(points.dtype).contiguous()
    return torch.addmm(-(mean @ axes), points, axes)  # (points - mean) @ axes


def lane_loop(points: np.ndarray, keys: np.ndarray, num_select: int, progress_bar=None) -> np.ndarray:
    """Greedy k-center under the contract: the loop :func:`fast_loop` must equal.

    ``points``: ``(N, d)`` float32, d a multiple of 8; ``keys``: ``(N,)``
    float32 starting squared distances.  Returns ``(num_select,)`` int64.
    """
    keys = keys.copy()
    selected = np.empty(num_select, dtype=np.int64)
    for t in range(num_select):
        centre = int(np.argmax(keys))  # ties -> lowest index
        selected[t] = centre
        keys[centre] = SELECTED
        np.minimum(keys, lane_squared_distances(points, points[centre]), out=keys)
        if progress_bar is not None:
            progress_bar.update(1)
    return selected


def torch_lane_loop(points: torch.Tensor, keys: torch.Tensor, num_select: int, progress_bar=None) -> np.ndarray:
    """:func:`lane_loop` in torch on ``points.device``, with no host synchronisation inside the loop.

    The chosen index stays a 0-d device tensor (no ``.item()``, which would
    make the host wait for a GPU every step); the indices are copied to the
    host once, at the end.  ``torch.argmax`` returns the first maximum.
    """
    keys = keys.clone()
    selected = torch.empty(num_select, dtype=torch.int64, device=points.device)
    with torch.no_grad():
        for t in range(num_select):
            centre = torch.argmax(keys).view(1)
            selected[t : t + 1] = centre
            keys.index_fill_(0, centre, SELECTED)
            torch.minimum(keys, torch_lane_squared_distances(points, points.index_select(0, centre)), out=keys)
            if progress_bar is not None:
                progress_bar.update(1)  # counts queued steps on a GPU
    return selected.cpu().numpy()


# --------------------------------------------------------------------------
# 2. Two compiled primitives: the lane sum of one row, and a prefetch hint
# --------------------------------------------------------------------------


def _is_float32_array(value, ndim: int) -> bool:
    return isinstance(value, types.Array) and value.dtype == types.float32 and value.ndim == ndim and value.layout == "C"


def _emit_lane_sum(context, builder, sig, args):
    """LLVM code for the lane sum of ``points[row]`` and ``centre`` over ``num_blocks`` blocks.

    One 8-float register holds the lane sums; each block is subtracted,
    squared and added to it (separate multiply and add: a fused
    multiply-add would round differently), and the register is folded in
    halves.
    """
    points_struct = context.make_array(sig.args[0])(context, builder, args[0])
    centre_struct = context.make_array(sig.args[2])(context, builder, args[2])
    row_index = context.cast(builder, args[1], sig.args[1], types.intp)
    count = context.cast(builder, args[3], sig.args[3], types.intp)
    dim = builder.extract_value(points_struct.shape, 1)
    row_start = builder.gep(points_struct.data, [builder.mul(row_index, dim)])
    vector = llvm_ir.VectorType(llvm_ir.FloatType(), LANES)
    lane_sums = cgutils.alloca_once_value(builder, llvm_ir.Constant(vector, [0.0] * LANES))
    int32 = llvm_ir.IntType(32)

    def add_blocks(first, last):  # blocks first .. last - 1
        with cgutils.for_range_slice(builder, first, last, llvm_ir.Constant(count.type, 1)) as (block, _):
            offset = builder.mul(block, llvm_ir.Constant(block.type, LANES))
            x = builder.load(builder.bitcast(builder.gep(row_start, [offset]), vector.as_pointer()), align=4)
            c = builder.load(builder.bitcast(builder.gep(centre_struct.data, [offset]), vector.as_pointer()), align=4)
            diff = builder.fsub(x, c)
            builder.store(builder.fadd(builder.load(lane_sums), builder.fmul(diff, diff)), lane_sums)

    def fold():
        value = builder.load(lane_sums)
        for width in (4, 2, 1):  # v[:width] + v[width:2 * width]
            mask_type = llvm_ir.VectorType(int32, width)
            low = builder.shuffle_vector(value, value, llvm_ir.Constant(mask_type, list(range(width))))
            high = builder.shuffle_vector(value, value, llvm_ir.Constant(mask_type, list(range(width, 2 * width))))
            value = builder.fadd(low, high)
        return builder.extract_element(value, int32(0))

    add_blocks(llvm_ir.Constant(count.type, 0), count)
    return fold()


def _lane_sum_types(points, row, centre, num_blocks) -> bool:
    return (
        _is_float32_array(points, 2) and _is_float32_array(centre, 1)
        and isinstance(row, types.Integer) and isinstance(num_blocks, types.Integer)
    )  # fmt: skip


@intrinsic
def _lane_sum(typingctx, points, row, centre, num_blocks):
    """``q(points[row], centre)`` over the first ``num_blocks`` blocks of 8 coordinates, float32.

    ``points``: ``(n, d)`` C-contiguous float32; ``centre``: ``(d,)``.  The
    contract's arithmetic as LLVM vector instructions (:func:`_emit_lane_sum`).
    LLVM does not vectorise the equivalent numba loop by itself without
    fast-math, which may reorder the sum.
    """
    if not _lane_sum_types(points, row, centre, num_blocks):
        return None
    return types.float32(points, row, centre, num_blocks), _emit_lane_sum


@intrinsic
def _prefetch_row(typingctx, points, row):
    """Ask the CPU to start loading ``points[row]`` into the cache (a hint; no effect on results)."""
    if not (_is_float32_array(points, 2) and isinstance(row, types.Integer)):
        return None
    signature = types.void(points, row)

    def codegen(context, builder, sig, args):
        points_struct = context.make_array(sig.args[0])(context, builder, args[0])
        row_index = context.cast(builder, args[1], sig.args[1], types.intp)
        dim = builder.extract_value(points_struct.shape, 1)
        row_start = builder.gep(points_struct.data, [builder.mul(row_index, dim)])
        byte_pointer = llvm_ir.IntType(8).as_pointer()
        int32 = llvm_ir.IntType(32)
        prefetch_type = llvm_ir.FunctionType(llvm_ir.VoidType(), [byte_pointer, int32, int32, int32])
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], prefetch_type)
        floats_per_line = llvm_ir.Constant(dim.type, 16)  # 64-byte cache lines
        with cgutils.for_range_slice(builder, llvm_ir.Constant(dim.type, 0), dim, floats_per_line) as (offset, _):
            address = builder.bitcast(builder.gep(row_start, [offset]), byte_pointer)
            builder.call(prefetch, [address, int32(0), int32(3), int32(1)])  # read, all cache levels, data
        return context.get_dummy_value()

    return signature, codegen


# --------------------------------------------------------------------------
# 3. The state both ways share
# --------------------------------------------------------------------------
#
# Per point (index order): ``keys`` (the contract's key; -1 once selected),
# ``owner`` (0 while the key is the starting value, 1 + t once the t-th
# centre set it), ``heads`` (the first 64 coordinates, a dense copy), and
# for the walk ``row_of`` / ``filed_slot`` (where the walk keeps it, -1 if
# nowhere) and ``dirty`` (the flat pass changed it since the walk filed it).
#
# The walk's own arrays.  Every point not yet selected belongs to one
# *slot*: slot 0 holds the points with their starting key, slot 1 + t the
# cluster of the t-th centre.  A slot's points are consecutive *rows*
# seg_start .. seg_start + seg_size - 1 of the row arrays (head, key, index,
# alive), sorted by decreasing key (ties: increasing index).  A point that
# leaves a slot is only marked dead there, which keeps the order; a slot is
# squeezed when it holds more dead rows than live ones, and all slots are
# compacted when the row arrays (room for 2 N rows) are full.  So a slot's
# first row holds its largest key (seg_max, seg_arg); seg_skip_at is the
# centre-to-centre squared distance from which the whole slot is skipped.
#
# Invariant: a live point x in the cluster of c has key(x) == q(x, c).

_FLAT_BLOCKS = 8  # the flat pass's test: the first 8 * 8 = 64 coordinates ...
_FLAT32_BLOCKS = 4  # ... which flat32 tests only where the first 32 did not already decide
_HEAD_BLOCKS = 4  # the walk keeps the first 32 in its rows ...
_FIRST_BLOCKS = 2  # ... and tests the first 16 first
_KEY_FLOOR = np.float32(2.0**-64)
_KEY_CEIL = np.float32(2.0**100)
_NOT_A_POINT = np.iinfo(np.int64).max  # seg_arg of a slot without any point
_PARALLEL_MIN_POINTS = 16384  # a flat step over this many points takes ~50 us; a thread hand-off ~1
_CHUNK_STEPS = 64  # steps between progress-bar updates and choices of way
_TRIAL_STEPS = 8


def _pruning_slack(padded_dim: int) -> float:
    """Safety factor on the triangle inequality that absorbs float32 rounding (proof in _prune_steps)."""
    return 1.0 + 8.0 * (padded_dim + 3) * 2.0**-24


# --------------------------------------------------------------------------
# 4. The flat pass
# --------------------------------------------------------------------------


@numba.njit(cache=True)
def _argmax(keys):
    """np.argmax: the first index of the largest key."""
    return np.argmax(keys)


@numba.njit(cache=True)
def _take_centre(points, point_state, centres, centres32, selected, t, best):
    """Point ``best`` becomes the t-th centre: its key is retired, its coordinates copied."""
    selected[t] = best
    point_state[1][best] = SELECTED
    point_state[5][best] = True  # dirty
    centres[t, :] = points[best]
    centres32[:, t] = point_state[0][best, : centres32.shape[0]]


@numba.njit(cache=True)
def _flat_part(points, first, heads, point_state, centre, slot, low, high, scratch):
    """Offer ``centre`` to the points ``low .. high - 1``; returns (largest key, its index, exact distances).

    A pass over ``first`` (the heads, or flat32's first 32 coordinates)
    lists in ``scratch[low:]`` the points whose sum over its coordinates is
    below their key; if ``heads`` is wider, they are tested again on its
    coordinates; only those that pass get the exact distance, and a point
    whose key drops gets ``slot`` as its owner.  The largest key goes to the
    lowest index, as in np.argmax.  The first pass is the hot loop: the
    running maximum uses selects, not branches (its outcome is
    unpredictable), while a listed point is written behind a branch, since
    few points are listed and a write per point costs more than the rare
    mispredicted branch (measured: up to a third of the pass).
    """
    keys, owner, dirty = point_state[1], point_state[2], point_state[5]
    blocks = points.shape[1] // LANES
    first_blocks, head_blocks = first.shape[1] // LANES, heads.shape[1] // LANES
    top, top_index = np.float32(-np.inf), _NOT_A_POINT
    count = low
    for i in range(low, high):  # the lower bound; the keys that stay count for the maximum
        key = keys[i]
        survives = _lane_sum(first, i, centre, first_blocks) < key
        if survives:
            scratch[count] = i
            count += 1
        stays = np.float32(-np.inf) if survives else key  # (selects, not branches)
        larger = stays > top
        top = stays if larger else top
        top_index = i if larger else top_index
    if head_blocks > first_blocks:  # the survivors, tested again on more coordinates
        kept = low
        for j in range(low, count):
            if j + 8 < count:
                _prefetch_row(heads, scratch[j + 8])  # scattered rows: start loading a later one
            i = scratch[j]
            key = keys[i]
            survives = _lane_sum(heads, i, centre, head_blocks) < key
            scratch[kept] = i
            kept += survives
            if not survives and (key > top or (key == top and i < top_index)):
                top, top_index = key, i
        count = kept
    for j in range(low, count):  # the exact distances
        if j + 8 < count:
            _prefetch_row(points, scratch[j + 8])
        i = scratch[j]
        key = keys[i]
        distance = _lane_sum(points, i, centre, blocks)
        if distance < key:
            key = keys[i] = distance
            owner[i] = slot
            dirty[i] = True
        if key > top or (key == top and i < top_index):
            top, top_index = key, i
    return top, top_index, count - low


@numba.njit(cache=True, parallel=True)
def _flat_steps_threaded(points, first, heads, point_state, centres, centres32, selected, t_begin, t_end, best, parts, scratch, counts):
    """Greedy steps ``t_begin .. t_end - 1`` by the flat pass, the points split into parts over threads.

    ``best`` is the current argmax of the keys; returns the next one.  Part
    p is the index range ``parts[p] .. parts[p + 1] - 1``; the parts are in
    index order, so the first part holding the overall maximum holds its
    lowest index.  ``heads`` is ``point_state[0]``, or its first 0 columns
    for the brute-force loop (every point gets its exact distance).
    ``counts[p]`` accumulates the exact distances of part p.
    """
    num_parts = len(parts) - 1
    part_max = np.empty(num_parts, dtype=np.float32)
    part_arg = np.empty(num_parts, dtype=np.int64)
    for t in range(t_begin, t_end):
        _take_centre(points, point_state, centres, centres32, selected, t, best)
        centre = centres[t]
        for p in numba.prange(num_parts):
            top, top_index, exact = _flat_part(points, first, heads, point_state, centre, 1 + t, parts[p], parts[p + 1], scratch)
            part_max[p], part_arg[p] = top, top_index
            counts[p] += exact
        best = part_arg[0]
        for p in range(1, num_parts):
            if part_max[p] > part_max[0]:
                part_max[0], best = part_max[p], part_arg[p]
    return best


@numba.njit(cache=True)
def _flat_steps_serial(points, first, heads, point_state, centres, centres32, selected, t_begin, t_end, best, parts, scratch, counts):
    """:func:`_flat_steps_threaded` in one part, without waking threads (for a small bank)."""
    for t in range(t_begin, t_end):
        _take_centre(points, point_state, centres, centres32, selected, t, best)
        _, best, exact = _flat_part(points, first, heads, point_state, centres[t], 1 + t, 0, len(point_state[1]), scratch)
        counts[0] += exact
    return best


# --------------------------------------------------------------------------
# 5. The pruning walk
# --------------------------------------------------------------------------


@numba.njit(cache=True)
def _dim_major_squared_distances(dims, count, c, out):
    """``out[j] = sum_k (dims[k, j] - c[k])^2`` for ``j < count``, any summation order (bounds only)."""
    for j in range(count):
        out[np.uint64(j)] = 0.0
    for k in range(dims.shape[0]):
        row = dims[k]
        ck = c[k]
        for j in range(count):
            u = np.uint64(j)
            diff = row[u] - ck
            out[u] += diff * diff


@numba.njit(cache=True)
def _select_next_centre(seg_max, seg_arg, num_slots):
    """np.argmax(keys) from the slot summaries: the slot holding it."""
    best_slot = 0
    for s in range(1, num_slots):
        if seg_max[s] > seg_max[best_slot] or (seg_max[s] == seg_max[best_slot] and seg_arg[s] < seg_arg[best_slot]):
            best_slot = s
    return best_slot


@numba.njit(cache=True)
def _copy_rows(rows, source, target, count):
    """Copy rows ``source ..`` to ``target ..`` (forward, so the ranges may overlap when ``target <= source``)."""
    heads, keys, index, alive, row_of = rows
    dim = heads.shape[1]
    flat = heads.reshape(-1)  # rows are contiguous
    for i in range(count * dim):
        flat[np.uint64(target * dim + i)] = flat[np.uint64(source * dim + i)]
    for i in range(count):
        keys[target + i] = keys[source + i]
        index[target + i] = index[source + i]
        alive[target + i] = alive[source + i]
        if alive[target + i]:
            row_of[index[target + i]] = target + i


@numba.njit(cache=True)
def _squeeze_slot(rows, seg_start, seg_size, s):
    """Drop the dead rows of slot s: slide its live rows together, in order."""
    alive = rows[3]
    write = seg_start[s]
    for r in range(seg_start[s], seg_start[s] + seg_size[s]):
        if alive[r]:
            if r != write:
                _copy_rows(rows, r, write, 1)
            write += 1
    seg_size[s] = write - seg_start[s]


@numba.njit(cache=True)
def _refresh_slot(rows, slots, s, slack):
    """Restore slot s after rows were removed (first row live, dead rows not the majority) and its summary."""
    keys, index, alive = rows[1], rows[2], rows[3]
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    while seg_size[s] > 0 and not alive[seg_start[s]]:
        seg_start[s] += 1
        seg_size[s] -= 1
    if seg_size[s] > 2 * seg_live[s]:
        _squeeze_slot(rows, seg_start, seg_size, s)
    if seg_live[s] == 0:
        seg_size[s] = 0
        seg_max[s], seg_arg[s], seg_skip_at[s] = -np.inf, _NOT_A_POINT, -np.inf
        return
    first = seg_start[s]
    seg_max[s], seg_arg[s] = keys[first], index[first]
    if keys[first] <= 0.0:
        seg_skip_at[s] = -np.inf  # no key in it can drop
    elif s == 0 or not seg_prunable[s]:
        seg_skip_at[s] = np.inf  # no usable bound: always walk it in full
    else:
        seg_skip_at[s] = 4.0 * slack * keys[first]


@numba.njit(cache=True)
def _compact_rows(rows, slots, num_slots):
    """Slide the live rows of every slot to the left, in slot order; returns the first free row."""
    seg_start, seg_size, seg_live = slots[0], slots[1], slots[2]
    write = 0
    for s in range(num_slots):
        if seg_size[s] > seg_live[s]:
            _squeeze_slot(rows, seg_start, seg_size, s)
        if seg_start[s] != write:
            _copy_rows(rows, seg_start[s], write, seg_size[s])
            seg_start[s] = write
        write += seg_size[s]
    return write


@numba.njit(cache=True)
def _key_order(keys, points, count, order):
    """``order[:count]``: positions sorting ``points[:count]`` by key descending, then index ascending.

    One sort of int64 composites: keys are squared distances, >= +0, and for
    such floats the bit pattern read as an integer grows with the value; so
    ``(2^31 - 1 - bits) << 32 | index`` sorts as wanted (indices < 2^32).
    """
    gathered = np.empty(count, dtype=np.float32)
    for m in range(count):
        gathered[m] = keys[points[m]]
    bits = gathered.view(np.int32)
    composite = np.empty(count, dtype=np.int64)
    for m in range(count):
        composite[m] = (np.int64(0x7FFFFFFF - bits[m]) << 32) | points[m]
    order[:count] = np.argsort(composite)


@numba.njit(cache=True)
def _file_rows(rows, slots, state, point_state, new_points, count, slack, order):
    """Append the points ``new_points[:count]``, all of one owner whose slot is empty, as that slot.

    They are sorted by key descending, index ascending, and written after
    the last used row (compacting the rows first if they are full).
    """
    heads, keys, index, alive, row_of = rows
    seg_start, seg_size, seg_live, seg_prunable = slots[0], slots[1], slots[2], slots[5]
    point_heads, point_keys, owner, filed_slot = point_state[0], point_state[1], point_state[2], point_state[4]
    if count == 0:
        return
    if state[1] + count > len(keys):
        state[1] = _compact_rows(rows, slots, state[0])
        state[2] += 1
    _key_order(point_keys, new_points, count, order)
    s = owner[new_points[0]]
    write = seg_start[s] = state[1]
    prunable = True
    for m in range(count):
        i = new_points[order[m]]
        heads[write + m] = point_heads[i, : heads.shape[1]]
        key = keys[write + m] = point_keys[i]
        index[write + m], alive[write + m] = i, True
        row_of[i], filed_slot[i] = write + m, s
        prunable = prunable and (key <= 0.0 or _KEY_FLOOR <= key <= _KEY_CEIL)
    seg_size[s] = seg_live[s] = count
    seg_prunable[s] = prunable
    _refresh_slot(rows, slots, s, slack)
    state[1] = write + count


@numba.njit(cache=True)
def _catch_up(rows, slots, state, point_state, num_slots, slack, scratch):
    """File the points the flat pass changed: afterwards the walk's slots hold every point correctly.

    A changed point leaves its row.  If it is not selected, its key was set
    by a centre chosen during the flat steps, whose slot is new and empty:
    the changed points are grouped by owner (a stable counting sort) and
    each group becomes its owner's slot (:func:`_file_rows`).  The first
    call files every point (none is filed yet, all are in slot 0).
    """
    alive = rows[3]
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    _, keys, owner, row_of, filed_slot, dirty = point_state
    changed, grouped, order = scratch
    for s in range(state[0], num_slots):  # the slots of the centres chosen meanwhile, empty
        seg_start[s] = seg_size[s] = seg_live[s] = 0
        seg_max[s], seg_arg[s], seg_skip_at[s] = -np.inf, _NOT_A_POINT, -np.inf
    old_slots = state[0]
    state[0] = num_slots
    group_end = np.zeros(num_slots + 1, dtype=np.int64)
    count = 0
    for i in range(len(keys)):
        if dirty[i]:
            dirty[i] = False
            if row_of[i] >= 0:
                alive[row_of[i]] = False
                seg_live[filed_slot[i]] -= 1
                row_of[i] = -1
            if keys[i] != SELECTED:
                changed[count] = i
                group_end[owner[i] + 1] += 1
                count += 1
    for s in range(old_slots):
        if seg_size[s] > 0 and (seg_live[s] < seg_size[s] or not alive[seg_start[s]]):
            _refresh_slot(rows, slots, s, slack)
    group_end = np.cumsum(group_end)  # group s is grouped[group_end[s] : group_end[s + 1]]
    fill = group_end[:-1].copy()
    for m in range(count):
        s = owner[changed[m]]
        grouped[fill[s]] = changed[m]
        fill[s] += 1
    for s in range(num_slots):
        begin = group_end[s]
        _file_rows(rows, slots, state, point_state, grouped[begin:], group_end[s + 1] - begin, slack, order)


@numba.njit(cache=True)
def _visit_length(keys, start, size, bound, slack):
    """How many leading rows of a cluster the triangle test cannot skip.

    Row x may be skipped when ``bound >= 4 * slack * key(x)``; keys decrease
    along the slot, so those rows form a tail.  A short slot is counted
    without branches, a long one is bisected.
    """
    if size <= 32:
        visit = 0
        for r in range(start, start + size):
            visit += 4.0 * slack * keys[r] > bound
        return visit
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        if bound >= 4.0 * slack * keys[start + mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True)
def _walk(points, rows, slots, to_walk, walk_bound, num_to_walk, centre, slack, out_rows, out_keys, counts):
    """Offer the new centre to the rows of the slots ``to_walk[:num_to_walk]``; returns how many moved.

    Three passes, each over the survivors of the one before: (1) walk each
    slot from its largest key up to the tail that its bound rules out,
    keeping the live rows whose sum over the first 16 coordinates is below
    their key; (2) of those, the rows whose sum over the first 32 still is;
    (3) the exact distance of the rest, after prefetching their points.
    Survivors are written branch-free (always write, advance only if kept).
    The rows whose key drops are returned in ``out_rows[:m]``, with their
    new keys in ``out_keys``.  ``counts`` accumulates rows walked,
    32-coordinate sums and exact distances.
    """
    heads, keys, index, alive = rows[0], rows[1], rows[2], rows[3]
    seg_start, seg_size, seg_skip_at = slots[0], slots[1], slots[6]
    blocks = points.shape[1] // LANES
    head_blocks = heads.shape[1] // LANES
    first_blocks = min(_FIRST_BLOCKS, head_blocks)
    count = walked = 0
    for i in range(num_to_walk):  # 1.
        s = to_walk[i]
        start, visit = seg_start[s], seg_size[s]
        if seg_skip_at[s] != np.inf:  # a cluster with a usable bound: cut its tail
            visit = _visit_length(keys, start, visit, walk_bound[i], slack)
        walked += visit
        for r in range(start, start + visit):
            out_rows[count] = r
            count += alive[r] & (_lane_sum(heads, r, centre, first_blocks) < keys[r])
    sums_32 = count
    if head_blocks > first_blocks:  # 2.
        kept = 0
        for p in range(count):
            r = out_rows[p]
            out_rows[kept] = r
            kept += _lane_sum(heads, r, centre, head_blocks) < keys[r]
        count = kept
    for p in range(count):  # 3.
        _prefetch_row(points, index[out_rows[p]])
    num_moved = 0
    for p in range(count):
        r = out_rows[p]
        distance = _lane_sum(points, index[r], centre, blocks)
        if distance < keys[r]:
            out_rows[num_moved], out_keys[num_moved] = r, distance
            num_moved += 1
    counts[0] += walked
    counts[1] += sums_32
    counts[2] += count
    return num_moved


@numba.njit(cache=True)
def _prune_steps(points, rows, slots, state, point_state, centres, centres32, selected, t_begin, t_end, slack, scratch, counts):
    """Greedy steps ``t_begin .. t_end - 1`` by the pruning walk (the slots must be up to date).

    One step, new centre c:

    1. c = the largest slot maximum, ties to the lowest index: exactly
       ``np.argmax(keys)``; it leaves its slot;
    2. for each cluster s with centre c_s, the bound B = q(c, c_s) is first
       taken over the first 32 coordinates (all clusters at once,
       vectorised; a partial sum is <= the full one), and the cluster is
       skipped when that already reaches seg_skip_at[s] = 4 * slack *
       seg_max[s]; for the others B itself is computed and tested again;
    3. each remaining cluster is walked from its largest key up to the first
       row with B >= 4 * slack * key(x), which rules out that row and every
       later one (:func:`_walk`); points whose key drops move to the new
       cluster of c.

    Why the triangle test is exact.  Write d for true distances and q~ for
    computed float32 squared distances.  If d(c, c_s) >= 2 d(x, c_s), then
    d(x, c) >= d(c, c_s) - d(x, c_s) >= d(x, c_s): c is not closer.
    Rounding: q~ is a sum of n non-negative rounded terms, so
    |q~ - d^2| <= g d^2 with g = (n + 2) u / (1 - (n + 2) u), u = 2^-24, in
    any summation order, as long as nothing under- or overflows.  With
    slack >= ((1 + g) / (1 - g))^3 (we use 1 + 8 (n + 3) u),
    B >= 4 slack key(x) gives d(c, c_s) >= 2 r d(x, c_s) with
    r = (1 + g) / (1 - g), hence d(x, c) >= (2r - 1) d(x, c_s) >= r d(x, c_s)
    and q~(x, c) >= key(x).  Subnormal terms add an absolute error below
    2^-120, negligible against keys >= 2^-64, and keys above 2^100 might come
    from overflow: so a cluster is pruned only if each positive key in it
    lies in [2^-64, 2^100].  The free slot has no centre and is always
    walked.  B only decides *whether* to visit; it is never a key.
    """
    heads, keys, index, alive, row_of = rows
    seg_start, seg_size, seg_live, seg_max, seg_arg, seg_prunable, seg_skip_at = slots
    point_keys, filed_slot = point_state[1], point_state[4]
    bound32, to_walk, walk_bound, out_rows, out_keys, moved, order = scratch
    blocks = points.shape[1] // LANES
    for t in range(t_begin, t_end):
        num_slots = state[0]

        # 1. the worst-covered point becomes the next centre
        centre_slot = _select_next_centre(seg_max, seg_arg, num_slots)
        centre_row = seg_start[centre_slot]  # a slot's first row is its maximum
        i = index[centre_row]
        selected[t] = i
        centres[t, :] = points[i]
        centres32[:, t] = heads[centre_row]
        alive[centre_row] = False
        point_keys[i], row_of[i] = SELECTED, -1
        seg_live[centre_slot] -= 1
        _refresh_slot(rows, slots, centre_slot, slack)
        centre = centres[t]

        # 2. which slots may hold a point closer to c?  B over 32 coordinates first ...
        num_clusters = num_slots - 1
        _dim_major_squared_distances(centres32, num_clusters, centres32[:, t], bound32)
        to_walk[0] = 0
        num_to_walk = seg_skip_at[0] != -np.inf  # the free slot, unless it is empty
        for j in range(num_clusters):  # (branch-free: write always, advance if kept)
            skip_at = seg_skip_at[1 + j]
            to_walk[num_to_walk] = 1 + j
            num_to_walk += (skip_at == np.inf) | (bound32[j] < skip_at)
        # ... then the exact B (a pass of its own, so the CPU overlaps its iterations)
        num_kept = 0
        for k in range(num_to_walk):
            s = to_walk[k]
            bound = _lane_sum(centres, s - 1, centre, blocks) if s > 0 else np.float32(0.0)
            to_walk[num_kept], walk_bound[num_kept] = s, bound
            num_kept += (seg_skip_at[s] == np.inf) | (bound < seg_skip_at[s])

        # 3. walk them; the points that move leave their slots and form the cluster of c
        num_moved = _walk(points, rows, slots, to_walk, walk_bound, num_kept, centre, slack, out_rows, out_keys, counts)
        owner = point_state[2]
        for m in range(num_moved):
            r = out_rows[m]
            i = index[r]
            alive[r] = False
            seg_live[filed_slot[i]] -= 1
            point_keys[i], owner[i], moved[m] = out_keys[m], num_slots, i
        for m in range(num_moved):  # the slots that lost rows (the walk lists each slot's rows together)
            s = filed_slot[moved[m]]
            if m == 0 or s != filed_slot[moved[m - 1]]:
                _refresh_slot(rows, slots, s, slack)
        state[0] = num_slots + 1
        seg_start[num_slots] = seg_size[num_slots] = seg_live[num_slots] = 0
        seg_max[num_slots], seg_arg[num_slots], seg_skip_at[num_slots] = -np.inf, _NOT_A_POINT, -np.inf
        _file_rows(rows, slots, state, point_state, moved, num_moved, slack, order)


# --------------------------------------------------------------------------
# 6. Choosing the way, and the loop
# --------------------------------------------------------------------------


class _Chooser:
    """Which way runs the next steps: the one measured fastest per step, and now and then a trial.

    ``way="flat"``, ``"flat32"``, ``"prune"`` or ``"brute"`` forces one
    (the indices are the same).  ``"auto"`` chooses among ``ways`` (the two
    flat passes and the walk), starting with the first.  Once the current way has a measured cost,
    each other way gets a *trial* of ``_TRIAL_STEPS`` steps, which takes over
    if its seconds per step are below ``MARGIN`` times the current cost.
    After a trial that loses, that way waits until the run has gone on for
    its loss (the time it took, switching included, beyond what the current
    way would have taken) divided by ``TRIAL_SHARE``: losing trials cost at
    most about that share of the run per way, and a way that came close is
    tried again soon.  (Switching to the walk, :func:`_catch_up`, takes a few
    milliseconds at N = 47,040; its first filing of every point is not
    counted.)  A trial comes at once when another way, as last measured,
    would win it: costs drift as the run goes on, and with the load on the
    cores.
    """

    MARGIN = 0.9
    TRIAL_SHARE = 0.02

    def __init__(self, way: str, ways: tuple[str, ...] = ("flat", "flat32", "prune")):
        if way not in WAYS:
            raise ValueError(f"way must be one of {', '.join(WAYS)}, got {way!r}")
        self.forced = None if way == "auto" else way
        self.current = ways[0]
        self.cost = dict.fromkeys(ways, math.inf)  # latest seconds per step
        self.trial_at = dict.fromkeys(ways, 0.0)  # run time from which a way may have a trial
        self.elapsed = 0.0

    def next(self) -> tuple[str, int]:
        """The way to run the next steps, and how many steps."""
        if self.forced is not None:
            return self.forced, _CHUNK_STEPS
        if self.cost[self.current] < math.inf:
            others = [way for way in self.cost if way != self.current]
            cheapest = min(others, key=self.cost.__getitem__)
            if self.MARGIN * self.cost[self.current] > self.cost[cheapest]:  # expected to win
                return cheapest, _TRIAL_STEPS
            due = min(others, key=self.trial_at.__getitem__)
            if self.elapsed >= self.trial_at[due]:
                return due, _TRIAL_STEPS
        return self.current, _CHUNK_STEPS

    def record(self, way: str, steps: int, seconds: float, switch_seconds: float = 0.0) -> None:
        """``steps`` steps took ``seconds``, after ``switch_seconds`` spent switching to ``way``."""
        self.elapsed += seconds + switch_seconds
        per_step = seconds / steps
        if way != self.current and self.forced is None:  # a trial
            if per_step < self.MARGIN * self.cost[self.current]:
                self.current = way
            else:
                loss = seconds + switch_seconds - steps * self.cost[self.current]
                self.trial_at[way] = self.elapsed + loss / self.TRIAL_SHARE
        self.cost[way] = per_step


def _even_parts(n: int) -> np.ndarray:
    """Boundaries of the flat pass's parts: one per numba thread for a large bank, else one."""
    num_parts = numba.get_num_threads() if n >= _PARALLEL_MIN_POINTS else 1
    return np.array([n * p // num_parts for p in range(num_parts + 1)], dtype=np.int64)


def fast_loop(
    points: np.ndarray,
    keys: np.ndarray,
    num_select: int,
    progress_bar=None,
    stats: dict | None = None,
    way: str = "auto",
) -> np.ndarray:
    """Greedy k-center with the indices of :func:`lane_loop` (same inputs and output), fast.

    ``points``: ``(N, d)`` float32, d a multiple of 8, read in place;
    ``keys``: ``(N,)`` float32 starting squared distances.  Returns
    ``(num_select,)`` int64.  ``way``: ``"auto"`` (see
    :class:`_Chooser`), or ``"flat"`` / ``"flat32"`` / ``"prune"`` to force
    one, or ``"brute"``: the flat pass computing every distance, for
    comparisons.  Memory ``O(N * 160)`` floats beyond ``points``: the first 64
    coordinates, the first 32 again, and room for the first 32 of every point
    twice in the walk's rows.  If ``stats`` is a dict it receives
    counts of the steps each way ran and of the work done (compare
    ``rows_walked`` and ``exact_distances`` with ``plain_distances = N *
    num_select``).
    """
    n, padded_dim = points.shape
    points = np.ascontiguousarray(points, dtype=np.float32)
    head_width = min(padded_dim, LANES * _HEAD_BLOCKS)
    capacity = 2 * n
    point_state = (
        np.ascontiguousarray(points[:, : LANES * _FLAT_BLOCKS]),  # heads
        np.array(keys, dtype=np.float32),  # keys (a copy)
        np.zeros(n, dtype=np.int64),  # owner
        np.full(n, -1, dtype=np.int64),  # row_of
        np.zeros(n, dtype=np.int64),  # filed_slot
        np.ones(n, dtype=np.bool_),  # dirty: the walk has filed nothing yet
    )
    rows = (
        np.empty((capacity, head_width), dtype=np.float32),  # heads
        np.empty(capacity, dtype=np.float32),  # keys
        np.empty(capacity, dtype=np.int64),  # index
        np.zeros(capacity, dtype=np.bool_),  # alive
        point_state[3],  # row_of
    )
    num_slots_max = 1 + num_select
    slots = (
        np.zeros(num_slots_max, dtype=np.int64),  # seg_start
        np.zeros(num_slots_max, dtype=np.int64),  # seg_size
        np.zeros(num_slots_max, dtype=np.int64),  # seg_live
        np.full(num_slots_max, -np.inf, dtype=np.float32),  # seg_max
        np.full(num_slots_max, _NOT_A_POINT, dtype=np.int64),  # seg_arg
        np.zeros(num_slots_max, dtype=np.bool_),  # seg_prunable
        np.full(num_slots_max, -np.inf, dtype=np.float64),  # seg_skip_at
    )
    state = np.array([1, 0, 0], dtype=np.int64)  # slots the walk knows, first unused row, compactions
    slack = _pruning_slack(padded_dim)
    parts = _even_parts(n)
    threaded = len(parts) > 2
    firsts = np.ascontiguousarray(points[:, : LANES * _FLAT32_BLOCKS])  # flat32's first test
    chooser = _Chooser(way)
    flat_scratch = np.empty(n, dtype=np.int64)
    flat_counts = np.zeros(len(parts) - 1, dtype=np.int64)
    walk_scratch = (
        np.empty(num_select, dtype=np.float32),  # bound32
        np.empty(num_slots_max, dtype=np.int64),  # to_walk
        np.empty(num_slots_max, dtype=np.float32),  # walk_bound
        np.empty(capacity, dtype=np.int64),  # out_rows
        np.empty(n, dtype=np.float32),  # out_keys
        np.empty(n, dtype=np.int64),  # moved
        np.empty(n, dtype=np.int64),  # order
    )
    walk_counts = np.zeros(3, dtype=np.int64)
    selected = np.empty(num_select, dtype=np.int64)
    centres = np.empty((num_select, padded_dim), dtype=np.float32)
    centres32 = np.zeros((head_width, num_select), dtype=np.float32)

    steps_run = {"flat": 0, "flat32": 0, "prune": 0, "brute": 0}
    previous, best, switches = None, 0, 0
    t = 0
    while t < num_select:
        name, steps = chooser.next()
        end = min(num_select, t + steps)
        start = time.perf_counter()
        switches += previous is not None and name != previous
        first_filing = state[1] == 0  # (the walk files every point once: not a cost of switching)
        if name == "prune" and previous != "prune":  # the walk files what the flat pass changed
            _catch_up(rows, slots, state, point_state, 1 + t, slack, (flat_scratch, walk_scratch[5], walk_scratch[6]))
        elif name != "prune" and previous in (None, "prune"):  # the flat pass starts from the argmax
            best = _argmax(point_state[1])
        switched = time.perf_counter()
        if name != "prune":
            flat_steps = _flat_steps_threaded if threaded else _flat_steps_serial
            heads = point_state[0][:, :0] if name == "brute" else point_state[0]
            first = firsts if name == "flat32" else heads
            best = flat_steps(points, first, heads, point_state, centres, centres32, selected, t, end, best, parts, flat_scratch, flat_counts)
        else:
            _prune_steps(
                points, rows, slots, state, point_state, centres, centres32, selected, t, end, slack, walk_scratch, walk_counts
            )  # fmt: skip
        chooser.record(name, end - t, time.perf_counter() - switched, 0.0 if first_filing else switched - start)
        steps_run[name] += end - t
        if progress_bar is not None:
            progress_bar.update(end - t)
        previous, t = name, end
    if stats is not None:
        stats.update(
            plain_distances=n * num_select,
            exact_distances=int(flat_counts.sum() + walk_counts[2]),
            flat_steps=steps_run["flat"] + steps_run["flat32"] + steps_run["brute"],
            flat32_steps=steps_run["flat32"],
            prune_steps=steps_run["prune"],
            switches=switches,
            rows_walked=int(walk_counts[0]),
            compactions=int(state[2]),
        )
    return selected


def select(
    points: torch.Tensor, start_distances: torch.Tensor, num_select: int, progress_bar=None, *,
    loop: str = "fast", way: str = "auto", stats: dict | None = None,
) -> np.ndarray:  # fmt: skip
    """Greedy k-center under the contract: ``(N, d)`` points, ``(N,)`` start distances -> ``(num_select,)`` int64.

    ``start_distances`` are distances (not squared), any float dtype.
    ``loop``: ``"fast"`` (:func:`fast_loop` with ``way`` and ``stats``;
    on a GPU tensor the torch loop), ``"torch"`` (:func:`torch_lane_loop` on
    ``points.device``) or ``"lane"`` (:func:`lane_loop`); all return the
    same indices.
    """
    points = rotate_to_principal_axes(points)
    keys = (start_distances.double() ** 2).to(torch.float32)
    if loop == "torch" or (loop == "fast" and points.device.type != "cpu"):
        padded = torch.nn.functional.pad(points, (0, (-points.shape[1]) % LANES)).contiguous()
        return torch_lane_loop(padded, keys.to(points.device), num_select, progress_bar)
    padded, keys = pad_to_lanes(points.cpu().numpy()), keys.cpu().numpy()
    if loop == "lane":
        return lane_loop(padded, keys, num_select, progress_bar)
    return fast_loop(padded, keys, num_select, progress_bar, stats, way)
