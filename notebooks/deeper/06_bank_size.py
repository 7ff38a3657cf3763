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
# # 06 deeper · Bank size: what a new ratio costs, and why a bigger bank can rank worse
#
# Continues [06 · Coreset explorer](../06_coreset_explorer.ipynb). Reading for after class: the
# same prepared category as the core notebook, then two measurements behind the explorer.
#
# **Learning goals.** After this notebook you can
#
# 1. say what bringing the explorer up to date for a new ratio costs;
# 2. read, from one category and one seed, how a bigger bank moves each kind of image's score,
#    and how many of the (defective, good) pairs that changes.

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
import time

import numpy as np
import torch
from IPython.display import display

from pcnotes import PatchCoreConfig
from pcnotes.app.explorer import ExplorerFigure, build_explorer, prepare, stats_rows, update
from pcnotes.stages import approximate_greedy_coreset, image_auroc, random_coreset

torch.manual_seed(0)

# %% [markdown]
# ## Features once, then any ratio
#
# `prepare` extracts the first category's patch features (the others when picked) and the
# tables that make a new ratio quick. We use the paper's `mean_mapped` feature
# ([notebook 02](../02_locally_aware_patches.ipynb)): here the 128-d default ranks almost every
# image right at any ratio, leaving the slider little to show.

# %%
start = time.perf_counter()
state = prepare(config=PatchCoreConfig(patch_feature="mean_mapped"), neighbours=64)
data = state.data()
print(f"{data.name}: features and tables in {time.perf_counter() - start:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
h, w = data.grid
print("categories:", state.categories, "| loaded:", data.name, "| grid:", data.grid)
print("training patches", data.train_features.shape, f"= {data.num_train_images} images × {h} × {w}")
print("test patches    ", data.test_features.shape, f"= {data.num_test} images × {h} × {w}")
print("good/defective test images:", np.bincount(data.labels).tolist())
assert data.train_features.shape == (data.num_train_images * h * w, 1024)
assert data.test_features.shape == (data.num_test * h * w, 1024)

# %%
rows = []
for sampler in ("random", "approximate_greedy"):
    for ratio in (0.1, 0.03, 0.01, 0.003, 0.001):
        stats = update(ratio, sampler, cache=state)
        rows.append((sampler, ratio, stats.bank_size, stats.coverage_radius,
                     stats.image_auroc, stats.pixel_auroc, stats.aupro))
full = update(1.0, "random", cache=state)
rows.append(("(any: the whole bank)", 1.0, full.bank_size, full.coverage_radius,
             full.image_auroc, full.pixel_auroc, full.aupro))
print(f"{'sampler':<22}{'ratio':>7}{'bank':>7}{'radius':>8}{'img AUROC':>11}{'px AUROC':>10}{'AUPRO':>7}")
for sampler, ratio, size, radius, image, pixel, pro in sorted(rows):
    print(f"{sampler:<22}{ratio:>7}{size:>7}{radius:>8.2f}{image:>11.3f}{pixel:>10.3f}{pro:>7.3f}")

# %% [markdown]
# ### What a new ratio costs
#
# The time to bring the numbers and the figure up to date for a ratio not seen yet:

# %%
figure = ExplorerFigure(dpi=72)
numbers, drawn = [], []
for ratio in (0.004, 0.006, 0.008):  # banks not seen yet
    start = time.perf_counter()
    stats = update(ratio, "approximate_greedy", cache=state)
    numbers.append(time.perf_counter() - start)
    figure.draw(stats, state.history(data.name))
    figure.png()
    drawn.append(time.perf_counter() - start)
print(f"a new ratio: {np.median(numbers):.2f} s for the numbers, {np.median(drawn):.2f} s with the figure "
      f"(median of {len(numbers)})")

# %% [markdown]
# ### Why can a bigger bank rank images worse?
#
# In the table, greedy's image AUROC at 1 % beats the whole bank's. A bigger bank brings every
# test patch closer to the bank, so every image score falls. By how much, per kind of image:

# %%
small = update(0.01, "approximate_greedy", cache=state)
good, kinds = data.labels == 0, np.array(data.defects)
assert small.image_auroc == image_auroc(data.labels, small.image_scores)
print(f"image AUROC: {small.image_auroc:.3f} at 1 % (approximate greedy), {full.image_auroc:.3f} at 100 %")
print(f"{'images':<15}{'score at 1 %':>14}{'at 100 %':>10}{'fall':>8}")
fall = {}
for kind in ["good"] + sorted(set(kinds[~good])):
    at_small, at_full = small.image_scores[kinds == kind].mean(), full.image_scores[kinds == kind].mean()
    fall[kind] = (at_small - at_full) / at_small
    print(f"{kind:<15}{at_small:>14.2f}{at_full:>10.2f}{fall[kind]:>8.0%}")
print("falls most:", max(fall, key=fall.get))


def wrong_pairs(scores):
    """The (defective, good) pairs whose defective image does not score higher."""
    return [(d, g) for d in np.flatnonzero(~good) for g in np.flatnonzero(good) if scores[d] <= scores[g]]


for name, result in [("1 %", small), ("100 %", full)]:
    pairs = wrong_pairs(result.image_scores)
    print(f"{name:>6}: {len(pairs)} of {(~good).sum() * good.sum()} pairs in the wrong order; "
          f"defects in them: {', '.join(sorted({kinds[d] for d, _ in pairs})) or 'none'}")
top = int(np.flatnonzero(good)[np.argmax(full.image_scores[good])])
print(f"highest-scoring good image at 100 %: {data.image_labels[top]}, "
      f"{small.image_scores[top]:.2f} at 1 % and {full.image_scores[top]:.2f} at 100 %")

# %% [markdown]
# They do not fall alike. The top good image owes its score to one patch unlike any training
# patch, so no bank brings it down. The defect kind that falls most looks like normal texture:
# the whole bank adds look-alikes, so more of it drops below good images.
