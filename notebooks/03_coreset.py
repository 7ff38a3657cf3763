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
# **15 minutes** · previous: [02 · Locally aware patches](02_locally_aware_patches.ipynb) ·
# next: [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. work out the size of the memory bank, in rows and bytes, and what it costs each test image;
# 2. write the coreset size and the greedy k-center loop, and have them checked;
# 3. say what the coverage radius measures, and compare random, approximate greedy and greedy
#    coresets with it.
#
# Stage 5 of the pipeline: all training patches `(N, D)` → coreset → memory bank `(M, D)`, with
# `M = max(1, int(N · ratio))`.

# %%
# Colab, Binder or any Python without pcnotes: install it first (a no-op where pcnotes is installed).
import importlib
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("pcnotes") is None:
    SOURCE = "git+https://github.com/pcnotes/pcnotes"  # the repository: pcnotes.util.paths.REPOSITORY
    print(f"pcnotes is not installed in this Python: installing it from {SOURCE} ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"pcnotes @ {SOURCE}"], check=True)
    importlib.invalidate_caches()

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.spatial.distance import cdist

from pcnotes import PatchCore, PatchCoreConfig, course, ensure_default_dataset, list_categories, load_split
from pcnotes.app.plots import pca_scatter
from pcnotes.stages import s5_coreset as coreset

SEED = 0
torch.manual_seed(SEED)
rng = np.random.default_rng(SEED)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Why subsample the memory bank?
#
# The memory bank keeps one patch feature for every grid position of every normal training image.
# At test time, each patch of a test image looks for its nearest neighbour in the bank, so both
# the memory and the search time grow with the bank's N rows. Most rows are redundant: a patch of
# plain fabric looks like thousands of others. A **coreset** is a small subset that still leaves
# no training patch far from a kept one.
#
# The paper's setting: `wide_resnet50_2` at 224 px, whose `layer2` has stride 8, so a 28×28 grid,
# and 1024-d patch features (notebook 02), for 100 training images and a 10 % coreset.

# %%
# NBVAL_CHECK_OUTPUT
GRID = 224 // 8  # layer2's grid side at 224 px
PATCHES, DIM = GRID * GRID, 1024
n_rows = 100 * PATCHES
full, kept = (n_rows, DIM), (coreset.coreset_size(n_rows, 0.1), DIM)
print(f"memory bank of 100 images {full} -> {kept} at 10 %")
assert full == (78400, 1024) and kept == (7840, 1024)
print(f"float32: {4 * n_rows * DIM / 2**20:.0f} MiB -> {4 * kept[0] * DIM / 2**20:.1f} MiB")
print(f"one test image against the full bank: {PATCHES} x {n_rows} x {DIM} = "
      f"{PATCHES * n_rows * DIM:.2e} multiply-adds; against the coreset {PATCHES * kept[0] * DIM:.2e}")

# %% [markdown]
# ## Exercise: coreset size
#
# Write `coreset_size(num_points, ratio)`. The reference rounds down, and a coreset keeps at least
# one point.

# %% tags=["solution"]
def coreset_size(num_points: int, ratio: float) -> int:
    """How many of num_points bank rows a coreset keeps: int(num_points * ratio), but at least 1."""
    return max(1, int(num_points * ratio))


# %%
# NBVAL_CHECK_OUTPUT
coreset_size = course.adopt("coreset_size", coreset_size, course.check_coreset_size(coreset_size))

# %% [markdown]
# ## Real patch features
#
# Sixteen training images of the data set's first category, through stages 1–4 with the default
# model (`mobilenet_v2`, shipped ImageNet weights). Its patch feature is the pooled concatenation
# of notebook 02, 128-d.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig()
RATIO = 0.1
CATEGORY = list_categories(root)[0]  # from the folders, so this also runs on MVTec AD
train = load_split(root, CATEGORY, "train", config)
NUM_IMAGES = min(16, len(train))
images = torch.stack([train[i]["image"] for i in range(NUM_IMAGES)])
features, grid = PatchCore(config).extract(images)
assert features.shape == (NUM_IMAGES * 784, 128) and grid == (28, 28)
print(f"{CATEGORY}: images", tuple(images.shape), "-> patch features:", features.shape, features.dtype)

# %% [markdown]
# The full training set of every category of the data set gives these banks, sized by your
# `coreset_size` (or the library's, where its check failed):

# %%
# NBVAL_CHECK_OUTPUT
for category in list_categories(root):
    n_rows = len(load_split(root, category, "train", config)) * grid[0] * grid[1]
    bank, kept = (n_rows, features.shape[1]), (coreset_size(n_rows, RATIO), features.shape[1])
    print(f"{category}: memory bank {bank} -> {kept} at 10 %")

# %% [markdown]
# ## Three ways to keep 10 %
#
# * `random_coreset`: uniform sampling without replacement, the baseline;
# * `greedy_coreset`, greedy k-center: start from the most remote point, then keep adding the
#   point farthest from everything chosen so far;
# * `approximate_greedy_coreset`, PatchCore's default: the same loop, but each point's starting
#   distance is its mean distance to 10 random start points, instead of the norm of its row of the
#   N×N distance matrix, which costs N² distances.
#
# Both greedy samplers first apply a seeded random projection to 128 dimensions, which keeps
# distances roughly the same and, on the paper's 1024-d features, makes each one much cheaper. Our
# features are already 128-d, so here the projection changes nothing.

# %%
# NBVAL_CHECK_OUTPUT
samplers = {
    "random": coreset.random_coreset,
    "approximate greedy": coreset.approximate_greedy_coreset,
    "greedy": coreset.greedy_coreset,
}
selections = {name: sampler(features, RATIO, seed=SEED) for name, sampler in samplers.items()}
for name, indices in selections.items():
    assert indices.shape == (coreset.coreset_size(len(features), RATIO),) and len(set(indices)) == len(indices)
    print(f"{name:18s} keeps {len(indices)} of {len(features)} rows: bank {features[indices].shape}")

# %% [markdown]
# ## Exercise: greedy k-center
#
# Write `greedy_k_center(points, m)`. Keep `min_dist[i]`, the distance from point i to its nearest
# chosen point. Start it at the norm of each row of the N×N distance matrix (`cdist`), as the
# reference's exact sampler does, so the first pick is the most remote point. Then, m times, pick
# the largest `min_dist` and lower `min_dist` with the new point's column.

# %% tags=["solution"]
def greedy_k_center(points: np.ndarray, m: int) -> np.ndarray:
    """Greedy k-center: (N, D) points -> (m,) int indices, in the order they were selected.

    Start: min_dist = the norm of each row of the (N, N) distance matrix. Each step: pick the
    argmax of min_dist (the worst-covered point), then min_dist = min(min_dist, its distances).
    """
    distances = cdist(points, points)  # (N, N), float64: fine for a few hundred points
    min_dist = np.linalg.norm(distances, axis=1)
    selected = []
    for _ in range(m):
        centre = int(np.argmax(min_dist))
        selected.append(centre)
        min_dist = np.minimum(min_dist, distances[:, centre])  # its own entry drops to 0
    return np.array(selected)


# %%
# NBVAL_CHECK_OUTPUT
greedy_k_center = course.adopt("greedy_k_center", greedy_k_center, course.check_greedy_k_center(greedy_k_center))

# %% [markdown]
# On 800 real patches your loop (or the library's, where its check failed) picks the same points as the library's, with its projection
# turned off so that both work in the same space:

# %%
# NBVAL_CHECK_OUTPUT
small = features[rng.choice(len(features), 800, replace=False)]
ours = greedy_k_center(small, 40)
library = coreset.greedy_coreset(small, 40 / 800, projection_dim=None, loop="plain")
assert np.array_equal(ours, library)
print("same 40 picks as pcnotes.stages.s5_coreset.greedy_coreset:", np.array_equal(ours, library))

# %% [markdown]
# The library never builds the N×N matrix (the reference does: 4·N² bytes), and its default loop
# skips most distance computations yet returns the same indices. How, and how much faster:
# [deeper/03_fast_greedy](deeper/03_fast_greedy.ipynb).
#
# ## What each coreset looks like
#
# A 2-D PCA of the bank (grey) with the kept points in red. Random sampling follows the
# **density**: most red points sit where the grey is thickest. Greedy sampling follows the
# **extent**: it reaches the sparse edges first, because they are far from everything chosen.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
for ax, (name, indices) in zip(axes, selections.items()):
    pca_scatter(ax, features, indices, seed=SEED)
    ax.set_title(f"{name}: {len(indices)} points")
fig.tight_layout()

# %% [markdown]
# ## The coverage radius
#
# How well does a coreset C cover the bank? Its **coverage radius** is the distance from the
# worst-covered bank point to its nearest kept point:
#
# $$r(C) = \max_{x \in \text{bank}} \; \min_{c \in C} \lVert x - c \rVert .$$
#
# Discs of radius r around the kept points cover every point, and the worst one lies on a rim.
# Choosing the M points with the smallest radius is the k-center problem. It is NP-hard, but
# greedy selection's radius is at most twice the optimum. Here it is in 2-D, with a small, remote
# cluster standing for rare normal patches such as a seam:

# %%
toy = np.vstack([rng.normal(size=(380, 2)), rng.normal(loc=(4.5, 4.0), scale=0.3, size=(20, 2))])
toy_ratio = 0.05  # 20 of 400 points
toy_sets = {"random": coreset.random_coreset(toy, toy_ratio, seed=SEED),
            "greedy": coreset.greedy_coreset(toy, toy_ratio, projection_dim=None)}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
for ax, (name, indices) in zip(axes, toy_sets.items()):
    radius = coreset.coverage_radius(toy, indices)
    nearest = cdist(toy, toy[indices]).min(axis=1)  # each point's distance to the coreset
    assert np.isclose(radius, nearest.max())
    worst = int(np.argmax(nearest))
    ax.scatter(*toy.T, s=6, c="0.6", label="bank")
    for centre in toy[indices]:
        ax.add_patch(plt.Circle(centre, radius, color="tab:red", alpha=0.08))
    ax.scatter(*toy[indices].T, s=25, c="tab:red", label=f"coreset ({len(indices)} points)")
    ax.scatter(*toy[worst], s=80, marker="x", c="k", label="worst-covered point")
    ax.set_title(f"{name}: coverage radius {radius:.2f}")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()

# %% [markdown]
# Now on the real features: the radius of each sampler for ratios from 1 % to 20 %, on the first
# 8 images' patches.

# %%
# NBVAL_CHECK_OUTPUT
RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2)
sweep_bank = features[: min(8, NUM_IMAGES) * 784]
radius = {name: [coreset.coverage_radius(sweep_bank, sampler(sweep_bank, r, seed=SEED)) for r in RATIOS]
          for name, sampler in samplers.items()}
