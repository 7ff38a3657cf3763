# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · The coreset: a small memory bank that still covers everything
#
# **Learning goals.** After this notebook you can
#
# 1. work out how large PatchCore's memory bank gets, in rows and in bytes, and why that matters
#    at test time;
# 2. explain greedy k-center selection in a few lines of numpy, and check your version against
#    `pcnotes.coreset`;
# 3. compare random, approximate greedy and exact greedy coresets on real patch features by their
#    **coverage radius** and their selection time;
# 4. explain why the reference code's exact greedy sampler runs out of memory, and how
#    `pcnotes` avoids that;
# 5. explain why skipping distance computations with the triangle inequality gives *exactly* the
#    same coreset as the plain loop.
#
# Stage 5 of the pipeline (see notebook 00):
#
# ```text
# all training patches (N, 1024)  --coreset, e.g. 10 %-->  memory bank (M, 1024),  M = int(0.1 N)
# ```

# %% [markdown]
# ## Why a coreset?
#
# Notebook 02 turned every 224×224 image into 28×28 = 784 patch features of 1024 numbers each. The
# memory bank holds those vectors for **every** training image. At test time each of a test image's
# 784 patches looks for its nearest neighbour in the bank. Two costs grow with the bank size N:
#
# * **memory**: N × 1024 float32 values, 4 bytes each;
# * **kNN time**: an exact search compares each test patch with all N rows, so one test image
#   costs 784 · N · 1024 multiply-adds.
#
# Most of the bank is redundant: a patch of plain fabric looks like thousands of other patches of
# plain fabric. We want a small subset that still leaves **no** training patch far from a kept
# one. Such a subset is a *coreset*. A rare normal patch (a seam, an unusual knot in the wood)
# must stay covered. If it is dropped, the same kind of patch at test time finds no close
# neighbour and looks like a defect.
#
# We measure "leaves nothing far away" with the **coverage radius**: the largest distance from a
# bank point to its nearest selected point. Choosing the M points with the smallest radius is the
# *k-center problem*. Solving it exactly is NP-hard, but the **greedy** algorithm always adds the
# point that is currently worst covered, and its radius is at most twice the optimum.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.spatial.distance import cdist

from pcnotes import coreset
from pcnotes.data import list_categories
from pcnotes.evaluation import load_split
from pcnotes.model import PatchCore, PatchCoreConfig
from pcnotes.synth import ensure_default_dataset
from pcnotes.viz import pca_scatter

