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
# # 03 deeper · The coverage radius against the ratio
#
# Continues [03 · Coreset](../03_coreset.ipynb), after the coverage radius. Reading for after class
# (notebook 06's explorer shows the same radius live): the radius of each sampler for ratios
# from 1 % to 20 % on real patch features.
#
# **Learning goals.** After this notebook you can
#
# 1. say why greedy's radius never grows with the ratio;
# 2. say how many times more points random sampling needs to match greedy's radius.

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
# The full training set of every category of the data set gives these banks:

# %%
# NBVAL_CHECK_OUTPUT
for category in list_categories(root):
    n_rows = len(load_split(root, category, "train", config)) * grid[0] * grid[1]
    bank, kept = (n_rows, features.shape[1]), (coreset.coreset_size(n_rows, RATIO), features.shape[1])
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
# ### The radius against the ratio
#
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
print(f"{'radius at ratio':18s}", "  ".join(f"{r:>6.0%}" for r in RATIOS))
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
