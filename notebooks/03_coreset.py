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
# **19 minutes** · previous: [02 · Locally aware patches](02_locally_aware_patches.ipynb) ·
# next: [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. size the memory bank and its cost per test image;
# 2. write the coreset size and greedy k-center (Algorithm 1);
# 3. compare samplers by their coverage radius.
#
# Stage 5: bank `(N, D)` → coreset `(M, D)`.

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
# The memory bank M (eq. 4) holds a feature per grid position of every normal training image,
# and every test patch searches all of it. Most rows are redundant; a **coreset** keeps a few
# that leave no patch far from a kept one. The paper's setting:

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
# Sixteen training images of the first category through the default model: 128-d
# `pooled_concat` features of `mobilenet_v2` (notebook 02).

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
# ## Three ways to keep 10 %
#
# * `random_coreset`: uniform sampling, the baseline;
# * `greedy_coreset`: the paper's Algorithm 1, greedy k-center: keep adding the point farthest
#   from everything chosen so far;
# * `approximate_greedy_coreset`, the default: the same loop from cheaper starting distances.
#
# The paper leaves the first pick open; starting from the largest row norm of the distance
# matrix, or the mean distance to 10 random points, is patchcore-inspection's choice. Both
# project to 128-d first (the paper's ψ); ours are 128-d already.

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
# On 800 real patches your loop picks the library's points (its projection turned off, so that
# both work in one space):

# %%
# NBVAL_CHECK_OUTPUT
small = features[rng.choice(len(features), 800, replace=False)]
ours = greedy_k_center(small, 40)
library = coreset.greedy_coreset(small, 40 / 800, projection_dim=None, loop="plain")
assert np.array_equal(ours, library)
print("same 40 picks as pcnotes.stages.s5_coreset.greedy_coreset:", np.array_equal(ours, library))

# %% [markdown]
# The library never builds the N×N matrix and skips most distances, with the same picks:
# [deeper/03_fast_greedy](deeper/03_fast_greedy.ipynb).
#
# ## What each coreset looks like
#
# Kept points red: random follows the **density**, greedy the **extent**.

# %%
fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.6), sharex=True, sharey=True)
for ax, (name, indices) in zip(axes, selections.items()):
    pca_scatter(ax, features, indices, seed=SEED)
    ax.set_title(f"{name}: {len(indices)} kept")
    ax.get_legend().remove()  # one legend for the three panels, below them
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncols=2, markerscale=3)
fig.tight_layout(rect=(0, 0.1, 1, 1))

# %% [markdown]
# ## The coverage radius
#
# $r(C) = \max_{m \in M} \min_{n \in C} \lVert m - n \rVert_2$: how far the worst-covered
# bank point is from the coreset C. Eq. 5, *minimax facility location*, seeks the smallest r:
# NP-hard, and greedy gets within twice the optimum. In 2-D, a small remote
# cluster plays the rare normal patches:

# %%
toy = np.vstack([rng.normal(size=(380, 2)), rng.normal(loc=(4.5, 4.0), scale=0.3, size=(20, 2))])
toy_ratio = 0.05  # 20 of 400 points
toy_sets = {"random": coreset.random_coreset(toy, toy_ratio, seed=SEED),
            "greedy": coreset.greedy_coreset(toy, toy_ratio, projection_dim=None)}
fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.4), sharex=True, sharey=True)
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
    ax.legend(loc="lower right", fontsize=9)
fig.tight_layout()

# %% [markdown]
# The radius from 1 % to 20 %: [deeper/03_radius_sweep](deeper/03_radius_sweep.ipynb), and live
# in notebook 06.

# %% [markdown]
# ## Summary
#
# * A coreset keeps `max(1, int(N · ratio))` of the bank's N rows.
# * Greedy k-center adds the worst-covered point: a small radius (eq. 5), rare patches kept.
#
# Next: [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb).
