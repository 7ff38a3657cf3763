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
# # 06 · Coreset explorer: what a smaller memory bank costs
#
# **10 minutes** · previous: [05 · Evaluation](05_evaluation.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. say what the coreset ratio trades;
# 2. find where the metrics drop, for greedy and random.

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
# `prepare` extracts one category's features once, with the paper's `mean_mapped` (the 128-d
# default ranks nearly every image right).

# %%
# NBVAL_CHECK_OUTPUT
state = prepare(config=PatchCoreConfig(patch_feature="mean_mapped"), neighbours=64)
data = state.data()
h, w = data.grid
print("categories:", state.categories, "| loaded:", data.name, "| grid:", data.grid)
print("training patches", data.train_features.shape, f"= {data.num_train_images} images × {h} × {w}")
print("test patches    ", data.test_features.shape, f"= {data.num_test} images × {h} × {w}")
print("good/defective test images:", np.bincount(data.labels).tolist())
assert data.train_features.shape == (data.num_train_images * h * w, 1024)
assert data.test_features.shape == (data.num_test * h * w, 1024)

# %% [markdown]
# ## The explorer
#
# Move the **coreset ratio** and the **sampler**, and watch the bank's size, its coverage
# radius, the metrics and a heat map ([how](deeper/06_explorer_internals.ipynb)).

# %% tags=["remove-output"]
explorer = build_explorer(state, ratio=0.01, sampler="approximate_greedy")
explorer

# %% [markdown]
# What a bigger bank does to each kind of image: [deeper/06_bank_size](deeper/06_bank_size.ipynb).

# %% [markdown]
# ### What to try
#
# 1. At 1 %, is random's radius or greedy's larger? Where are the red points?
# 2. Step up from 0.1 %: where do greedy's metrics stop improving, and random's catch up?
# 3. Which patches score above the radius, the white line on the colour bar?
#
# ## A snapshot, without a kernel
#
# From `update`:

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

# %%
figure = ExplorerFigure(dpi=72)
stats = update(0.01, "approximate_greedy", cache=state)  # opens on the defect that stands out most
for name, value in stats_rows(stats):
    print(f"{name:>15}: {value}")
display(figure.draw(stats, state.history(data.name)))

# %% [markdown]
# ## Exercise: predict
#
# Is the approximate greedy coreset for 1 % the first picks of the one for 10 %? Is the random
# 1 % bank inside the random 10 % bank?

# %% [markdown] tags=["solution"]
# Greedy: yes, each pick depends only on the earlier ones, so the explorer runs greedy once
# and slices. Random: no, each size is a new draw.

# %%
# NBVAL_CHECK_OUTPUT
features = data.train_features[:5000]
first = approximate_greedy_coreset(features, 0.01, seed=0)
more = approximate_greedy_coreset(features, 0.1, seed=0)
assert np.array_equal(first, more[: len(first)])
print(f"the {len(first)} greedy picks for 1 % are the first {len(first)} of the {len(more)} for 10 %")
inside = np.isin(random_coreset(features, 0.01, seed=0), random_coreset(features, 0.1, seed=0)).sum()
print(f"{inside} of the {len(first)} random patches for 1 % are in the random bank for 10 %")

# %% [markdown]
# ## Summary
#
# A smaller bank saves memory and time and loses coverage; greedy keeps the radius small. The
# [cheat sheet](../docs/cheatsheet.md) sums up the course.
