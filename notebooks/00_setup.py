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
# # 00 · Setup: the tools, the weights and the data
#
# **6 minutes** · next: [01 · Layer hooks](01_layer_hooks.ipynb)
#
# **Learning goals.** After this notebook you can
#
# 1. say what PatchCore does, and which notebook builds which stage;
# 2. tell which backbone weights are loaded;
# 3. list the categories and defect kinds of your data set.
#
# The course follows PatchCore (Roth et al., CVPR 2022, [arXiv 2106.08265](https://arxiv.org/abs/2106.08265))
# and its reference code, [patchcore-inspection](https://github.com/amazon-science/patchcore-inspection).
# Each notebook says where `pcnotes` departs from them.

# %% [markdown]
# ## PatchCore in three sentences
#
# 1. A frozen ImageNet network describes each small patch of a **normal** image by features
#    from two middle layers and the patch's 3×3 neighbourhood.
# 2. These vectors form a **memory bank**, which a greedy **coreset** thins to a few per cent.
# 3. A test patch's **distance to its nearest neighbour** in the bank is its anomaly score; the
#    largest is the image score, the upsampled grid of them the heat map.
#
# Nothing is trained.
#
# ## The course
#
# | notebook (stage) | you write (fast finishers) |
# | --- | --- |
# | [01 · Layer hooks](01_layer_hooks.ipynb) (1) | predict two shapes |
# | [02 · Locally aware patches](02_locally_aware_patches.ipynb) (2–4) | patchify, align (mean mapper, aggregator) |
# | [03 · Coreset](03_coreset.ipynb) (5) | coreset size, greedy k-center |
# | [04 · Scoring and heat maps](04_scoring_and_heatmaps.ipynb) (6–7) | image score (eq. 7) |
# | [05 · Evaluation](05_evaluation.ipynb) (8) | AUROC (PRO) |
# | [06 · Coreset explorer](06_coreset_explorer.ipynb) | – |
#
# Deep dives sit in `notebooks/deeper/`.

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
# JPEG: photos of textures stay small in the .ipynb
# %config InlineBackend.figure_formats = ["jpeg"]
import platform
from pathlib import Path

import faiss
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

import pcnotes
from pcnotes import (
    display_path,
    ensure_default_dataset,
    list_categories,
    list_defects,
    load_mask,
    load_rgb,
    read_manifest,
)
from pcnotes.stages import MOBILENET_SHA256, MOBILENET_WEIGHTS, load_backbone, sha256sum

torch.manual_seed(0)
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# Versions, and what happens when ImageNet weights cannot be loaded (no silent fallback to
# random weights): [deeper/00_installed_and_weights](deeper/00_installed_and_weights.ipynb).

# %% [markdown]
# ## Which backbone weights are loaded
#
# `pcnotes` ships the ImageNet weights of the default backbone, **`mobilenet_v2`** (the paper's
# `wide_resnet50_2` needs a download). `load_backbone` checks their sha256.

# %%
# NBVAL_CHECK_OUTPUT
backbone, weights = load_backbone("mobilenet_v2")  # weights="imagenet" is the default
assert weights.kind == "imagenet" and Path(weights.source) == MOBILENET_WEIGHTS
print("kind:", weights.kind)
print("file:", Path(weights.source).name)
print("sha256 as pinned in pcnotes.stages.s1_features:", sha256sum(MOBILENET_WEIGHTS) == MOBILENET_SHA256)
print(f"parameters loaded: {sum(p.numel() for p in backbone.features.parameters()):,}")
# The file holds only the convolutional `features`: the classifier head stays random, and
# PatchCore never runs it (notebook 01 stops the forward pass at a middle layer).

# %% [markdown]
# ## The data set
#
# MVTec AD, the paper's benchmark, is not shipped (non-commercial licence); `pcnotes.data.synth`
# draws a small set in its layout from a seed. Set `PCNOTES_DATA` to read MVTec AD instead.

# %%
root = ensure_default_dataset(seed=0)  # $PCNOTES_DATA when it is set
print("data:", display_path(root))
print("drawn by pcnotes.data.synth:", read_manifest(root) is not None)
categories = list_categories(root)
defects = {category: list_defects(root, category) for category in categories}

# %% [markdown]
# `train` holds only good images; `test`
# good ones and a folder per defect kind; `ground_truth` a mask per defective image.

# %%
# NBVAL_CHECK_OUTPUT
def count_images(folder: Path) -> int:
    return len(list(folder.glob("*.png")))


for category in categories:
    train_good = count_images(root / category / "train" / "good")
    test_good = count_images(root / category / "test" / "good")
    kinds = ", ".join(f"{defect} {count_images(root / category / 'test' / defect)}" for defect in defects[category])
    print(f"{category}: train/good {train_good}, test/good {test_good}, defective: {kinds}")

# %% [markdown]
# ### Normal images
#
# PatchCore learns "normal" only from these, and must ignore how they vary.

# %%
n_show = 4
fig, axes = plt.subplots(len(categories), n_show, figsize=(2.2 * n_show, 2.3 * len(categories)),
                         squeeze=False)
for row, category in enumerate(categories):
    paths = sorted((root / category / "train" / "good").glob("*.png"))[:n_show]
    for ax, path in zip(axes[row], paths):
        ax.imshow(load_rgb(path))
        ax.set_title(f"{category}/{path.name}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("train/good: what PatchCore learns as normal")
fig.tight_layout()

# %% [markdown]
# ### Defects and their masks
#
# The first test image of each defect kind, its mask as a red contour. Notebook 04's heat
# maps must find the faint defects too.

# %%
n_cols = max(len(kinds) for kinds in defects.values())
fig, axes = plt.subplots(len(categories), n_cols, figsize=(2.2 * n_cols, 2.3 * len(categories)),
                         squeeze=False)
for ax in axes.flat:
    ax.axis("off")  # also the empty panels of a category with fewer defect kinds
for row, category in enumerate(categories):
    for ax, defect in zip(axes[row], defects[category]):
        path = sorted((root / category / "test" / defect).glob("*.png"))[0]
        mask = np.asarray(load_mask(root / category / "ground_truth" / defect / f"{path.stem}_mask.png")) > 127
        ax.imshow(load_rgb(path))
        ax.contour(mask, levels=[0.5], colors="red", linewidths=1)
        ax.set_title(f"{category}: {defect}\n({100 * mask.mean():.1f} %)", fontsize=9)
fig.suptitle("test/<defect> with the ground-truth mask (red contour, % of pixels)")
fig.tight_layout()

# %% [markdown]
# How these images are drawn: [deeper/00_synthetic_data](deeper/00_synthetic_data.ipynb).
#
# ## Summary
#
# * `mobilenet_v2` loads shipped, checked ImageNet weights.
# * The data is drawn from a seed, or read from `PCNOTES_DATA`.
#
# Next: [01 · Layer hooks](01_layer_hooks.ipynb).
