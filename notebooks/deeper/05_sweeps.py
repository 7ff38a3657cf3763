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
# # 05 deeper · Sweeps: backbones, coreset ratios and random coresets
#
# Continues [05 · Evaluation](../05_evaluation.ipynb), after [05_choices](05_choices.ipynb).
# Reading for after class.
#
# **Learning goals.** After this notebook you can
#
# 1. compare weights, patch features and coreset ratios on one category;
# 2. compare a random coreset with the greedy one at a small ratio;
# 3. read an image AUROC difference in units of wrongly ordered pairs.

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
import numpy as np
import torch

from pcnotes import PatchCore, PatchCoreConfig, ensure_default_dataset, list_categories, load_split, stack

SEED = 0
_ = torch.manual_seed(SEED)

# %% [markdown]
# ## The backbone runs once per weights
#
# One category (the last one of the data set), its first 16 training images and its whole test
# set. mobilenet_v2 with the shipped ImageNet weights (the default) and the same architecture
# with seeded random weights, each with both patch features. The ResNets are left out: their
# ImageNet weights are not shipped, and random ones would repeat the random rows.

# %%
# NBVAL_CHECK_OUTPUT
root = ensure_default_dataset(seed=SEED)
config = PatchCoreConfig(seed=SEED)
CATEGORY, NUM_TRAIN, RATIOS = list_categories(root)[-1], 16, (0.01, 0.1)
train = load_split(root, CATEGORY, "train", config)
train_images = torch.stack([train[i]["image"] for i in range(min(NUM_TRAIN, len(train)))])
test = load_split(root, CATEGORY, "test", config)
test_images, test_masks = stack(test)
test_labels = np.asarray(test.labels)

BACKBONES = tuple((weights, patch_feature) for weights in ("imagenet", "random")
                  for patch_feature in ("pooled_concat", "mean_mapped"))
features = {}
with torch.no_grad():
    for weights in ("imagenet", "random"):
        extractor = PatchCore(config, weights=weights).extractor  # the backbone runs once per weights
        train_maps, test_maps = extractor(train_images), extractor(test_images)
        for patch_feature in ("pooled_concat", "mean_mapped"):
            model = PatchCore(config, weights=weights, patch_feature=patch_feature)
            train_features, grid = model.patch_features(train_maps)
            test_features, _ = model.patch_features(test_maps)
            features[weights, patch_feature] = train_features.numpy(), test_features.numpy(), grid
            print(f"mobilenet_v2 ({weights}), {patch_feature}: train {tuple(train_features.shape)}, "
                  f"test {tuple(test_features.shape)}, grid {grid}")


# %%
def evaluate_bank(weights: str, patch_feature: str, ratio: float, sampler: str = "approximate_greedy") -> dict:
    """Coreset, kNN scores, maps and the three metrics of one memory bank, from the features above."""
    train_features, test_features, grid = features[weights, patch_feature]
    model = PatchCore(config, weights=weights, patch_feature=patch_feature, coreset_ratio=ratio, sampler=sampler)
    scores, maps = model.fit_features(train_features, grid).score_features(test_features, grid,
                                                                           size=tuple(test_images.shape[-2:]))
    return {"bank": len(model.memory_bank), **model.metrics(test_labels, scores, test_masks, maps)}


def print_row(name: str, m: dict) -> None:
    print(f"{name:46s} {m['bank']:6d} {m['image_auroc']:11.3f} {m['pixel_auroc']:11.3f} {m['aupro']:7.3f}")


# %% [markdown]
# ## Weights × patch feature × coreset ratio

# %%
table = {(weights, patch_feature, ratio): evaluate_bank(weights, patch_feature, ratio)
         for weights, patch_feature in BACKBONES for ratio in RATIOS}
print(f"{CATEGORY}, {len(train_images)} training images{'':22s} {'bank':>6s} {'image AUROC':>11s} "
      f"{'pixel AUROC':>11s} {'AUPRO':>7s}")
for (weights, patch_feature, ratio), m in table.items():
    print_row(f"{weights} {patch_feature}, coreset {ratio:.0%}", m)

# %% [markdown]
# Read it by rows and by columns:
#
# * **Pretraining.** Compare the ImageNet rows with the random ones at the same ratio. Random
#   filters still respond to edges and colour, so the strong defects are found, the subtle ones
#   less often.
# * **Ratio.** From 10 % to 1 % the bank is ten times smaller and the search ten times cheaper.
#   With ImageNet features the metrics barely move: the greedy coreset keeps the bank's extent
#   (notebook 03). The random features lose more at 1 %.
#
# ## Random against greedy coresets at 1 %
#
# A random sample keeps the common patches and may miss rare normal ones, whose look-alikes then
# score high on good images. Whether that shows depends on how varied the normal texture is:

# %%
for sampler in ("approximate_greedy", "random"):
    print_row(f"imagenet pooled_concat, {sampler} 1 %", evaluate_bank("imagenet", "pooled_concat", 0.01, sampler))

# %% [markdown]
# ## How large is one step of image AUROC?
#
# Read such differences in pairs of images. One wrongly ordered (good, defective) pair costs
# `1 / (good × defective)`. A difference of one or two such steps between two rows is one or
# two pairs of images, not a trend.

# %%
good, defective = int((test_labels == 0).sum()), int((test_labels == 1).sum())
print(f"{CATEGORY}: {good} good × {defective} defective test images, one pair = {1 / (good * defective):.4f} AUROC")

# %% [markdown]
# ## Summary
#
# * Extract features once per configuration; coreset, kNN, maps and metrics reuse them.
# * At 1 % the greedy coreset holds up with ImageNet features; random features lose more.
# * Image AUROC moves in steps of one pair; read small differences as pairs of images.
#
# Back to [05 · Evaluation](../05_evaluation.ipynb), or on to
# [06 · Coreset explorer](../06_coreset_explorer.ipynb).