for name in ("approximate greedy", "greedy"):
    assert all(np.diff(radius[name]) <= 0), f"{name}: radius grew with the ratio"
    assert all(g < r for g, r in zip(radius[name], radius["random"])), f"{name} vs random"
print("bank:", sweep_bank.shape, " coreset sizes:", [coreset.coreset_size(len(sweep_bank), r) for r in RATIOS])

# %%
for name in samplers:
    print(f"{name:18s}", "  ".join(f"{r:6.2f}" for r in radius[name]))
target = radius["greedy"][0]
matches = [r for r, rad in zip(RATIOS, radius["random"]) if rad <= target]
print("smallest ratio at which random reaches greedy's 1 % radius:",
      f"{matches[0]:.0%}, {matches[0] / RATIOS[0]:.0f}x as many points" if matches else "none up to 20 %")

fig, ax = plt.subplots(figsize=(6, 3.8))
for name, marker in zip(samplers, "o^s"):
    ax.plot(RATIOS, radius[name], marker=marker, label=name)
ax.set_xscale("log")
ax.set_xlabel("coreset ratio")
ax.set_ylabel("coverage radius (feature space)")
ax.set_title("largest distance from a bank point to the coreset")
ax.legend()
fig.tight_layout()

# %% [markdown]
# Greedy's radius never grows with the ratio: a larger greedy coreset is the smaller one plus more
# points (notebook 06 checks this). Random sampling improves slowly and unevenly, because its
# radius is set by a few outlying patches, and a random draw keeps each of them with a
# probability equal to the ratio. The last printed line says how many times more points random
# sampling needs to match greedy's 1 % radius. Those outliers are rare *normal* patches: dropped, they
# would find no close neighbour at test time and look like defects. The two greedy variants
# differ only in their starting distances, so their curves nearly coincide.
#
# ## Summary
#
# * The bank holds one row per patch of every training image: 100 images give (78400, 1024), a
#   10 % coreset (7840, 1024), with `M = max(1, int(N · ratio))`.
# * Greedy k-center keeps adding the worst-covered point. It reaches rare patches early, where
#   random sampling follows the density.
# * The coverage radius is the largest distance from a bank point to the coreset. Greedy's is
#   below random's at every ratio, and random sampling needs many more points to match it.
# * Approximate greedy, PatchCore's default, starts from the mean distance to 10 random points
#   instead of the N×N matrix; both greedy samplers work in a 128-d random projection.
#
# Next: [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb).
