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
# # 06 deeper · Bank size: what a new ratio costs, and what a bigger bank buys
#
# Continues [06 · Coreset explorer](../06_coreset_explorer.ipynb). Reading for after class: the
# same prepared category as the core notebook, then two measurements behind the explorer.
#
# **Learning goals.** After this notebook you can
#
# 1. say what bringing the explorer up to date for a new ratio costs;
# 2. read what a bigger bank surely buys (a smaller coverage radius) and costs (search time),
#    and count the (defective, good) pairs behind a change of AUROC.

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

from pcnotes import PatchCoreConfig
from pcnotes.app.explorer import ExplorerFigure, prepare, update
from pcnotes.stages import image_auroc

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
# ### Bank size against coverage radius and scoring time
#
# What a bigger bank surely buys and costs: a smaller coverage radius (in the features' own
# space, the scale of the heat maps) and a longer search per test image. The image AUROC is
# listed with the (defective, good) pairs in the wrong order, out of all pairs: one category
# and one seed, so a change of a few pairs is no lesson.

# %%
good = data.labels == 0
num_pairs = int((~good).sum() * good.sum())


def wrong_pairs(scores: np.ndarray) -> float:
    """How many (defective, good) pairs the scores put in the wrong order; a tie counts ½, as in AUROC."""
    defective, normal = scores[~good][:, None], scores[good][None, :]
    return float((defective < normal).sum() + 0.5 * (defective == normal).sum())


print(f"{'ratio':>7}{'bank':>7}{'radius':>8}{'ms/image':>10}{'img AUROC':>11}  wrong pairs of {num_pairs}")
radii = []
for ratio in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0):
    # approximate greedy up to 10 %; the whole bank is the same whichever sampler, so no sampler runs for it
    stats = update(ratio, "approximate_greedy" if ratio < 1 else "random", cache=state)
    assert stats.image_auroc == image_auroc(data.labels, stats.image_scores)
    assert np.isclose(stats.image_auroc, 1 - wrong_pairs(stats.image_scores) / num_pairs)
    radii.append(stats.coverage_radius)
    print(f"{ratio:>7}{stats.bank_size:>7}{stats.coverage_radius:>8.2f}{1000 * stats.scoring_seconds:>10.1f}"
          f"{stats.image_auroc:>11.3f}  {wrong_pairs(stats.image_scores):g}")
assert all(later <= earlier for earlier, later in zip(radii, radii[1:]))  # greedy: the radius never grows

# %% [markdown]
# The radius falls at every step and reaches 0 with the whole bank. Once the bank holds more
# than a few hundred entries, the time per image grows about in proportion to it (the search is
# `784 × M` distances); below that, the search's fixed cost dominates. Whether the ranking improves cannot be read
# from one category: count the wrong pairs in every category, and with other seeds, before
# believing a trend.