SEED = 0
torch.manual_seed(SEED)
rng = np.random.default_rng(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## The memory-bank arithmetic
#
# First the paper's setting: 100 training images with 28×28 patches of 1024 dimensions, thinned to
# a 10 % coreset. Then the same sums for the training sets of the embedded data set.
# `int(N · ratio)` points are kept, as in the reference code.

# %%
# NBVAL_CHECK_OUTPUT
PATCHES_PER_IMAGE, DIM = 28 * 28, 1024


def bank_shapes(num_images: int, ratio: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Memory bank before and after a coreset: ``(N, D)`` and ``(int(N * ratio), D)``."""
    n = num_images * PATCHES_PER_IMAGE
    return (n, DIM), (int(n * ratio), DIM)


def mebibytes(shape: tuple[int, int]) -> float:
    return shape[0] * shape[1] * 4 / 2**20  # float32


full, kept = bank_shapes(100, 0.1)
assert full == (78400, 1024) and kept == (7840, 1024)
print(f"100 images: {full} -> {kept} at 10%  ({mebibytes(full):.0f} MiB -> {mebibytes(kept):.0f} MiB)")

root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig()  # mobilenet_v2 with the shipped ImageNet weights
categories = list_categories(root)  # from the folders, so this also runs on MVTec AD
for category in categories:
    n_train = len(load_split(root, category, "train", config))
    full, kept = bank_shapes(n_train, 0.1)
    print(f"{category:6s}: {n_train} training images: {full} -> {kept} at 10%  "
          f"({mebibytes(full):.0f} MiB -> {mebibytes(kept):.1f} MiB)")

# %% [markdown]
# At test time, one image of 784 patches against the full bank of 100 training images costs
# 784 × 78 400 × 1024 ≈ 63 billion multiply-adds. The 10 % coreset cuts that by ten, and
# 1 % by a hundred.
#
# ## Real patch features
#
# We work with the patch features of 16 training images of the `fabric` category: 16 × 784 =
# 12 544 vectors. `PatchCore.extract` runs stages 1–4 from notebooks 01 and 02.

# %%
# NBVAL_CHECK_OUTPUT
NUM_IMAGES = 16
CATEGORY = categories[0]  # fabric in the embedded set
train = load_split(root, CATEGORY, "train", config)
images = torch.stack([train[i]["image"] for i in range(NUM_IMAGES)])  # (16, 3, 224, 224)
model = PatchCore(config)
features, grid = model.extract(images)
assert features.shape == (NUM_IMAGES * 784, 1024) and grid == (28, 28)
print("images:", tuple(images.shape))
print("patch features:", features.shape, features.dtype, "grid:", grid)

# %% [markdown]
# ## Three ways to pick 10 %
#
# All three return indices into `features`, `int(0.1 · 12544) = 1254` of them:
#
# * `random_coreset`: uniform sampling without replacement, the baseline;
# * `approximate_greedy_coreset`: PatchCore's default. It projects the features to 128 dimensions
#   with a random linear map, which keeps distances roughly the same while making each one 8×
#   cheaper. Every point then starts with its mean distance to 10 random points, and the greedy
#   loop runs from there;
# * `greedy_coreset`: the "exact" variant of the reference. It uses the same projection, but the
#   first point is the one with the largest row norm of the full distance matrix.

# %%
# NBVAL_CHECK_OUTPUT
RATIO = 0.1
samplers = {
    "random": coreset.random_coreset,
    "approximate greedy": coreset.approximate_greedy_coreset,
    "greedy": coreset.greedy_coreset,
}
selections, seconds = {}, {}
for name, sampler in samplers.items():
    start = time.perf_counter()
    selections[name] = sampler(features, RATIO, seed=SEED)
    seconds[name] = time.perf_counter() - start
    assert selections[name].shape == (int(len(features) * RATIO),)
    assert len(np.unique(selections[name])) == len(selections[name])  # no point twice
    print(f"{name:18s} selected {len(selections[name])} of {len(features)} patches -> "
          f"memory bank {features[selections[name]].shape}")

# %%
for name, s in seconds.items():  # wall-clock: varies from run to run
    print(f"{name:18s} {s:6.2f} s")

# %% [markdown]
# The first greedy call may include numba compiling the fast loop (see the last section). The
# random sampler is instant. Greedy selection is paid **once**, at training time. The kNN search it
# speeds up runs for every test image.
#
# ## The greedy loop, in ten lines
#
# Here is greedy k-center selection in plain numpy. `min_dist[i]` is point i's distance to its
# nearest selected point. Each step selects the point where it is largest (the worst-covered
# point) and then lowers everyone's distance with the new centre's column. For a small case we
# can afford the full N×N distance matrix. Like the reference's exact sampler, we start from each
# row's norm, so the first pick is the most remote point.

# %%
def greedy_k_center(points: np.ndarray, m: int) -> np.ndarray:
    """Greedy k-center: ``(N, D) -> (m,)`` indices, in the order they were selected."""
    distances = cdist(points, points)  # (N, N), float64: fine for a few hundred points
    min_dist = np.linalg.norm(distances, axis=1)  # start: the reference's row norms
    selected = []
    for _ in range(m):
        centre = int(np.argmax(min_dist))  # the worst-covered point
        selected.append(centre)
        min_dist = np.minimum(min_dist, distances[:, centre])  # its own entry drops to 0
    return np.array(selected)


# %% [markdown]
# The library gives the same indices on 800 of our patches. We turn its random projection off
# (`projection_dim=None`) so that both work in the same 1024-d space, and use the
# `method="plain"` loop, which is the short numpy loop in `pcnotes/coreset.py`.

# %%
# NBVAL_CHECK_OUTPUT
small = features[rng.choice(len(features), 800, replace=False)]
ours = greedy_k_center(small, m=40)
library = coreset.greedy_coreset(small, 40 / 800, projection_dim=None, method="plain")
assert np.array_equal(ours, library)
print("first ten picks:", ours[:10].tolist())
print("identical to pcnotes.coreset.greedy_coreset(method='plain'):", np.array_equal(ours, library))

# %% [markdown]
# The library's loop differs from ours in three ways, and none of them changes a choice:
#
# * it never builds the N×N matrix. Each step computes one column, the distances to the new
#   centre;
# * it keeps **squared** distances. `sqrt` is monotone, so the argmax is the same;
# * it sums squares in a fixed order in float32. The fast loop below must reproduce every value
#   bit for bit, so the order has to be pinned down.
#
# ## What each coreset looks like
#
# A 2-D PCA of the bank, with the selected points in red. The grey cloud is a 5000-point sample
# of the bank. Random sampling follows the **density**: most red points sit where the grey is
# thickest. Greedy sampling follows the **extent**: it reaches the sparse edges of the cloud
# early, because those points are far from everything already chosen. Two dimensions out of 1024
# show only a shadow of that.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
for ax, (name, indices) in zip(axes, selections.items()):
    pca_scatter(ax, features, indices, seed=SEED)
    ax.set_title(f"{name}: {len(indices)} points")
fig.tight_layout()

# %% [markdown]
# ## Coverage radius against the ratio
#
# Now sweep the ratio from 1 % to 50 % and measure the coverage radius of each coreset. To keep
# the sweep quick we use the first 8 images (6272 patches). We also measure in the 128-d
# projection that the greedy samplers optimise in: `random_projection` with the same seed is the
# projection they apply themselves. On 128-d input they skip their own projection, so they do
# exactly the same work as on the 1024-d features.

# %%
# NBVAL_CHECK_OUTPUT
RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
sweep_bank = coreset.random_projection(torch.from_numpy(features[: 8 * 784]), 128, seed=SEED).numpy()
assert sweep_bank.shape == (6272, 128)
radius = {name: [] for name in samplers}
sweep_seconds = {name: [] for name in samplers}
for name, sampler in samplers.items():
    for ratio in RATIOS:
        start = time.perf_counter()
        indices = sampler(sweep_bank, ratio, seed=SEED)
        sweep_seconds[name].append(time.perf_counter() - start)
        radius[name].append(coreset.coverage_radius(sweep_bank, indices))
print("bank:", sweep_bank.shape, " sizes:", [int(len(sweep_bank) * r) for r in RATIOS])

# %%
for name in samplers:
    print(f"{name:18s}", "  ".join(f"{r:6.2f}" for r in radius[name]))

# %% [markdown]
# Greedy coresets are **nested**: the coreset of size m is the first m picks of any larger run.
# A larger ratio can therefore never increase their radius. Random subsets are redrawn for each
# ratio, so the random curve is not guaranteed to fall (a larger random subset usually still
# covers better, but nothing promises it). The assertions check both claims on these features.

# %%
for name in ("approximate greedy", "greedy"):
    assert all(np.diff(radius[name]) <= 0), f"{name}: radius grew with the ratio"
    assert all(g < r for g, r in zip(radius[name], radius["random"])), f"{name} vs random"

fig, ax = plt.subplots(figsize=(6, 3.8))
for name, marker in zip(samplers, "o^s"):
    ax.plot(RATIOS, radius[name], marker=marker, label=name)
ax.set_xscale("log")
ax.set_xlabel("coreset ratio")
ax.set_ylabel("coverage radius (128-d projection)")
ax.set_title("largest distance from a bank point to the coreset")
ax.legend()
fig.tight_layout()

# %% [markdown]
# Look at the gap at 1 %. A random 1 % subset leaves some patches far from every kept point, and
# exactly those patches would score as anomalies at test time. Random sampling hardly improves
# as the ratio grows: its radius is set by the few outlying patches, and a random draw keeps each
# of them only with probability equal to the ratio. To match greedy's radius at 1 % (62 points),
# random sampling needs many times more points (exercise 2 finds out how many). The two greedy variants
# are almost indistinguishable: they differ only in where they start, and after a few dozen
# picks the starting point no longer matters.
#
# ## Selection time against the ratio
#
# These are wall-clock times on whatever machine ran this notebook, so they change between runs.
# The greedy loops need one pass over the bank per selected point, so their time grows with the
# ratio. Exact greedy also pays an N² start (the row norms) before the first pick.

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
for name, marker in zip(samplers, "o^s"):
    ax.plot(RATIOS, sweep_seconds[name], marker=marker, label=name)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("coreset ratio")
ax.set_ylabel("seconds (this machine, this run)")
ax.set_title(f"selection time, N = {len(sweep_bank)}")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Where the reference is slow, do better: no N×N matrix
#
# The reference's exact sampler (`GreedyCoresetSampler` in patchcore-inspection) computes the
# full N×N distance matrix before its first pick. That is 4·N² bytes of float32. One user with
# 209 training images (N = 209 · 784 = 163 856 patches) needed 107 GB. `pcnotes` needs only each
# row's norm of that matrix. It adds up squared distances one block of rows at a time
# (`_distance_matrix_row_norms`, blocks of at most 2²² entries = 16 MiB). The greedy loop then
# needs just one distance per point and step. What remains in memory is the projected bank and
# one block.

# %%
# NBVAL_CHECK_OUTPUT
def gigabytes(num_bytes: float) -> float:
    return num_bytes / 1e9


for n in (47_040, 209 * 784):
    reference = 4 * n * n  # the N x N float32 matrix
    streamed = 4 * n * 128 + 4 * 2**22  # projected bank (N, 128) + one block
    print(f"N = {n:7d}: reference N x N matrix {gigabytes(reference):6.1f} GB, "
          f"pcnotes {gigabytes(streamed) * 1000:5.0f} MB")

# %% [markdown]
# At N = 47 040 (60 images) the matrix alone takes 8.9 GB. `pcnotes` needs about 41 MB at the same
# N, and about 100 MB at N = 163 856. The time is still O(N²·128) for the start, but it no longer
# depends on having a machine with 100 GB of RAM.
#
# ## The fast greedy loop: skipping work with the triangle inequality
#
# The plain loop computes a distance from the new centre to **every** point at **every** step:
# N · M distances in total. Most of them change nothing, because the new centre is far from most
# points. `method="fast"` (the default) skips those, and still returns exactly the same indices.
#
# **The argument.** Let x be a point whose nearest centre so far is c_a, at distance
# m(x) = d(x, c_a). A new centre c can lower x's distance only if d(c, x) < m(x). The triangle
# inequality gives
#
# $$d(c, x) \;\ge\; d(c, c_a) - d(x, c_a) \;=\; d(c, c_a) - m(x).$$
#
# So if **d(c, c_a) ≥ 2·m(x)**, then d(c, x) ≥ m(x). The new centre is no closer, and x can be
# skipped without computing d(c, x).
#
# **Whole clusters, and the tails of the others.** The fast loop groups points by their current
# nearest centre and keeps each group sorted by m(x), largest first. If d(c, c_a) ≥ 2·m(x) for
# the first point, it holds for all of them, and the whole cluster is skipped after a **single**
# distance computation, d(c, c_a). Otherwise the loop walks the cluster only until the test
# holds: every point after that has a smaller m(x). Late in the run the clusters are small and
# tight, and the new centre is far from most of them.
#
# **Partial sums.** For the points that are walked, the loop first adds up the squared
# differences of the first 16 coordinates, then of the first 32. A sum of squares only grows as
# terms are added, so if a partial sum already reaches m(x)², the full distance cannot be
# smaller, and x is skipped. This works well because the points are first rotated into their
# principal axes (a rotation changes no distance), which puts most of every distance into the
# first coordinates. Only about 0.5 % of the N · M distances are computed in full.
#
# **Why it is exact.** A skipped point is one whose distance would not have changed. Every
# distance that *is* computed uses the same float32 arithmetic in the same summation order as the
# plain loop. The keys therefore stay bit-identical, and so does every argmax (ties go to the
# lowest index in both). Rounding cannot break the partial-sum rule either: float32 addition of
# non-negative terms never makes a sum smaller. A small safety factor on the "≥ 2·m(x)" test
# covers float32 rounding of the bound; the proof is written out next to `_fast_iterations` in
# `pcnotes/coreset.py`.
#
# Let us check that claim on 3000 patches, for both greedy samplers:

# %%
# NBVAL_CHECK_OUTPUT
subset = features[:3000]
for sampler in (coreset.approximate_greedy_coreset, coreset.greedy_coreset):
    plain = sampler(subset, 0.1, seed=SEED, method="plain")
    fast = sampler(subset, 0.1, seed=SEED, method="fast")
    assert np.array_equal(plain, fast)
    print(f"{sampler.__name__}: {len(fast)} indices, fast == plain: {np.array_equal(plain, fast)}")

# %% [markdown]
# ### How much faster?
#
# We time both loops on our 12 544 real patches at 10 %. This is a live measurement on a machine
# that may be shared, so the ratio varies between runs. nbval does not check it. The fast loop
# is a numba kernel; the plain loop is numpy.

# %%
def seconds_for(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


coreset.approximate_greedy_coreset(features[:500], 0.1)  # compile (or load) the numba kernel first
plain_s = seconds_for(coreset.approximate_greedy_coreset, features, RATIO, seed=SEED, method="plain")
fast_s = seconds_for(coreset.approximate_greedy_coreset, features, RATIO, seed=SEED, method="fast")
print(f"N = {len(features)}, M = {int(len(features) * RATIO)}: plain {plain_s:.2f} s, "
      f"fast {fast_s:.2f} s, speed-up x{plain_s / fast_s:.1f}")

# %% [markdown]
# The saving grows with N: a bank 4× larger gives the plain loop 4× more points to visit at every
# step, while most of them sit in clusters that the fast loop skips. The full benchmark,
# `benchmarks/coreset.py` (run it with `make benchmark`), times the reference-style loop of
# patchcore-inspection against the fast one side by side, on one machine with 2 cores. Its
# numbers are in `benchmarks/README.md`. At N = 47 040 (60 images) the fast loop took 0.34 s
# against 8.6 s, **25× faster**. It was also 25× faster when limited to one thread. At
# N = 150 000 it was about 60× faster (2.4 s against 2.6 minutes). Big steps run on both cores
# when the cores are free and a timing says it pays; the indices are the same either way.
#
# ## Summary
#
# * The memory bank grows as images × 784 rows of 1024 floats. 100 images give (78400, 1024),
#   which is 306 MiB, and every test patch is compared with all of it. A 10 % coreset gives
#   (7840, 1024).
# * Greedy k-center adds the worst-covered point at every step. Its coverage radius never grows
#   as the ratio rises, and it stays far below random sampling's, most of all at small ratios.
#   Those small ratios are where rare normal patches are at risk.
# * The approximate and exact greedy samplers differ only in their start. Both work in a 128-d
#   random projection.
# * The reference's exact sampler materialises an N×N matrix (8.9 GB at N = 47 040, 107 GB at
#   N = 163 856). `pcnotes` streams it in 16 MiB blocks.
# * The fast loop skips whole clusters and the tails of clusters with the triangle inequality,
#   d(c, c_a) ≥ 2·m(x), and most other points with partial sums of squares. It returns exactly
#   the plain loop's indices, 25× faster than the reference-style loop at N = 47 040.
#
# ## Exercises
#
# 1. **Nested coresets.** Check that the 5 % approximate greedy coreset of `features` is exactly
#    the first half of the 10 % one. Is a smaller `random_coreset` always inside a larger one?
# 2. **How much random sampling buys greedy's coverage?** On `sweep_bank`, find the smallest ratio
#    in `RATIOS` at which a random coreset's radius is at most the 1 % greedy radius. Is there one?

# %% [markdown]
# ### Solution 1

# %%
five = coreset.approximate_greedy_coreset(features, 0.05, seed=SEED)
ten = selections["approximate greedy"]
print("greedy 5% == first half of greedy 10%:", np.array_equal(five, ten[: len(five)]))
for small_ratio, large_ratio in zip(RATIOS, RATIOS[1:]):
    inside = np.isin(coreset.random_coreset(sweep_bank, small_ratio, seed=SEED),
                     coreset.random_coreset(sweep_bank, large_ratio, seed=SEED)).all()
    print(f"random {small_ratio:.0%} inside random {large_ratio:.0%} (sweep bank): {inside}")

# %% [markdown]
# The greedy run at 5 % stops where the 10 % run is halfway, so the two agree on every pick.
# For `random_coreset`, whether a smaller draw lies inside a larger one depends on the sizes and
# on how numpy draws samples without replacement. Nothing in the method promises it. Where it
# fails, the radius can even grow with the ratio, as the random curve above may show.
#
# ### Solution 2

# %%
target = radius["approximate greedy"][0]  # greedy radius at 1 %
matches = [r for r, rad in zip(RATIOS, radius["random"]) if rad <= target]
print(f"greedy radius at 1%: {target:.2f}")
print("random radii:", [round(r, 2) for r in radius["random"]])
print("smallest random ratio that matches it:", matches[0] if matches else "none up to 50%")

# %% [markdown]
# Random sampling needs a ratio several times larger for the same radius, if it gets there at all
# below 50 %. Most added random points land in the dense middle of the cloud, while the radius is
# decided by the outliers, which the greedy loop picks first.
